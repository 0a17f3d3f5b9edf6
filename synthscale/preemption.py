"""Preemption: a training job told to stop saves a checkpoint after its current step and exits 75.

SLURM sends SIGTERM to every process of a job before its time limit (`--signal=TERM@180`) and on
preemption; a terminal's Ctrl-C sends SIGINT. A training loop (classifier training, generator
fine-tuning; torchrun ranks alike) handles both the same way, through this module:
- `StopSignals` turns the two signals into a flag that the loop reads between steps, so the step
  under way finishes; the loop then saves (`save_checkpoint`) and raises `Preempted`, and the job
  exits `PREEMPTED_EXIT` (75, EX_TEMPFAIL); Snakemake's retry (or the next run) resumes from the
  checkpoint (`resume_checkpoint`).
- `ignore_stop_signals` is every DataLoader worker's init: a worker that died of the signal would take
  the main process down before it saved.
- `CheckpointClock` times the periodic checkpoints (`checkpoint_minutes`) that a job killed without
  warning resumes from.
- Checkpoints are written atomically (synthscale.io.atomic_path) and read with
  `torch.load(weights_only=True)`; a partial one that a kill mid-save left under a temporary name is
  removed before the next start.
- `check_resumed_count` refuses a resume under a setting that changes the batch order (a count the
  checkpoint recorded: the loader's workers, the ranks), naming the config key.

What the checkpoint holds and how a loop resumes bit-identically stay with the loop.
"""

from __future__ import annotations

import contextlib
import operator
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

PREEMPTED_EXIT = 75  # EX_TEMPFAIL: stopped after saving a checkpoint; rerun to resume
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(RuntimeError):
    """Training stopped on a signal after saving its checkpoint; rerun to resume."""


@contextlib.contextmanager
def exit_when_preempted() -> Iterator[None]:
    """A job script's training call: a `Preempted` (the checkpoint is saved) ends the job with
    PREEMPTED_EXIT, saying why on stderr (the rule's log); the retry resumes from the checkpoint."""
    try:
        yield
    except Preempted as stop:
        print(f"preempted: {stop}", file=sys.stderr, flush=True)
        sys.exit(PREEMPTED_EXIT)


class StopSignals:
    """SIGTERM and SIGINT set `signal` (the last one received) instead of ending the process, from
    construction until `restore()`; with `enabled` False it installs nothing and never stops."""

    def __init__(self, enabled: bool = True):
        self.signal: int | None = None
        self._old = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS} if enabled else {}

    def _on_signal(self, signum, _frame) -> None:
        self.signal = signum

    def stopping(self, step: int, stop_after_steps: int | None = None) -> bool:
        """Whether to save and stop after `step`: a signal came, or a test's `stop_after_steps` is reached."""
        return self.signal is not None or stop_after_steps == step

    def restore(self) -> None:
        """Put back the handlers that were there before."""
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}


