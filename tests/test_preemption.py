"""Preemption and time limits: SLURM sends SIGTERM before it kills a job at its time limit.

Training saves a checkpoint on SIGTERM and exits; the rerun resumes from it and reaches bit-identical
final weights (CPU, pinned threads). Generation resumes at shard granularity: a killed shard leaves
nothing that looks finished, and a rerun builds only the missing shards.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from synthscale.train import Preempted, train_classifier

REPO = Path(__file__).resolve().parents[1]

RECIPE = {
    "arch": "resnet18",
    "model_kwargs": {"channels": [16, 32, 64, 128]},
    "epochs": 2,
    "min_steps": 12,
    "batch_size": 16,
    "lr": 0.01,
    "weight_decay": 0.01,
    "label_smoothing": 0.1,
    "pad_crop": 2,
}
N_CLASSES = 10


def make_data(n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 16, 16, 3), dtype=np.uint8)
    labels = np.arange(n) % N_CLASSES
    return images, labels


@pytest.fixture
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"tensor {k} differs"
    assert a.read_bytes() == b.read_bytes()


def assert_same_log(a: Path, b: Path, columns=("epoch", "step", "lr")) -> None:
    la, lb = pd.read_csv(a), pd.read_csv(b)
    pd.testing.assert_frame_equal(la[list(columns)], lb[list(columns)], check_exact=True)


def reference_run(tmp: Path, recipe: dict, n: int) -> tuple[Path, Path]:
    images, labels = make_data(n)
    model, log = tmp / "ref" / "model.safetensors", tmp / "ref" / "log.csv"
    train_classifier(
        images, labels, N_CLASSES, recipe, seed=3, model_path=model, log_path=log, progress=False
    )
    return model, log


def test_stop_and_resume_gives_identical_weights(tmp_path, one_thread):
    """In process: stop after a few steps (as a signal would), then resume to the same weights."""
    ref_model, ref_log = reference_run(tmp_path, RECIPE, 64)
    images, labels = make_data(64)
    model, log, ckpt = (
        tmp_path / "run" / "model.safetensors",
        tmp_path / "run" / "log.csv",
        tmp_path / "run" / "ckpt.pt",
    )
    kwargs = dict(seed=3, model_path=model, log_path=log, checkpoint_path=ckpt, progress=False)

    # stop mid-epoch (4 steps per epoch here), then again in a later epoch: two resumes
    with pytest.raises(Preempted, match="stopped at step 5/"):
        train_classifier(images, labels, N_CLASSES, RECIPE, stop_after_steps=5, **kwargs)
    assert ckpt.exists() and not model.exists() and not log.exists()
    with pytest.raises(Preempted, match="stopped at step 9/"):
        train_classifier(images, labels, N_CLASSES, RECIPE, stop_after_steps=9, **kwargs)
    assert not model.exists()
    train_classifier(images, labels, N_CLASSES, RECIPE, **kwargs)

    assert not ckpt.exists(), "the checkpoint is removed once the model is final"
    assert_same_weights(ref_model, model)
    assert_same_log(ref_log, log)


TRAIN_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from test_preemption import make_data, N_CLASSES
    from synthscale.train import Preempted, train_classifier
    recipe, out = json.loads(sys.argv[1]), sys.argv[2]
    images, labels = make_data({n})
    try:
        train_classifier(images, labels, N_CLASSES, recipe, seed=3, model_path=out + "/model.safetensors",
                         log_path=out + "/log.csv", checkpoint_path=out + "/ckpt.pt", progress=True)
    except Preempted as err:
        print("PREEMPTED", err, flush=True)
        sys.exit(75)
    print("DONE", flush=True)
    """)


