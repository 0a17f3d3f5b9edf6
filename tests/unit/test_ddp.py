"""Two-process DDP on CPU (gloo, launched by torchrun as the train rule does) matches one process.

One process with two loader workers and two micro-batches per step sees exactly the batches that two
DDP ranks with one stream each see (shards split by node = split by worker, augmentation seeded per
image), and DDP averages the two ranks' gradients as accumulation does. So the trained parameters
agree up to float summation order: the stated tolerance is 1e-4 absolute on every parameter.
BatchNorm running statistics differ by design (DDP keeps rank 0's), so buffers are not compared.
"""
import datetime

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from helpers import REPO
from helpers.data import write_digit_shards
from helpers.training import communicate_signalling
from synthscale.classifier.train import create_classifier, run_distributed, train_model

TOL = 1e-4


def test_two_process_ddp_matches_one_process(tmp_path, digits_16):
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


# ------------------------------------------------------------------ the GPU path's process group


def test_a_cuda_run_reduces_cpu_tensors_on_gloo_and_cuda_tensors_on_nccl(monkeypatch, tmp_path):
    """NCCL reduces CUDA tensors only: torchrun ranks of a CUDA run init the group as torch documents
    for mixed tensors, "cpu:gloo,cuda:nccl" (plain "nccl" crashed at the first step on the loop's
    CPU control values). main() is run with the collective and CUDA calls stubbed: no GPU needed."""
    import json

    import synthscale.classifier.train as train

    from helpers.training import stub_cuda_rank

    seen = stub_cuda_rank(monkeypatch, train, "train_model")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"parts": [], "device": "cuda"}))
    assert train.main(str(spec)) == 0
    # a 60-minute collective timeout (a slow rank's first evaluation), NCCL bound to the rank's GPU
    assert seen == {"backend": "cpu:gloo,cuda:nccl", "cuda": "cuda:1", "device": "cuda:1",
                    "timeout": datetime.timedelta(minutes=60), "device_id": torch.device("cuda:1")}
    seen.clear()
    spec.write_text(json.dumps({"parts": [], "device": "cpu"}))
    train.main(str(spec))
    assert seen["backend"] == "gloo" and seen["device"] == "cpu" and "device_id" not in seen
    # torchrun with one rank (WORLD_SIZE 1) still inits the group; a plain process (no torchrun) does not
    seen.clear()
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    train.main(str(spec))
    assert seen["backend"] == "gloo"
    seen.clear()
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    train.main(str(spec))
    assert "backend" not in seen and seen["device"] == "cpu"


