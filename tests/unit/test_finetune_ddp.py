"""Generator fine-tuning on two gloo ranks (torchrun, as the finetune_generator rule launches it with
resources.finetune.gpu > 1), on CPU with a tiny random-weight Stable Diffusion.

What holds, and is checked here: the ranks read disjoint halves of each epoch that together cover the
split; they hold the same weights after every step; rank 0 alone writes; the folder loads; and the
two-rank run equals one process trained on the same global batches (rank 0's images, then rank 1's,
each with its rank's noise and timesteps) up to float summation order: DDP's averaged gradient is the
gradient of the mean loss over the union. A stopped two-rank run resumes to the uninterrupted run's
weights bit for bit, and one torchrun rank trains bit for bit as one plain process does.
"""
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import StableDiffusionPipeline

import synthscale.generation.finetune as ft
from synthscale.generation.folders import read_meta
from helpers import REPO
from helpers.data import make_data, write_digit_shards
from helpers.ft_rank import digest
from helpers.tiny_pipelines import build_sd
from helpers.training import safetensors_parts
from synthscale.distributed import run_torchrun
from synthscale.preemption import Preempted
from synthscale.study.config import load_schema

torch.set_num_threads(1)

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
PROMPTS = [[[n] for n in NAMES], [[f"a photo of the digit {n}"] for n in NAMES]]
N_IMAGES, SHARD, STEPS, BATCH = 48, 12, 9, 8  # 4 shards, 2 a rank: 6 steps an epoch, so 9 cross one
WEIGHTS = {"full": "unet/diffusion_pytorch_model.safetensors", "lora": "pytorch_lora_weights.safetensors"}


def recipe(mode: str) -> dict:
    props = load_schema()["properties"]["generators"]["items"]["properties"]["finetune"]["properties"]
    return {k: v["default"] for k, v in props.items() if "default" in v} | dict(
        mode=mode, steps=STEPS, batch_size=BATCH, lr=1e-3, lora_rank=4, shuffle_buffer=8, uncond_prob=0.2,
        ema_decay=0.9 if mode == "full" else None,
    )


def assert_same_safetensors(a, b) -> None:
    """The same tensors, bit for bit, and the same metadata. peft's adapter config lists its target
    modules from a set, so two processes (two hash seeds) may write them in another order."""
    def canonical(x):
        if isinstance(x, str) and x[:1] in "{[":
            return canonical(json.loads(x))
        if isinstance(x, dict):
            return {k: canonical(v) for k, v in x.items()}
        if isinstance(x, list):
            return sorted((canonical(v) for v in x), key=json.dumps)
        return x

    (ha, da), (hb, db) = safetensors_parts(a), safetensors_parts(b)
    assert canonical(ha.pop("__metadata__", {})) == canonical(hb.pop("__metadata__", {}))
    assert ha == hb and da == db, "the tensors differ"


@pytest.fixture(scope="module")
def ft_data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ftddp")
    images, labels = make_data(N_IMAGES)  # random images: every one tells apart from the others
    shards = write_digit_shards(tmp / "real", images, labels, SHARD)
    return {"tmp": tmp, "images": images, "shards": shards, "sd": str(build_sd(tmp / "sd", text_layers=1))}


def spec(ft_data, mode: str, out, **kw) -> dict:
    """finetune_generator's keyword arguments, and `threads` for run_torchrun: the job's (one a rank)."""
    return {"base": ft_data["sd"], "shards": ft_data["shards"], "class_prompts": PROMPTS, "recipe": recipe(mode),
            "seed": 3, "out_dir": str(out), "checkpoint_path": str(out.with_suffix(".ckpt.pt")), "progress": False,
            "threads": 2, **kw}


@pytest.fixture(scope="module", params=["full", "lora"])
def ddp_run(request, ft_data):
    """Two ranks through run_torchrun, each recording its batches, weights and writes (helpers.ft_rank)."""
    mode = request.param
    root = ft_data["tmp"] / f"ddp-{mode}"
    records = root / "records"
    records.mkdir(parents=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]))
        mp.setenv("FT_RANK_RECORDS", str(records))
        run_torchrun("helpers.ft_rank", spec(ft_data, mode, root / "out"), 2, root / "spec.json")
    rec = [json.loads((records / f"rank{r}.json").read_text()) for r in (0, 1)]
    return {"mode": mode, "root": root, "out": root / "out", "rec": rec}


