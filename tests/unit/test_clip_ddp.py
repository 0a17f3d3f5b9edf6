"""CLIP training on two gloo ranks, as a train_clip job with resources.clip.gpu: 2 runs it: train_clip
starts `launch_command`'s torchrun (--standalone, two ranks, `--` before the entry's arguments) through
`launch`, and each rank runs the real open_clip_train. The one stand-in is the rank's entry
(helpers.clip_cpu_rank): open_clip_train asks DDP for `device_ids=[device]`, which DDP refuses for a CPU
model, so the entry drops them on CPU and then runs synthscale.clip.train's own `main`. The ranks' crop
augmentation draws apart (rank 0 as one process): checked in one process with the rank stubbed."""
import math
import os
import re

import torch

from helpers import REPO
from helpers.data import clip_run_paths, write_digit_shards
from synthscale.clip import train as C
from synthscale.clip.pairs import clip_parts, read_clip_pairs, write_clip_pairs
from synthscale.clip.schedule import clip_loaders
from synthscale.data.real import digits_classes
from synthscale.study.config import load_config

torch.set_num_threads(1)

N_PAIRS, BATCH, EPOCHS = 70, 16, 2  # 3 steps an epoch on 2 ranks (5 on one)


def test_two_gloo_ranks_train_the_default_tiny_clip_through_the_jobs_launch(tmp_path, monkeypatch, capfd, digits_16):
    """Both ranks train (open_clip logs world size 2 on each), a step takes BATCH pairs on each rank (the
    optimizer steps ceil(N / (BATCH x 2)) times an epoch, as `clip_steps_per_epoch` counts), the run ends
    with the final epoch's checkpoint, and the model saved from it loads and embeds."""
    images, labels = digits_16
    real = write_digit_shards(tmp_path / "real", images[:N_PAIRS], labels[:N_PAIRS], 1000)
    base = C.clip_recipe(load_config(REPO / "config.yaml")["clip"])
    assert base["model"] == "synthscale-tiny-clip"
    r = {**base, "epochs": EPOCHS, "batch_size": BATCH, "log_every_n_steps": 1}
    # sized for the run's 2 loaders (one a rank), as rule clip_pairs writes them
    pairs = write_clip_pairs(tmp_path / "pairs", clip_parts("real", N_PAIRS, real, [], 0), digits_classes(), r, 0,
                             clip_loaders(r, 2))
    assert len(read_clip_pairs(pairs)[0]) == 2

    monkeypatch.setattr(C, "ENTRY", "helpers.clip_cpu_rank")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]))
    read, final = C.read_open_clip_checkpoint, {}

    def read_final(path):  # the checkpoint train_clip saves the model from (the work folder goes after)
        final["path"] = path
        final["ckpt"] = torch.load(path, map_location="cpu", weights_only=True)
        return read(path)

    monkeypatch.setattr(C, "read_open_clip_checkpoint", read_final)
    model_path = tmp_path / "m" / "model.safetensors"
    info = C.train_clip(pairs, r, 0, model_path, gpus=2, **clip_run_paths(model_path.parent))
    err = capfd.readouterr().err  # the ranks' output, relayed by `launch`

    for rank in (0, 1):
        assert f"Process (global: {rank}, local {rank}), total 2." in err, err[-3000:]
    steps = math.ceil(N_PAIRS / (BATCH * 2))
    assert steps == 3 and info["steps_per_epoch"] == steps and info["epochs"] == EPOCHS
    for epoch in range(EPOCHS):  # rank 0 logs every step; each step counts the pairs of both ranks
        seen = re.findall(rf"Train Epoch: {epoch} \[\s*(\d+)/(\d+) ", err)
        assert [int(a) for a, _ in seen] == [BATCH * 2 * (k + 1) for k in range(steps)], seen
    ckpt = final["ckpt"]
    assert final["path"].name == f"epoch_{EPOCHS}.pt" and ckpt["epoch"] == EPOCHS
    assert {int(s["step"]) for s in ckpt["optimizer"]["state"].values()} == {EPOCHS * steps}
    assert next(iter(ckpt["state_dict"])).startswith("module.")  # the DDP-wrapped model's weights

    train_log = (model_path.parent / "train.log").read_text()  # rank 0's open_clip log, kept
    assert "total 2." in train_log and f"Train Epoch: {EPOCHS - 1}" in train_log
    assert not (model_path.parent / "work").exists()
    model, preprocess, tokenizer = C.load_clip(model_path)
    saved = {k[len("module."):]: v for k, v in ckpt["state_dict"].items()}
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        text = model.encode_text(tokenizer(["a photo of the digit zero", "a photo of the digit one"]))
        image = model.encode_image(torch.zeros(1, 3, 16, 16))
    assert text.shape == (2, 64) and image.shape == (1, 64) and torch.isfinite(text).all()


def test_each_rank_crops_with_its_own_draws_and_rank_0_as_one_process(monkeypatch):
    """With clip.workers: 0, augmentation (open_clip's random crops) draws from each rank's torch RNG, which
    the seeded shuffle reseeds from (seed, epoch) at an epoch's start. A rank other than 0 mixes its rank
    in, so two ranks do not crop their k-th images alike; rank 0 draws as one process does."""
    import synthscale.distributed as dist

    monkeypatch.setattr(C._Epoch, "current", None)  # epoch 0 (no open_clip loader in this process)

    def crop_draws(rank):
        if rank is not None:
            monkeypatch.setattr(dist, "rank_world", lambda: (rank, 2))
        assert list(C.SeededShuffle(3, bufsize=4, initial=2)(iter(range(6)))) != []
        return torch.rand(4)

    one, rank0, rank1 = crop_draws(None), crop_draws(0), crop_draws(1)
    assert torch.equal(one, rank0) and not torch.equal(rank0, rank1)
    assert torch.equal(crop_draws(1), rank1)  # a rank's draws repeat: resumed epochs crop alike