def test_a_one_rank_torchrun_run_uses_ddp_and_matches_one_process(tmp_path, digits_16, capfd):
    """run_distributed with one rank (the GPU suite's NCCL check) inits a process group and trains
    under DDP with its collectives (it used to skip both at world size 1, so the check ran no NCCL);
    on CPU the weights are bit-identical to a plain process's: one rank's all-reduce and DDP's
    division by a world size of 1 change nothing."""
    import pandas as pd

    images, labels = digits_16
    shards = write_digit_shards(tmp_path, images[:96], labels[:96], 48)
    recipe = {"arch": "resnet18", "model_kwargs": {"channels": [8, 16, 32, 64]}, "input_size": 16, "epochs": 1,
              "min_steps": 0, "batch_size": 32, "micro_batch_size": 16, "lr": 0.003, "num_workers": 0}
    parts = [{"shards": shards, "limit": None}]
    single = tmp_path / "single"
    train_model(parts, 10, recipe, 5, single / "model.safetensors", single / "log.csv", progress=False)
    assert "DDP:" not in capfd.readouterr().out, "a plain process trains without a process group"
    ddp = tmp_path / "ddp"
    spec = dict(parts=parts, n_classes=10, recipe=recipe, seed=5, model_path=str(ddp / "model.safetensors"),
                log_path=str(ddp / "log.csv"), device="cpu", progress=False, threads=1)
    run_distributed(spec, 1, ddp / "spec.json")
    assert "DDP: 1 rank(s), process group backend gloo" in capfd.readouterr().out
    a, b = load_file(str(single / "model.safetensors")), load_file(str(ddp / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert pd.read_csv(single / "log.csv")["train_loss"].tolist() == pd.read_csv(ddp / "log.csv")["train_loss"].tolist()


# NCCL's reduction types (ncclDataType_t): what a reduced device tensor may hold
NCCL_DTYPES = {torch.int8, torch.uint8, torch.int32, torch.int64, torch.float16, torch.bfloat16,
               torch.float32, torch.float64}


def _rank_main(rank: int, world: int, port: int, out: str, images, labels, recipe: dict) -> None:
    """One gloo rank of a 2-process run, recording what the loop reduces and draws."""
    import json
    import os

    import timm.layers.drop as drop
    from timm.data.mixup import Mixup

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    rec = {"reduced": [], "lam": [], "drop": []}
    all_reduce, params, drop_path = torch.distributed.all_reduce, Mixup._params_per_batch, drop.drop_path

    def record_reduce(t, *a, **k):
        rec["reduced"].append([str(t.device), str(t.dtype)])
        return all_reduce(t, *a, **k)

    def record_lam(self):
        lam, cutmix = params(self)
        rec["lam"].append(float(lam))
        return lam, cutmix

    def record_drop(x, p=0.0, training=False, scale_by_keep=True):
        y = drop_path(x, p, training, scale_by_keep)
        if training and p > 0:
            rec["drop"].append([bool(v) for v in (y.flatten(1).abs().sum(1) == 0)])
        return y

    torch.distributed.all_reduce, Mixup._params_per_batch, drop.drop_path = record_reduce, record_lam, record_drop
    try:
        train_model([{"arrays": (images, labels), "limit": None}], 10, recipe, 7, f"{out}/m.safetensors",
                    f"{out}/log.csv", checkpoint_path=f"{out}/c.pt", progress=False)
    finally:
        torch.distributed.destroy_process_group()
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump(rec, f)


def test_ranks_draw_their_own_mixup_and_drop_path_and_reduce_on_the_model_device(tmp_path):
    """Two gloo ranks with mixup, cutmix and drop-path: each step's mixup lambda and drop-path masks
    differ between the ranks (one seed for all had every rank mix with the same lambda and box), and
    every tensor the loop reduces is a CPU control value (gloo under "cpu:gloo,cuda:nccl") or lives on
    the model's device in one of NCCL's types."""
    import json
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 16, 16, 3), dtype=np.uint8)
    labels = np.arange(64) % 10
    recipe = {"arch": "resnet18", "model_kwargs": {"channels": [8, 16, 32, 64], "drop_path_rate": 0.5},
              "input_size": 16, "epochs": 1, "min_steps": 4, "batch_size": 16, "lr": 0.003,
              "mixup": 0.8, "cutmix": 1.0, "num_workers": 0}
    mp.start_processes(_rank_main, args=(2, port, str(tmp_path), images, labels, recipe), nprocs=2,
                       start_method="spawn")
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert len(r0["lam"]) == len(r1["lam"]) == 4, "one mixup draw per step (micro-batch 8 per rank)"
    assert all(a != b for a, b in zip(r0["lam"], r1["lam"])), (r0["lam"], r1["lam"])
    assert len(r0["drop"]) == len(r1["drop"]) > 0
    assert r0["drop"] != r1["drop"], "the ranks drop the same paths"
    for device, dtype in r0["reduced"] + r1["reduced"]:
        assert device == "cpu" and getattr(torch, dtype.split(".")[1]) in NCCL_DTYPES, (device, dtype)
    assert not (tmp_path / "c.pt").exists() and (tmp_path / "m.safetensors").exists()


def test_the_loop_makes_one_cpu_collective_a_step_and_stops_as_before(tmp_path, monkeypatch):
    """The loop's control values (a rank ran out, the step's images over the ranks, and the previous
    step's stop and save flags) go in one CPU all-reduce a step, as fine-tuning's do; it used to make
    two (the flags in a second one after the step). Counted in a one-rank gloo group in this process
    (the count does not depend on the world size; DDP's gradient buckets go through its C++ reducer,
    not torch.distributed.all_reduce): S steps over E epochs make S + E control collectives (each
    epoch ends with one that finds no batch) and E of the epoch's loss sums. A stop after step 5,
    acted on with the next step's collective, saves after step 5 and resumes to the same weights."""
    import json

    import pytest

    from helpers.data import make_data
    from synthscale.preemption import Preempted

    torch.set_num_threads(1)
    images, labels = make_data(64)
    parts = [{"arrays": (images, labels), "limit": None}]
    recipe = {"arch": "resnet18", "model_kwargs": {"channels": [8, 16, 32, 64]}, "input_size": 16, "epochs": 2,
              "min_steps": 0, "batch_size": 16, "lr": 0.003, "num_workers": 0}  # 4 steps an epoch, 8 in all
    reduced = []
    all_reduce = torch.distributed.all_reduce

    def counted(t, *a, **k):
        reduced.append(t.numel())
        return all_reduce(t, *a, **k)

    monkeypatch.setattr(torch.distributed, "all_reduce", counted)
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    try:
        ref, run = tmp_path / "ref", tmp_path / "run"

        def train(out, **kw):
            return train_model(parts, 10, recipe, 5, out / "m.safetensors", out / "log.csv",
                               checkpoint_path=out / "c.pt", progress=False, **kw)

        assert train(ref)["step"].tolist() == [4, 8]
        assert len(reduced) == (8 + 2) + 2, reduced
        with pytest.raises(Preempted, match="stopped at step 5/8"):
            train(run, stop_after_steps=5)
        ckpt = torch.load(run / "c.pt", weights_only=True)
        assert json.loads(ckpt["state"])["step"] == 5
        train(run)
    finally:
        torch.distributed.destroy_process_group()
    assert (ref / "m.safetensors").read_bytes() == (run / "m.safetensors").read_bytes()

