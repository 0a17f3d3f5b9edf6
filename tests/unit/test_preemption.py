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
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import REPO
from helpers.data import N_CLASSES, make_data, write_digit_shards
from helpers.training import RECIPE, assert_same_weights, communicate_signalling
from synthscale.classifier.train import train_classifier
from synthscale.preemption import Preempted


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


def test_atomic_writes_reach_the_disk_before_the_rename(tmp_path, monkeypatch):
    """The temporary file is fsynced before it is renamed onto the target (else a node crash can
    leave a finished-looking checkpoint with lost data), and the folder after the rename."""
    import synthscale.io as sio

    events = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                   fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(a))), replace(a, b)))
    target = tmp_path / "ckpt.pt"
    with sio.atomic_path(target) as tmp:
        tmp.write_bytes(b"weights")
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"]
    assert events[0][1] == events[1][1] == str(tmp) and events[2][1] == str(tmp_path)
    assert target.read_bytes() == b"weights"


def test_training_removes_partial_checkpoints_a_killed_save_left(tmp_path, one_thread):
    """A job killed mid-save leaves `.tmp-ckpt.pt-*` (model + optimizer sized); the next start deletes it."""
    images, labels = make_data(32)
    ckpt = tmp_path / "ckpt.pt"
    stale = tmp_path / ".tmp-ckpt.pt-abc123"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"partial")
    other = tmp_path / ".tmp-model.safetensors-x"  # another output's temporary file is not this run's
    other.write_bytes(b"x")
    train_classifier(images, labels, N_CLASSES, {**RECIPE, "epochs": 1, "min_steps": 0}, seed=3,
                     model_path=tmp_path / "m.safetensors", log_path=tmp_path / "log.csv",
                     checkpoint_path=ckpt, progress=False)
    assert not stale.exists() and other.exists()


TRAIN_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from helpers.data import make_data, N_CLASSES
    from synthscale.classifier.train import train_classifier
    from synthscale.preemption import Preempted
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
    rc, out_text, err, step = communicate_signalling(proc, sigterm_after_step, lambda: proc.send_signal(signal.SIGTERM))
    return rc, out_text, err, step is not None


def test_sigterm_saves_checkpoint_and_rerun_resumes(tmp_path, one_thread):
    """A real SIGTERM to a training process: it checkpoints and exits; the rerun resumes bit-identically."""
    recipe = {**RECIPE, "epochs": 25, "min_steps": 0}  # 4 steps per epoch: 100 steps, a few seconds
    ref_model, ref_log = reference_run(tmp_path, recipe, 64)
    out = tmp_path / "job"
    out.mkdir()
    script = TRAIN_SCRIPT.format(tests=str(REPO / "tests"), n=64)

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
    from synthscale.data.shards import write_shard
    from synthscale.classifier.train import train_model

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



def test_a_resume_under_another_worker_count_is_refused_naming_the_key(tmp_path, one_thread):
    """The loader's worker count fixes the batch order, and a resume skips the batches it trained on:
    under another count it would skip other images. A checkpoint records the count; a resume with
    another count stops, naming train.num_workers, and leaves the checkpoint; set back, it resumes.
    No worker and one worker read one stream in one order: switching between them resumes bit for bit."""
    images, labels = make_data(64)
    run = tmp_path / "run"
    kwargs = dict(seed=3, model_path=run / "m.safetensors", log_path=run / "log.csv", checkpoint_path=run / "c.pt",
                  progress=False)
    with pytest.raises(Preempted, match="stopped at step 5/"):  # 4 steps per epoch: mid-epoch 2
        train_classifier(images, labels, N_CLASSES, {**RECIPE, "num_workers": 2}, stop_after_steps=5, **kwargs)
    with pytest.raises(ValueError, match=r"config key train\.num_workers: .* with 2 loader worker\(s\) a rank, "
                                         r"and it now gets 1 .* back to 2"):
        train_classifier(images, labels, N_CLASSES, {**RECIPE, "num_workers": 1}, **kwargs)
    assert (run / "c.pt").exists() and not (run / "m.safetensors").exists()
    train_classifier(images, labels, N_CLASSES, {**RECIPE, "num_workers": 2}, **kwargs)
    assert (run / "m.safetensors").exists() and not (run / "c.pt").exists()

    ref_model, ref_log = reference_run(tmp_path, {**RECIPE, "num_workers": 0}, 64)
    with pytest.raises(Preempted, match="stopped at step 5/"):
        train_classifier(images, labels, N_CLASSES, {**RECIPE, "num_workers": 0}, stop_after_steps=5,
                         **{**kwargs, "model_path": run / "m01.safetensors"})
    train_classifier(images, labels, N_CLASSES, {**RECIPE, "num_workers": 1}, **{**kwargs, "model_path": run / "m01.safetensors"})
    assert_same_weights(ref_model, run / "m01.safetensors")


