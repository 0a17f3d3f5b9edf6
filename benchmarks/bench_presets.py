"""Dry-run time and job count of every paper preset (budget: 10 s and 10,000 jobs each), and of
configs/hub-grid.yaml, the scale check (3 Hub generators x 5 guidance x 4 strategies up to 1M images).

    uv run python benchmarks/bench_presets.py

Builds a working directory where the presets' data paths exist (empty folders and class tables), then
times `snakemake -n` on each preset and prints its jobs per rule.
"""
from __future__ import annotations

import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers.preset_data import PRESETS, dry_run_cmd, preset_workdir  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = preset_workdir(Path(tmp))
        # CPU seconds too: on a shared machine the wall time is the CPU time plus the waiting
        print(f"{'preset':<16} {'seconds':>8} {'CPU s':>6} {'jobs':>7}  largest rules")
        for preset in PRESETS:
            t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
            proc = subprocess.run(dry_run_cmd(root, preset), capture_output=True, text=True, cwd=root)
            seconds, c1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
            if proc.returncode:
                print(f"{preset:<16} FAILED\n{proc.stderr[-2000:]}")
                continue
            rows = re.findall(r"^(\w+)\s+(\d+)$", proc.stdout + proc.stderr, re.M)
            counts = {k: int(v) for k, v in rows if k not in ("total", "all")}
            top = ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:4])
            verdict = "" if seconds <= 10 and sum(counts.values()) <= 10_000 else "  OVER BUDGET"
            print(f"{preset:<16} {seconds:8.1f} {cpu:6.1f} {sum(counts.values()):7d}  {top}{verdict}")


if __name__ == "__main__":
    main()