def run_training(script: str, recipe: dict, out: Path, sigterm_after_step: int | None = None):
    """Run the training script; optionally SIGTERM it once its progress bar passes a step."""
    import json

    proc = subprocess.Popen(
        [sys.executable, "-c", script, json.dumps(recipe), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    err_chunks: list[bytes] = []
    signalled = threading.Event()

    def read_stderr():
        buf = b""
        while chunk := proc.stderr.read1(4096):
            err_chunks.append(chunk)
            buf = (buf + chunk)[-4096:]
            if sigterm_after_step is not None and not signalled.is_set():
                steps = [int(m) for m in re.findall(rb"\| *(\d+)/\d+ ", buf)]
                if steps and max(steps) >= sigterm_after_step:
                    proc.send_signal(signal.SIGTERM)
                    signalled.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    out_text = proc.stdout.read().decode()
    proc.wait(timeout=600)
    reader.join(timeout=10)
    return proc.returncode, out_text, b"".join(err_chunks).decode(errors="replace"), signalled.is_set()


def test_sigterm_saves_checkpoint_and_rerun_resumes(tmp_path, one_thread):
    """A real SIGTERM to a training process: it checkpoints and exits; the rerun resumes bit-identically."""
    recipe = {**RECIPE, "epochs": 25, "min_steps": 0}  # 4 steps per epoch: 100 steps, a few seconds
    ref_model, ref_log = reference_run(tmp_path, recipe, 64)
    out = tmp_path / "job"
    out.mkdir()
    script = TRAIN_SCRIPT.format(tests=str(Path(__file__).parent), n=64)

    rc, stdout, stderr, signalled = run_training(script, recipe, out, sigterm_after_step=3)
    assert signalled, f"training never showed progress:\n{stderr[-2000:]}"
    assert rc == 75, f"expected a clean preempted exit, got {rc}:\n{stdout}\n{stderr[-2000:]}"
    m = re.search(r"stopped at step (\d+)/(\d+)", stdout)
    assert m and 0 < int(m.group(1)) < int(m.group(2)), stdout
    assert (out / "ckpt.pt").exists()
    assert not (out / "model.safetensors").exists() and not (out / "log.csv").exists()
    assert not list(out.glob(".tmp-*")), "no temporary files are left behind"

    rc, stdout, stderr, _ = run_training(script, recipe, out)
    assert rc == 0 and "DONE" in stdout, stderr[-2000:]
    # the rerun started from the checkpoint, not from step 0
    assert re.search(rf"\b{m.group(1)}/{m.group(2)}\b", stderr), "rerun did not resume from the checkpoint"
    assert not (out / "ckpt.pt").exists()
    assert_same_weights(ref_model, out / "model.safetensors")
    assert_same_log(ref_log, out / "log.csv")


def test_resume_keeps_epoch_metrics(tmp_path, one_thread):
    ref_model, ref_log = reference_run(tmp_path, RECIPE, 64)
    images, labels = make_data(64)
    run = tmp_path / "run"
    kwargs = dict(
        seed=3,
        model_path=run / "m.safetensors",
        log_path=run / "log.csv",
        checkpoint_path=run / "c.pt",
        progress=False,
    )
    with pytest.raises(Preempted):
        train_classifier(images, labels, N_CLASSES, RECIPE, stop_after_steps=5, **kwargs)
    train_classifier(images, labels, N_CLASSES, RECIPE, **kwargs)
    assert_same_log(ref_log, run / "log.csv", columns=("epoch", "step", "lr", "train_loss", "train_acc"))


def test_resume_from_shards_with_a_loader_worker(tmp_path, one_thread):
    """Streaming from shards through one worker process: stop mid-epoch, resume, same weights."""
    from synthscale.shards import write_shard
    from synthscale.train import train_model

    images, labels = make_data(72)
    shards = []
    for k in range(3):
        recs = [{"key": f"{i:08d}", "label": int(labels[i])} for i in range(24 * k, 24 * k + 24)]
        shards.append(str(tmp_path / f"shard-{k:06d}.tar"))
        write_shard(shards[-1], list(images[24 * k : 24 * k + 24]), recs)
    parts = [{"shards": shards, "limit": 60}]
    recipe = {**RECIPE, "num_workers": 1, "input_size": 16, "shuffle_buffer": 20}
    ref = tmp_path / "ref"
    train_model(parts, N_CLASSES, recipe, 3, ref / "m.safetensors", ref / "log.csv", progress=False)
    run = tmp_path / "run"
    kwargs = dict(model_path=run / "m.safetensors", log_path=run / "log.csv", checkpoint_path=run / "c.pt", progress=False)
    with pytest.raises(Preempted, match="stopped at step 6/"):  # 4 steps per epoch: mid-epoch 2
        train_model(parts, N_CLASSES, recipe, 3, stop_after_steps=6, **kwargs)
    train_model(parts, N_CLASSES, recipe, 3, **kwargs)
    assert_same_weights(ref / "m.safetensors", run / "m.safetensors")
    assert_same_log(ref / "log.csv", run / "log.csv", columns=("epoch", "step", "lr", "train_loss", "train_acc"))


# ---------------------------------------------------------------- generation: shard granularity

KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from synthscale.shards import write_shard

    class DiesHalfway(list):
        def __iter__(self):
            for i, item in enumerate(list.__iter__(self)):
                if i == len(self) // 2:
                    os.kill(os.getpid(), signal.SIGKILL)
                yield item

    images = DiesHalfway(np.zeros((8, 16, 16, 1), np.uint8))
    records = [{"key": f"{i:06d}", "label": i % 10} for i in range(8)]
    write_shard(sys.argv[1], images, records)
    """)


def test_killed_shard_leaves_nothing_finished_looking(tmp_path):
    target = tmp_path / "synthetic" / "shard-000001.tar"
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target)], cwd=REPO)
    assert proc.returncode == -signal.SIGKILL
    assert not target.exists(), "a killed shard job must not leave the shard's name behind"
    leftovers = list(target.parent.glob(".tmp-shard-000001.tar-*"))
    assert leftovers, "the partial write lives under a temporary name"