def test_a_resume_under_another_world_size_is_refused_naming_the_key(tmp_path, one_thread, monkeypatch):
    """Each rank reads its own share of every epoch from the shards, and a resume skips the batches it
    trained on: under another number of ranks it would skip other images. A checkpoint records the
    world size; a resume claiming 2 ranks (rank_world patched: the check runs before any collective)
    of a checkpoint that one process wrote stops, naming resources.train.gpu, and leaves the
    checkpoint; with one process again it resumes to the uninterrupted run's weights."""
    import synthscale.classifier.train as train

    images, labels = make_data(64)
    parts = [{"shards": write_digit_shards(tmp_path / "shards", images, labels, 16), "limit": None}]
    recipe = {**RECIPE, "input_size": 16, "shuffle_buffer": 20}
    ref, run = tmp_path / "ref", tmp_path / "run"
    train.train_model(parts, N_CLASSES, recipe, 3, ref / "m.safetensors", ref / "log.csv", progress=False)
    kwargs = dict(model_path=run / "m.safetensors", log_path=run / "log.csv", checkpoint_path=run / "c.pt", progress=False)
    with pytest.raises(Preempted, match="stopped at step 5/"):  # 4 steps per epoch: mid-epoch 2
        train.train_model(parts, N_CLASSES, recipe, 3, stop_after_steps=5, **kwargs)
    with monkeypatch.context() as mp:
        mp.setattr(train, "rank_world", lambda: (0, 2))
        with pytest.raises(ValueError, match=r"config key resources\.train\.gpu: the checkpoint .*c\.pt was written "
                                             r"by this run with 1 rank\(s\), and it now gets 2 .* back to 1 to resume, "
                                             r"or delete the checkpoint"):
            train.train_model(parts, N_CLASSES, recipe, 3, **kwargs)
    assert (run / "c.pt").exists() and not (run / "m.safetensors").exists()
    train.train_model(parts, N_CLASSES, recipe, 3, **kwargs)
    assert_same_weights(ref / "m.safetensors", run / "m.safetensors")