def test_the_ranks_read_disjoint_halves_of_each_epoch_that_cover_the_split(ft_data, ddp_run):
    r0, r1 = (r["batches"] for r in ddp_run["rec"])
    per_epoch = N_IMAGES // BATCH
    assert len(r0) == len(r1) == STEPS and all(len(b) == BATCH // 2 for b in r0 + r1), "batch_size / 2 a rank"
    every = {digest(ft.to_pixels(im, 16)) for im in ft_data["images"]}
    for epoch in (slice(0, per_epoch), slice(per_epoch, STEPS)):
        a, b = {d for x in r0[epoch] for d in x}, {d for x in r1[epoch] for d in x}
        assert not a & b, "the ranks trained on the same image in one epoch"
        assert a | b <= every
    assert {d for x in r0[:per_epoch] + r1[:per_epoch] for d in x} == every, "epoch 1 covers the split"


def test_the_ranks_draw_their_own_noise_and_timesteps(ddp_run):
    n0, n1 = (r["noise"] for r in ddp_run["rec"])
    assert len(n0) == len(n1) == STEPS
    assert all(a[0] != b[0] and a[1] != b[1] for a, b in zip(n0, n1)), "two ranks drew the same noise or timesteps"


def test_the_ranks_hold_the_same_weights_after_every_step(ddp_run):
    w0, w1 = (r["weights"] for r in ddp_run["rec"])
    assert len(w0) == STEPS and len(set(w0)) == STEPS, "the weights move at every step"
    assert w0 == w1, "the ranks' weights parted"


def test_the_loop_reduces_cpu_control_values_and_the_loss_in_nccl_types(ddp_run):
    """Under "cpu:gloo,cuda:nccl" a CPU tensor goes to gloo and a device tensor to NCCL, which takes
    only its own types: the loop reduces float64 control values (epoch end, stop, save) and the
    float32 losses. The host does not wait on the device every step: the losses are reduced (and
    read) once per LOSS_SYNC_EVERY steps and at the end, and the control values in one collective a
    batch, the stop and save flags riding with the next batch's check (it used to take two a step)."""
    import math

    for r in ddp_run["rec"]:
        assert {dtype for _, dtype in r["reduced"]} == {"torch.float64", "torch.float32"}
        losses = [d for _, d in r["reduced"] if d == "torch.float32"]
        assert len(losses) == math.ceil(STEPS / ft.LOSS_SYNC_EVERY), "the losses are read in chunks"
        control = [d for _, d in r["reduced"] if d == "torch.float64"]
        # one a batch (9 steps), plus the check that found the first epoch (6 steps) over
        assert len(control) == STEPS + 1, "one control collective a step"


def test_a_cuda_rank_inits_gloo_for_cpu_tensors_and_nccl_for_its_gpu(monkeypatch, tmp_path):
    """`python -m synthscale.generation.finetune SPEC` as torchrun rank 1 of a CUDA run: the process
    group pairs gloo and NCCL, NCCL is bound to GPU 1, and the fine-tuning runs there. Stubbed: no GPU."""
    import datetime

    from helpers.training import stub_cuda_rank

    seen = stub_cuda_rank(monkeypatch, ft, "finetune_generator")
    (tmp_path / "spec.json").write_text(json.dumps({"device": "cuda"}))
    assert ft.main(str(tmp_path / "spec.json")) == 0
    assert seen == {"backend": "cpu:gloo,cuda:nccl", "cuda": "cuda:1", "device": "cuda:1",
                    "timeout": datetime.timedelta(minutes=60), "device_id": torch.device("cuda:1")}


def test_rank_0_alone_writes_and_its_folder_loads(ft_data, ddp_run):
    root, out = str(ddp_run["root"]), ddp_run["out"]
    w0, w1 = ([p for p in r["writes"] if p.startswith(root) and "records" not in p] for r in ddp_run["rec"])
    assert w1 == [], f"rank 1 wrote {w1[:3]}"
    assert str(out) in w0, "rank 0 renamed the finished folder into place"
    meta = read_meta(out)
    assert meta["steps"] == STEPS and meta["lora"] == (ddp_run["mode"] == "lora")
    assert len(pd.read_csv(out / ft.LOG)) == STEPS
    if ddp_run["mode"] == "full":
        pipe = StableDiffusionPipeline.from_pretrained(out, use_safetensors=True)
    else:
        pipe = StableDiffusionPipeline.from_pretrained(ft_data["sd"], use_safetensors=True)
        pipe.load_lora_weights(out)
    pipe.set_progress_bar_config(disable=True)
    img = pipe(["three"], num_inference_steps=2, guidance_scale=2.0, output_type="np",
               generator=torch.Generator().manual_seed(0)).images
    assert img.shape == (1, 16, 16, 3) and np.isfinite(img).all()
    assert not (ddp_run["out"].with_suffix(".ckpt.pt")).exists(), "the checkpoint is gone once the folder is written"


def test_two_ranks_equal_one_process_trained_on_the_same_global_batches(ft_data, ddp_run, monkeypatch, tmp_path):
    """One process, batch_size 8, fed step by step rank 0's four images then rank 1's (from
    epoch_loader(rank=r, world=2)) and rank 0's noise and timesteps then rank 1's (step_noise), reaches
    the two-rank weights and losses: DDP averaged the ranks' gradients."""
    from safetensors.torch import load_file

    loader, noise = ft.epoch_loader, ft.step_noise

    def union_loader(shards, prompts, r, seed, epoch, size, mode, rank=0, world=1):
        halves = [loader(shards, prompts, r, seed, epoch, size, mode, k, 2) for k in (0, 1)]
        for (x0, t0), (x1, t1) in zip(*halves):
            yield torch.cat([x0, x1]), list(t0) + list(t1)

    def union_noise(seed, step, rank, shape, timesteps, latents):
        half = (shape[0] // 2, *shape[1:])
        draws = [noise(seed, step, k, half, timesteps, latents) for k in (0, 1)]
        return tuple(None if a is None else torch.cat([a, b]) for a, b in zip(*draws))

    monkeypatch.setattr(ft, "epoch_loader", union_loader)
    monkeypatch.setattr(ft, "step_noise", union_noise)
    one = tmp_path / "one"
    log = ft.finetune_generator(**{k: v for k, v in spec(ft_data, ddp_run["mode"], one).items() if k != "threads"})
    a, b = load_file(one / WEIGHTS[ddp_run["mode"]]), load_file(ddp_run["out"] / WEIGHTS[ddp_run["mode"]])
    assert a.keys() == b.keys()
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    if ddp_run["mode"] == "full":
        base = load_file(os.path.join(ft_data["sd"], WEIGHTS["full"]))
        moved = max(float((a[k] - base[k]).abs().max()) for k in a)
    else:
        moved = min(float(a[k].abs().max()) for k in a if "lora.up" in k)  # lora_B (up) starts at zero
    assert moved > 1e-3 and diff < 1e-5, (moved, diff)
    ddp_log = pd.read_csv(ddp_run["out"] / ft.LOG)
    np.testing.assert_allclose(ddp_log["loss"], log["loss"], rtol=1e-5)


@pytest.mark.parametrize("ddp_run", ["full"], indirect=True)
def test_a_stopped_two_rank_run_resumes_to_the_uninterrupted_weights(ft_data, ddp_run, tmp_path):
    """Stopped after step 7 (inside the second epoch), the two ranks save one checkpoint (rank 0) and
    run_torchrun raises Preempted; the rerun reaches the uninterrupted run's weights, EMA included, and
    its log, bit for bit."""
    out = tmp_path / "out"
    with pytest.raises(Preempted):
        ft.run_distributed(spec(ft_data, "full", out, stop_after_steps=7), 2, tmp_path / "spec.json")
    assert out.with_suffix(".ckpt.pt").exists() and not out.exists()
    ft.run_distributed(spec(ft_data, "full", out), 2, tmp_path / "spec.json")
    assert not out.with_suffix(".ckpt.pt").exists()
    assert_same_safetensors(out / WEIGHTS["full"], ddp_run["out"] / WEIGHTS["full"])
    pd.testing.assert_frame_equal(pd.read_csv(out / ft.LOG).drop(columns="seconds"),
                                  pd.read_csv(ddp_run["out"] / ft.LOG).drop(columns="seconds"), check_exact=True)


def test_every_rank_waits_for_rank_0s_final_write(ft_data, tmp_path, monkeypatch):
    """Rank 0 alone writes the output folder; the other ranks wait for it (a barrier) before they
    return, so none leaves while it is written. Rank 0's write is slowed down
    (helpers.slow_write_rank): each rank checks, when finetune_generator returns, that it is there."""
    records = tmp_path / "records"
    records.mkdir()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("SLOW_WRITE", "finetune")
    monkeypatch.setenv("SLOW_WRITE_RECORDS", str(records))
    job = spec(ft_data, "lora", tmp_path / "out")
    job["recipe"] = {**job["recipe"], "steps": 2}
    run_torchrun("helpers.slow_write_rank", job, 2, tmp_path / "spec.json")
    seen = [json.loads((records / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert seen == [{"output_exists": True}] * 2, seen


def test_one_torchrun_rank_fine_tunes_bit_for_bit_as_one_process(ft_data, tmp_path, capfd, one_thread):
    """At world size 1 the DDP path (a process group, DDP, the collectives, rank 0's seeds) changes
    nothing: LoRA weights and losses equal a plain process's bit for bit (one thread each)."""
    plain = tmp_path / "plain"
    ft.finetune_generator(**{k: v for k, v in spec(ft_data, "lora", plain).items() if k != "threads"})
    assert "DDP:" not in capfd.readouterr().out, "a plain process fine-tunes without a process group"
    one = tmp_path / "one"
    ft.run_distributed(spec(ft_data, "lora", one, threads=1), 1, tmp_path / "spec.json")
    assert "DDP: 1 rank(s), process group backend gloo" in capfd.readouterr().out
    assert_same_safetensors(one / WEIGHTS["lora"], plain / WEIGHTS["lora"])
    assert pd.read_csv(one / ft.LOG)["loss"].tolist() == pd.read_csv(plain / ft.LOG)["loss"].tolist()


def test_a_global_batch_that_the_ranks_cannot_share_is_an_error(ft_data, tmp_path, monkeypatch):
    import synthscale.generation.finetune as mod

    monkeypatch.setattr(mod, "rank_world", lambda: (0, 3))
    with pytest.raises(ValueError, match="finetune.batch_size 8 is not a multiple of the 3 ranks"):
        mod.finetune_generator(**{k: v for k, v in spec(ft_data, "lora", tmp_path / "o").items() if k != "threads"})


def test_a_resume_under_another_world_size_is_refused_naming_the_key(ft_data, tmp_path, monkeypatch):
    """Each rank reads every world-th shard of the epoch's order through its own shuffle buffer, and a
    resume skips the batches it trained on: under another number of ranks it would skip other images,
    whatever the loader workers (checked here on epoch_loader: no world size keeps another's order).
    A checkpoint records the world size; a resume claiming 2 ranks (rank_world patched: the check runs
    before any collective) of a checkpoint that one process wrote stops, naming resources.finetune.gpu,
    and leaves the checkpoint; in one process again it resumes to the uninterrupted weights."""
    def rest(world, workers):  # what epoch 0 holds after each rank's batch of the first step
        r = {**recipe("lora"), "num_workers": workers}
        return sorted(digest(im) for k in range(world)
                      for b, (x, _) in enumerate(ft.epoch_loader(ft_data["shards"], PROMPTS, r, 3, 0, 16, "RGB", k, world))
                      if b >= 1 for im in x)

    for workers in (0, 2):  # a resume skips one batch a rank: the rest under 2 ranks is not that under 1
        assert len(rest(1, workers)) == len(rest(2, workers)) == N_IMAGES - BATCH
        assert rest(1, workers) != rest(2, workers)

    job = {k: v for k, v in spec(ft_data, "lora", tmp_path / "out").items() if k != "threads"}
    ft.finetune_generator(**{**job, "out_dir": str(tmp_path / "straight"), "checkpoint_path": None})
    with pytest.raises(Preempted):
        ft.finetune_generator(**job, stop_after_steps=7)
    with monkeypatch.context() as mp:
        mp.setattr(ft, "rank_world", lambda: (0, 2))
        with pytest.raises(ValueError, match=r"config key resources\.finetune\.gpu: the checkpoint .*out\.ckpt\.pt was "
                                             r"written by this run with 1 rank\(s\), and it now gets 2 .* back to 1 to "
                                             r"resume, or delete the checkpoint"):
            ft.finetune_generator(**job)
    assert (tmp_path / "out.ckpt.pt").exists() and not (tmp_path / "out").exists()
    ft.finetune_generator(**job)
    assert_same_safetensors(tmp_path / "out" / WEIGHTS["lora"], tmp_path / "straight" / WEIGHTS["lora"])


def test_the_config_check_asks_for_a_batch_the_gpus_can_share():
    from synthscale.study.config import ConfigError, check_config

    cfg = {"dataset": {"name": "d", "kind": "digits"}, "guidance": [1.0], "strategies": ["classname"],
           "n_images": [10], "generators": [{"name": "tiny", "kind": "trained"},
                                            {"name": "ft", "kind": "finetuned", "base": "tiny",
                                             "finetune": {"batch_size": 32}}]}
    assert check_config({**cfg, "resources": {"finetune": {"gpu": 4}}})["resources"]["finetune"]["gpu"] == 4
    key = r"config key generators.ft.finetune.batch_size: 32 .* resources.finetune.gpu \(3\)"
    with pytest.raises(ConfigError, match=key):
        check_config({**cfg, "resources": {"finetune": {"gpu": 3}}})


DDP_JOB = """
import json, sys
from synthscale.generation.finetune import run_distributed
from synthscale.preemption import PREEMPTED_EXIT, Preempted
try:
    run_distributed(json.loads(sys.argv[1]), 2, sys.argv[2])
except Preempted as err:
    print("PREEMPTED", err, flush=True)
    sys.exit(PREEMPTED_EXIT)
print("DONE", flush=True)
"""


def test_sigterm_to_a_two_rank_job_with_loader_workers_saves_and_exits_75(ft_data, tmp_path):
    """SIGTERM to every process of a 2-rank fine-tuning job with a loader worker a rank (the launching
    process, torchrun, the ranks and their workers), as SLURM sends it: the workers ignore it, the
    ranks stop after the same step, rank 0 saves, and the job exits 75 although torchrun itself exits 1
    on a signal."""
    import re
    import signal
    import subprocess
    import sys

    from helpers.training import communicate_signalling

    images, labels = make_data(2 * N_IMAGES)
    shards = write_digit_shards(tmp_path / "real", images, labels, SHARD)  # 8 shards: 12 steps an epoch
    out = tmp_path / "job" / "out"
    job = spec({**ft_data, "shards": shards}, "lora", out, progress=True)
    job["recipe"] = {**job["recipe"], "steps": 120, "num_workers": 1}
    proc = subprocess.Popen([sys.executable, "-c", DDP_JOB, json.dumps(job), str(tmp_path / "job" / "spec.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, start_new_session=True)
    # once the fine-tuning bar (not a loading bar) shows step 3
    rc, stdout, stderr, step = communicate_signalling(proc, 3, lambda: os.killpg(proc.pid, signal.SIGTERM),
                                                      bar=b"fine-tune")
    assert step is not None, stderr[-3000:]
    assert rc == 75, f"{rc}\n{stdout}\n{stderr[-3000:]}"
    m = re.search(r"stopped at step (\d+)/120", stdout + stderr)
    assert m and 0 < int(m.group(1)) < 120, stdout
    assert out.with_suffix(".ckpt.pt").exists() and not out.exists()
    assert "DataLoader worker" not in stderr