def test_torchrun_ranks_share_the_jobs_threads(monkeypatch, tmp_path):
    """8 ranks in a 64-thread job get 8 threads each (torch threads and OMP_NUM_THREADS of the
    torchrun children), not 64 each on 64 cores."""
    import json
    import subprocess

    launched = {}

    class FakePopen:
        def __init__(self, cmd, env):
            launched.update(cmd=cmd, env=env)

        def wait(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    monkeypatch.setenv("OMP_NUM_THREADS", "64")  # job_setup pins the job's threads in the environment
    run_distributed({"parts": [], "threads": 64}, 8, tmp_path / "spec.json")
    assert launched["env"]["OMP_NUM_THREADS"] == "8" and "--nproc_per_node=8" in launched["cmd"]
    assert json.loads((tmp_path / "spec.json").read_text())["threads"] == 8
    run_distributed({"parts": [], "threads": 3}, 8, tmp_path / "spec.json")
    assert launched["env"]["OMP_NUM_THREADS"] == "1", "at least one thread per rank"


def test_a_stopped_ddp_run_resumes_to_the_same_weights_and_log(tmp_path, digits_16):
    """Two gloo ranks stopped mid-epoch: run_distributed raises Preempted (torchrun itself exits 1
    whatever its ranks' codes), and the rerun reaches the uninterrupted DDP run's weights and log bit
    for bit, the epoch's loss sums over both ranks included (rank 0 saves them)."""
    import pandas as pd
    import pytest

    from synthscale.preemption import Preempted

    images, labels = digits_16
    shards = write_digit_shards(tmp_path, images[:160], labels[:160], 40)
    recipe = {"arch": "resnet18", "model_kwargs": {"channels": [8, 16, 32, 64]}, "input_size": 16, "epochs": 2,
              "min_steps": 0, "batch_size": 32, "micro_batch_size": 16, "lr": 0.003, "pad_crop": 2,
              "shuffle_buffer": 30, "num_workers": 0}

    def spec(out, **kw):
        return dict(parts=[{"shards": shards, "limit": None}], n_classes=10, recipe=recipe, seed=5,
                    model_path=str(out / "m.safetensors"), log_path=str(out / "log.csv"),
                    checkpoint_path=str(out / "c.pt"), device="cpu", progress=False, threads=2, **kw)

    ref, run = tmp_path / "ref", tmp_path / "run"
    run_distributed(spec(ref), 2, ref / "spec.json")
    with pytest.raises(Preempted):
        run_distributed(spec(run, stop_after_steps=3), 2, run / "spec.json")  # 5 steps per epoch
    assert (run / "c.pt").exists() and not (run / "m.safetensors").exists()
    run_distributed(spec(run), 2, run / "spec.json")
    assert (ref / "m.safetensors").read_bytes() == (run / "m.safetensors").read_bytes()
    pd.testing.assert_frame_equal(pd.read_csv(ref / "log.csv").drop(columns="seconds"),
                                  pd.read_csv(run / "log.csv").drop(columns="seconds"), check_exact=True)


DDP_JOB = """
import sys
from synthscale.classifier.train import run_distributed
from synthscale.preemption import Preempted
try:
    run_distributed(json.loads(sys.argv[1]), 2, sys.argv[2])
except Preempted as err:
    print("PREEMPTED", err, flush=True)
    sys.exit(75)
print("DONE", flush=True)
"""


def test_sigterm_to_a_ddp_job_checkpoints_and_exits_75(tmp_path, digits_16):
    """SIGTERM to every process of a 2-rank job (the launching process, torchrun, the ranks and their
    loader workers), as SLURM sends it: the ranks stop together after a step, rank 0 saves, and the
    launcher reports Preempted (exit 75) although torchrun itself exits 1 on a signal."""
    import json
    import os
    import re
    import signal
    import subprocess
    import sys

    images, labels = digits_16
    shards = write_digit_shards(tmp_path, images[:640], labels[:640], 40)  # 16 shards: 8 per rank
    recipe = {"arch": "resnet18", "model_kwargs": {"channels": [8, 16, 32, 64]}, "input_size": 16, "epochs": 2,
              "min_steps": 0, "batch_size": 16, "lr": 0.003, "num_workers": 1}  # 40 steps per epoch
    out = tmp_path / "job"
    spec = dict(parts=[{"shards": shards, "limit": None}], n_classes=10, recipe=recipe, seed=5,
                model_path=str(out / "m.safetensors"), log_path=str(out / "log.csv"),
                checkpoint_path=str(out / "c.pt"), device="cpu", progress=True, threads=2)
    proc = subprocess.Popen([sys.executable, "-c", "import json\n" + DDP_JOB, json.dumps(spec), str(out / "spec.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, start_new_session=True)
    rc, stdout, stderr, step = communicate_signalling(proc, 3, lambda: os.killpg(proc.pid, signal.SIGTERM))
    assert step is not None, stderr[-3000:]
    assert rc == 75, f"{rc}\n{stdout}\n{stderr[-3000:]}"
    m = re.search(r"stopped at step (\d+)/80", stderr + stdout)
    assert m and 0 < int(m.group(1)) < 80, stdout
    assert (out / "c.pt").exists() and not (out / "m.safetensors").exists()
    assert "DataLoader worker" not in stderr


def test_every_rank_waits_for_rank_0s_final_save(tmp_path, digits_16, monkeypatch):
    """Rank 0 alone writes the weights; the other ranks wait for it (a barrier) before they return,
    so no rank leaves (and tears the process group down, or lets the launcher see the job end) while
    the file is being written. Rank 0's save is slowed down (helpers.slow_write_rank): each rank
    checks, when train_model returns, that the weights are there."""
    import json
    import os

    from synthscale.distributed import run_torchrun

    images, labels = digits_16
    shards = write_digit_shards(tmp_path, images[:64], labels[:64], 16)
    recipe = {"arch": "resnet18", "model_kwargs": {"channels": [8, 16, 32, 64]}, "input_size": 16, "epochs": 1,
              "min_steps": 0, "batch_size": 32, "micro_batch_size": 16, "lr": 0.003, "num_workers": 0}
    out = tmp_path / "ddp"
    spec = dict(parts=[{"shards": shards, "limit": None}], n_classes=10, recipe=recipe, seed=5,
                model_path=str(out / "model.safetensors"), log_path=str(out / "log.csv"), device="cpu",
                progress=False, threads=1)
    records = tmp_path / "records"
    records.mkdir()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("SLOW_WRITE", "classifier")
    monkeypatch.setenv("SLOW_WRITE_RECORDS", str(records))
    run_torchrun("helpers.slow_write_rank", spec, 2, out / "spec.json")
    seen = [json.loads((records / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert seen == [{"output_exists": True}] * 2, seen


def test_every_rank_waits_for_rank_0s_stop_checkpoint(tmp_path, digits_16, monkeypatch):
    """On a stop, rank 0 writes the checkpoint; the other ranks wait for it before they raise Preempted
    (and exit 75), so the launcher does not see a rank leave and tear the job down mid-save."""
    import json
    import os

    from synthscale.distributed import run_torchrun
    from synthscale.preemption import Preempted

    images, labels = digits_16
    shards = write_digit_shards(tmp_path, images[:64], labels[:64], 16)
    recipe = {"arch": "resnet18", "model_kwargs": {"channels": [8, 16, 32, 64]}, "input_size": 16, "epochs": 1,
              "min_steps": 0, "batch_size": 16, "lr": 0.003, "num_workers": 0}
    out = tmp_path / "ddp"
    spec = dict(parts=[{"shards": shards, "limit": None}], n_classes=10, recipe=recipe, seed=5,
                model_path=str(out / "model.safetensors"), log_path=str(out / "log.csv"), device="cpu",
                progress=False, threads=1, checkpoint_path=str(out / "checkpoint.pt"), stop_after_steps=1)
    records = tmp_path / "records"
    records.mkdir()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("SLOW_WRITE", "classifier-stop")
    monkeypatch.setenv("SLOW_WRITE_RECORDS", str(records))
    with pytest.raises(Preempted):
        run_torchrun("helpers.slow_write_rank", spec, 2, out / "spec.json")
    seen = [json.loads((records / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert seen == [{"output_exists": True}] * 2, seen