def _resumed_steps(parts, recipe, saved, now, workers, monkeypatch, after=1) -> list[list[int]]:
    """The images (by label: labels are positions here) each step of epoch 0 trains on over `now`
    ranks after a resume from a checkpoint that `saved` ranks wrote after step `after` (each rank skips
    the micro-batches a rank that run counted), read from each rank's loader (the loader's rank patched)
    and grouped into steps as train_model plans them. `saved` = `now`: the uninterrupted run's steps."""
    import synthscale.data.loader as loader
    from synthscale.classifier.train import full_recipe, micro_size

    recipe = full_recipe(recipe, parts)

    def accum(world):
        return max(1, recipe["batch_size"] // (micro_size(recipe, world) * world))

    ranks = []
    for r in range(now):
        monkeypatch.setattr(loader, "_rank", lambda r=r: (r, now))
        batches = loader.build_train_loader(parts, recipe, 3, 0, batch_size=micro_size(recipe, now), num_workers=workers)
        ranks.append([yb.tolist() for _, yb in batches][after * accum(saved):])
    a = accum(now)
    return [sorted(i for b in ranks for mb in b[a * j: a * (j + 1)] for i in mb) for j in range(len(ranks[0]) // a)]


def test_in_memory_images_resume_under_another_world_size(tmp_path, monkeypatch, one_thread):
    """Where the batch order does not depend on the world size, a resume under another one is not
    refused: one in-memory part (arrays), the batch shared out (micro_batch_size unset), the same
    loader workers a rank. Stream s of S (ranks x workers) then reads every S-th position of the
    epoch's permutation, so every step trains on the same images at 1, 2 or 4 ranks, and a resume
    skips what the stopped run trained. Not so from shards, or with a micro-batch size fixed (one
    rank then counts two micro-batches a step, two ranks one each), which a resume refuses. The
    resume itself: a checkpoint that says 2 ranks (rewritten: one process wrote it) resumes in one
    process to the uninterrupted weights; with micro_batch_size 8 it is refused."""
    import json

    n = 64
    images, _ = make_data(n)
    positions = np.arange(n)  # an image's label is its position
    arrays = [{"arrays": (images, positions), "limit": None}]
    shards = [{"shards": write_digit_shards(tmp_path / "shards", images, positions, 16), "limit": None}]
    recipe = {**RECIPE, "input_size": 16, "shuffle_buffer": 20}
    for saved, now, workers in ((1, 2, 0), (2, 1, 0), (1, 4, 0), (2, 1, 1), (1, 2, 2)):
        rest = _resumed_steps(arrays, recipe, saved, saved, workers, monkeypatch)
        assert len(rest) == 3 and len({i for step in rest for i in step}) == 48
        assert _resumed_steps(arrays, recipe, saved, now, workers, monkeypatch) == rest, (saved, now, workers)
        assert _resumed_steps(arrays, recipe, now, now, workers, monkeypatch) == rest, "the same steps"
    fixed = {**recipe, "micro_batch_size": 8}
    for parts, r in ((arrays, fixed), (shards, recipe)):
        assert _resumed_steps(parts, r, 1, 2, 0, monkeypatch) != _resumed_steps(parts, r, 1, 1, 0, monkeypatch)

    def said_two_ranks(ckpt):
        saved = torch.load(ckpt, weights_only=True)
        state = json.loads(saved["state"])
        assert state["world_size"] == 1
        torch.save({**saved, "state": json.dumps({**state, "world_size": 2})}, ckpt)

    monkeypatch.undo()  # the loader's own rank again
    ref_model, _ = reference_run(tmp_path, recipe, n)
    run = tmp_path / "run"
    kwargs = dict(seed=3, model_path=run / "m.safetensors", log_path=run / "log.csv", checkpoint_path=run / "c.pt",
                  progress=False)
    for r in (recipe, fixed):
        with pytest.raises(Preempted, match="stopped at step 5/"):
            train_classifier(images, positions % N_CLASSES, N_CLASSES, r, stop_after_steps=5, **kwargs)
        said_two_ranks(run / "c.pt")
        if r is fixed:
            with pytest.raises(ValueError, match=r"config key resources\.train\.gpu: .* with 2 rank\(s\), and it now gets 1"):
                train_classifier(images, positions % N_CLASSES, N_CLASSES, r, **kwargs)
        else:
            train_classifier(images, positions % N_CLASSES, N_CLASSES, r, **kwargs)
            assert_same_weights(ref_model, run / "m.safetensors")


# the paths the presets train on: timm's RandAugment, flips, erasing and crops in 2 loader workers,
# mixup and cutmix on the batch, drop-path in the model; and a real + synthetic `prob` mix
AUGMENTED = {
    **RECIPE, "model_kwargs": {"channels": [16, 32, 64, 128], "drop_path_rate": 0.2}, "input_size": 16,
    "num_workers": 2, "shuffle_buffer": 20, "auto_augment": "rand-m9-mstd0.5-inc1", "re_prob": 0.25,
    "hflip": 0.5, "scale": [0.5, 1.0], "ratio": [0.75, 4 / 3], "mixup": 0.8, "cutmix": 1.0,
}
PROB_MIX = {**RECIPE, "input_size": 16, "num_workers": 2, "shuffle_buffer": 20}


@pytest.mark.parametrize("path", ["augmented", "augmented-uint8", "prob-mix"])
def test_resume_is_bit_identical_on_the_presets_paths(tmp_path, one_thread, path):
    """Stopped mid-epoch twice and resumed, a run reaches the uninterrupted run's weights and log bit
    for bit on the presets' paths, where the random state of the workers (RandAugment, crops, flips,
    erasing, the mix's draws), of mixup/cutmix and of drop-path must all come back."""
    from synthscale.classifier.train import train_model

    images, labels = make_data(112)
    if path.startswith("augmented"):
        # uint8: the GPU path (auto on CUDA), erasing on the batch from the trainer's per-step seed
        recipe, mix = {**AUGMENTED, "uint8_batches": path.endswith("uint8")}, None
        parts = [{"shards": write_digit_shards(tmp_path / "real", images[:64], labels[:64], 24), "limit": 64}]
    else:
        recipe, mix = PROB_MIX, {"mode": "prob", "synthetic_prob": 0.5}
        parts = [
            {"shards": write_digit_shards(tmp_path / "real", images[:48], labels[:48], 24), "limit": 48},
            {"shards": write_digit_shards(tmp_path / "syn", images[48:], labels[48:], 20), "limit": 40},
        ]
    ref = tmp_path / "ref"
    train_model(parts, N_CLASSES, recipe, 3, ref / "m.safetensors", ref / "log.csv", progress=False, mix=mix)
    run = tmp_path / "run"
    kwargs = dict(model_path=run / "m.safetensors", log_path=run / "log.csv", checkpoint_path=run / "c.pt",
                  progress=False, mix=mix)
    with pytest.raises(Preempted, match="stopped at step 6/"):  # 4-5 steps per epoch: mid-epoch 2
        train_model(parts, N_CLASSES, recipe, 3, stop_after_steps=6, **kwargs)
    with pytest.raises(Preempted, match="stopped at step 9/"):
        train_model(parts, N_CLASSES, recipe, 3, stop_after_steps=9, **kwargs)
    train_model(parts, N_CLASSES, recipe, 3, **kwargs)
    assert_same_weights(ref / "m.safetensors", run / "m.safetensors")
    assert_same_log(ref / "log.csv", run / "log.csv", columns=("epoch", "step", "lr", "train_loss", "train_acc"))


# ------------------------------------------- a real job: SIGTERM to every process, or SIGKILL

# 320 images in 8 shards, 2 workers with 4 shards each: 20 steps per epoch, 2 epochs
WORKERS_RECIPE = {**RECIPE, "epochs": 2, "min_steps": 0, "input_size": 16, "num_workers": 2, "shuffle_buffer": 20}
STEPS_PER_EPOCH, TOTAL_STEPS = 20, 40


@pytest.fixture(scope="module")
def worker_job(tmp_path_factory):
    """Shards and the uninterrupted run's weights and log (same worker count, one thread)."""
    from synthscale.classifier.train import train_model

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("worker_job")
    images, labels = make_data(320)
    parts = [{"shards": write_digit_shards(tmp / "shards", images, labels, 40), "limit": None}]
    ref = tmp / "ref"
    log = train_model(parts, N_CLASSES, WORKERS_RECIPE, 3, ref / "m.safetensors", ref / "log.csv", progress=False)
    torch.set_num_threads(old)
    assert log["step"].tolist() == [STEPS_PER_EPOCH, TOTAL_STEPS]
    return parts, ref


def run_job(out: Path, parts: list, recipe: dict, sig: int | None = None, after_step: int = 0):
    """`python -m synthscale.classifier.train spec.json` (the entry torchrun runs, here as one process) in its own
    process group; optionally send `sig` to the whole group, as SLURM signals every process of a job,
    loader workers included, once the progress bar shows `after_step`. Returns (exit code, stdout,
    stderr, the step the bar showed when the signal went)."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    spec = dict(parts=parts, n_classes=N_CLASSES, recipe=recipe, seed=3, model_path=str(out / "m.safetensors"),
                log_path=str(out / "log.csv"), checkpoint_path=str(out / "c.pt"), device="cpu", progress=True,
                threads=1)
    (out / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.Popen(
        [sys.executable, "-m", "synthscale.classifier.train", str(out / "spec.json")], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True,
    )
    return communicate_signalling(proc, after_step if sig is not None else None, lambda: os.killpg(proc.pid, sig))


def test_sigterm_to_a_job_with_loader_workers_checkpoints_and_resumes(tmp_path, worker_job):
    """SIGTERM to the main process and its 2 loader workers mid-epoch: the workers ignore it, the main
    process saves after its step and exits 75; the rerun resumes to the uninterrupted weights."""
    parts, ref = worker_job
    out = tmp_path / "job"
    rc, stdout, stderr, at = run_job(out, parts, WORKERS_RECIPE, signal.SIGTERM, after_step=3)
    assert at is not None, f"training never showed progress:\n{stderr[-2000:]}"
    assert rc == 75, f"expected the preempted exit 75, got {rc}:\n{stdout}\n{stderr[-3000:]}"
    m = re.search(rf"stopped at step (\d+)/{TOTAL_STEPS}", stdout)
    assert m and int(m.group(1)) % STEPS_PER_EPOCH != 0, f"stopped mid-epoch: {stdout}"
    assert (out / "c.pt").exists() and not (out / "m.safetensors").exists()
    assert "DataLoader worker" not in stderr

    rc, stdout, stderr, _ = run_job(out, parts, WORKERS_RECIPE)
    assert rc == 0, stderr[-3000:]
    assert re.search(rf"\b{m.group(1)}/{TOTAL_STEPS}\b", stderr), "the rerun resumed from the checkpoint"
    assert not (out / "c.pt").exists()
    assert_same_weights(ref / "m.safetensors", out / "m.safetensors")
    assert_same_log(ref / "log.csv", out / "log.csv", columns=("epoch", "step", "lr", "train_loss", "train_acc"))


def test_periodic_checkpoints_survive_a_kill_without_warning(tmp_path, worker_job):
    """`checkpoint_minutes`: checkpoints written as training goes (here every step or so), so a job
    SIGKILLed mid-epoch (no signal to catch) resumes from the last one to the uninterrupted weights."""
    parts, ref = worker_job
    out = tmp_path / "job"
    recipe = {**WORKERS_RECIPE, "checkpoint_minutes": 1e-4}
    rc, stdout, stderr, at = run_job(out, parts, recipe, signal.SIGKILL, after_step=7)
    assert at is not None and rc == -signal.SIGKILL, f"{rc}\n{stderr[-2000:]}"
    assert (out / "c.pt").exists() and not (out / "m.safetensors").exists()
    saved = json_state(out / "c.pt")
    assert 0 < saved["step"] < TOTAL_STEPS

    rc, stdout, stderr, _ = run_job(out, parts, recipe)
    assert rc == 0, stderr[-3000:]
    assert re.search(rf"\b{saved['step']}/{TOTAL_STEPS}\b", stderr), "the rerun resumed from the checkpoint"
    assert_same_weights(ref / "m.safetensors", out / "m.safetensors")
    assert_same_log(ref / "log.csv", out / "log.csv", columns=("epoch", "step", "lr", "train_loss", "train_acc"))


def json_state(ckpt: Path) -> dict:
    import json

    return json.loads(torch.load(ckpt, weights_only=True)["state"])


# ---------------------------------------------------------------- generation: shard granularity

KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from synthscale.data.shards import write_shard

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


def test_a_preempted_training_call_exits_75_and_says_why(capsys):
    """The job scripts' wrapper: `Preempted` becomes exit 75 (the retry resumes) with the reason on
    stderr; any other error, and a normal return, pass through untouched."""
    from synthscale.preemption import PREEMPTED_EXIT, Preempted, exit_when_preempted

    with pytest.raises(SystemExit) as stop:
        with exit_when_preempted():
            raise Preempted("stopped at step 5/9; checkpoint c.pt")
    assert stop.value.code == PREEMPTED_EXIT == 75
    assert "preempted: stopped at step 5/9" in capsys.readouterr().err
    with pytest.raises(ValueError):
        with exit_when_preempted():
            raise ValueError("diverged")
    with exit_when_preempted():
        done = True
    assert done