def ignore_stop_signals(_worker_id: int = 0) -> None:
    """A loader worker's init: ignore SIGTERM and SIGINT. SLURM signals every process of a job before
    its time limit (a terminal's Ctrl-C, the whole foreground group): a worker that died of it would
    take the main process down ("DataLoader worker killed") before it saved its checkpoint. The main
    process stops its workers itself; a worker whose main process died exits on its own (torch's
    watchdog)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class CheckpointClock:
    """Periodic checkpoints: `due()` once `minutes` have passed since the start or the last `saved()`
    (0 or None: never)."""

    def __init__(self, minutes: float | None):
        self.every = float(minutes or 0) * 60
        self.last = time.monotonic()

    def due(self) -> bool:
        return self.every > 0 and time.monotonic() - self.last >= self.every

    def saved(self) -> None:
        self.last = time.monotonic()


@dataclass
class Stopping:
    """What stops a loop or has it save: its checkpoint path (None: neither), the stop flag, the
    periodic-checkpoint clock, and a test's `stop_after_steps`."""

    ckpt: Path | None
    signals: StopSignals
    clock: CheckpointClock
    stop_after_steps: int | None = None

    def flags(self, step: int, rank: int) -> list[float]:
        """After `step`: [this rank was told to stop, rank 0's clock says save], the values a loop
        sums over the ranks so that every rank stops or saves after the same step."""
        return [float(self.signals.stopping(step, self.stop_after_steps)), float(rank == 0 and self.clock.due())]


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """`torch.save(state)` to `path` atomically: a kill mid-save leaves only a temporary name."""
    import torch

    from synthscale.io import atomic_path

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def resume_checkpoint(path: str | os.PathLike | None, device: str, clean: bool = True) -> dict[str, Any] | None:
    """The checkpoint to resume from (`torch.load(weights_only=True)` onto `device`), or None when
    there is none. With `clean` (one process of a run: rank 0), first delete the partial checkpoints
    that a job killed while saving left under a temporary name."""
    if path is None:
        return None
    import torch

    from synthscale.io import remove_stale_temps

    path = Path(path)
    if clean:
        remove_stale_temps(path)
    if not path.exists():
        return None
    return torch.load(path, map_location=device, weights_only=True)


def same_loader_stream(saved: int, now: int) -> bool:
    """Whether two loader worker counts give one batch order: the same count, or 0 and 1 (one stream,
    read in the process or in its one worker, in one order)."""
    return max(1, saved) == max(1, now)


def check_resumed_count(
    saved: int | None,
    now: int,
    *,
    key: str,
    ckpt: str | os.PathLike | None,
    what: str,
    why: str,
    note: str = "",
    same: Callable[[int, int], bool] = operator.eq,
) -> None:
    """Refuse a resume under another value of a count that fixes the batch order.

    A resumed epoch skips the batches its checkpoint counted as trained on; a count such as the
    loader's workers or the number of ranks decides which images those batches held, so under another
    count the resume would silently skip other images (some trained twice, some not at all in that
    epoch). Going on with the checkpoint's count instead would ignore the config the user just
    changed, so the run stops with a ValueError naming the config `key`, both counts (`saved`, as
    the checkpoint recorded it, and `now`; `what` says what is counted, `note` adds to `now`), `why`
    the order depends on it, and what to do: set the key back, or delete the checkpoint `ckpt`
    (which is kept). `same(saved, now)` (default: equal) says which counts give one batch order. A
    checkpoint written before the count was recorded (`saved` None) resumes as before."""
    if saved is None or same(int(saved), int(now)):
        return
    raise ValueError(
        f"config key {key}: the checkpoint {ckpt} was written by this run with {saved} {what}, and it now "
        f"gets {now}{note}; {why}, so the resumed epoch would skip other batches than those it trained on. "
        f"Set {key} back to {saved} to resume, or delete the checkpoint to start the run over with the new count"
    )


RANKS_NOTE = " (one torchrun rank a GPU; one process for 0 or 1 GPU)"


def check_resumed_world(
    saved: int | None, now: int, *, key: str, ckpt: str | os.PathLike | None,
    same: Callable[[int, int], bool] = operator.eq,
) -> None:
    """`check_resumed_count` for the number of ranks (`key`: the stage's resources.<stage>.gpu)."""
    check_resumed_count(saved, now, key=key, ckpt=ckpt, what="rank(s)", note=RANKS_NOTE,
                        why="each rank reads its own share of every epoch", same=same)


def check_resumed_workers(
    saved: int | None, now: int, *, key: str, ckpt: str | os.PathLike | None, note: str = ""
) -> None:
    """`check_resumed_count` for a rank's loader workers (`key`: the loop's num_workers); 0 and 1 read
    one stream (`same_loader_stream`)."""
    check_resumed_count(saved, now, key=key, ckpt=ckpt, what="loader worker(s) a rank", note=note,
                        why="the worker count fixes the batch order", same=same_loader_stream)
