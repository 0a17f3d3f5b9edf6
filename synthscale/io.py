"""Atomic outputs: write under a temporary name beside the target, then rename.

A job killed half-way leaves only a `.tmp-*` name behind, never something that looks finished.
A job that keeps finished pieces across a kill keeps them at `partial_path`. A torchrun job's rank 0
notes beside its spec that it stopped after saving (`ddp_stop_file`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path in the target's folder; rename it onto `target` on success. The
    file's data reaches the disk (fsync) before the rename, and the rename before this returns (an
    fsync of the folder where the OS allows it), so a node that dies right after never leaves a
    finished-looking name over lost data."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{target.name}-", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temps(target: str | os.PathLike) -> list[Path]:
    """Delete the `.tmp-<name>-*` files `atomic_path` left beside `target` when a job died mid-write
    (a checkpoint's are as big as the model and optimizer); returns what it removed."""
    target = Path(target)
    stale = sorted(target.parent.glob(f".tmp-{target.name}-*")) if target.parent.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; swap it in place of `target` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


PARTIAL_DIR = ".partial"


def partial_path(output: str | os.PathLike, suffix: str = "") -> Path:
    """Where a job keeps a finished piece of its output `output` (with `suffix`, e.g. ".json", a file
    about that piece) until all its outputs are done: `.partial/NAME` beside the output. The output's
    path comes from its rule (Plan); this is its one scratch sibling: a hidden folder that Snakemake
    leaves alone when the job fails (it removes only declared outputs), so a rerun can reuse it."""
    output = Path(output)
    return output.parent / PARTIAL_DIR / f"{output.name}{suffix}"


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def write_csv(path: str | os.PathLike, df) -> None:
    """Write a pandas DataFrame atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def ddp_stop_file(spec_path: str | os.PathLike) -> str:
    """Where rank 0 of a torchrun job says that it stopped after saving (distributed.run_torchrun):
    `<spec>.stopped`, beside the job's spec (Plan.train_ddp_spec, Plan.generator_ddp_spec)."""
    return f"{os.fspath(spec_path)}.stopped"
