"""What every job does first: pin torch's thread count and send its stderr to the rule's log too.

Duck-typed on the `snakemake` object that Snakemake hands a script; nothing here imports Snakemake.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO


class Tee:
    """A stream that writes to several streams (the terminal and the job's log)."""

    def __init__(self, *streams: TextIO):
        self.streams = streams

    def write(self, text: str) -> int:
        for s in self.streams:
            s.write(text)
            s.flush()
        return len(text)

    def flush(self) -> None:
        for s in self.streams:
            s.flush()

    def isatty(self) -> bool:
        return False


def pin_threads(threads: int) -> None:
    """Fix torch's intra-op threads: results are bit-identical only for a fixed count."""
    import torch

    torch.set_num_threads(int(threads))
    os.environ["OMP_NUM_THREADS"] = str(threads)


def job_setup(smk: Any, threads: int | None = None, fork: bool = True) -> None:
    """A job's first call: hand the job to this run's warm server if there is one (synthscale.warm: the
    script then runs in a fork of it, and this process only waits), then tee stderr (progress bars,
    warnings, tracebacks) into log[0] and pin torch's threads.

    `fork=False` runs the job cold, here: for a job that imports no torch (preparing the digits, rule-
    based prompts), which would otherwise wait for the server's first imports (3-4 s) while its own
    take under one; the first jobs of a run are such jobs, and everything waits for them.

    Call it before importing anything heavy: a script's imports above it are paid cold."""
    from synthscale import warm

    if fork:
        warm.hand_over(log=smk.log[0] if len(smk.log) else None)
    if len(smk.log):
        os.makedirs(os.path.dirname(smk.log[0]) or ".", exist_ok=True)
        log = open(smk.log[0], "w", buffering=1)
        plain, sys.stderr = sys.stderr, Tee(sys.__stderr__, log)
        warm.follow_stderr(plain, sys.stderr)
        if warm.in_job():
            print(warm.STARTED, file=log)
    if threads is not None:
        pin_threads(threads)
