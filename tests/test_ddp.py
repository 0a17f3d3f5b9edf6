"""Two-process DDP on CPU (gloo, launched by torchrun as the train rule does) matches one process.

One process with two loader workers and two micro-batches per step sees exactly the batches that two
DDP ranks with one stream each see (shards split by node = split by worker, augmentation seeded per
image), and DDP averages the two ranks' gradients as accumulation does. So the trained parameters
agree up to float summation order: the stated tolerance is 1e-4 absolute on every parameter.
BatchNorm running statistics differ by design (DDP keeps rank 0's), so buffers are not compared.
"""
import numpy as np
import torch
from safetensors.torch import load_file

from synthscale.train import create_classifier, run_distributed, train_model

TOL = 1e-4


def test_two_process_ddp_matches_one_process(tmp_path, digits_16):
    from test_train import write_digit_shards

    images, labels = digits_16
    shards = write_digit_shards(tmp_path, images[:160], labels[:160], 40)  # 4 shards: 2 per rank
    recipe = {
        "arch": "resnet18", "model_kwargs": {"channels": [8, 16, 32, 64]}, "input_size": 16,
        "epochs": 2, "min_steps": 0, "batch_size": 32, "micro_batch_size": 16, "lr": 0.003,
        "pad_crop": 2, "shuffle_buffer": 30,
    }
    parts = [{"shards": shards, "limit": None}]
    single = tmp_path / "single"
    log1 = train_model(parts, 10, {**recipe, "num_workers": 2}, 5, single / "model.safetensors",
                       single / "log.csv", progress=False)
    ddp = tmp_path / "ddp"
    spec = dict(parts=parts, n_classes=10, recipe={**recipe, "num_workers": 0}, seed=5,
                model_path=str(ddp / "model.safetensors"), log_path=str(ddp / "log.csv"),
                checkpoint_path=str(ddp / "ckpt.pt"), device="cpu", progress=False, threads=1)
    run_distributed(spec, 2, ddp / "spec.json")

    import pandas as pd

    log2 = pd.read_csv(ddp / "log.csv")
    assert log1["step"].tolist() == log2["step"].tolist() == [5, 10]
    a, b = load_file(str(single / "model.safetensors")), load_file(str(ddp / "model.safetensors"))
    params = {k for k, _ in create_classifier("resnet18", 10, recipe["model_kwargs"]).named_parameters()}
    torch.manual_seed(5)  # the initial weights of both runs
    init = create_classifier("resnet18", 10, recipe["model_kwargs"]).state_dict()
    moved = max(float((a[k] - init[k]).abs().max()) for k in params)
    assert moved > 100 * TOL, "training moved the weights"
    diff = max(float((a[k] - b[k]).abs().max()) for k in params)
    assert diff < TOL, f"DDP and single-process parameters differ by {diff}"
    assert np.allclose(log1["train_loss"], log2["train_loss"], atol=1e-4)
    assert not (ddp / "ckpt.pt").exists()
