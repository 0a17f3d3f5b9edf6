"""Snakemake on the tiny study (configs/test.yaml): `smk` runs it in a working directory that
`new_workdir` makes, `dry` dry-runs it and counts the planned jobs per rule (`job_counts`), `dry_jobs`
dry-runs it and lists each planned job's rule and first output."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from . import REPO


def smk(
    workdir: Path, *args: str, check: bool = True, overrides: dict | None = None
) -> subprocess.CompletedProcess:
    """Run Snakemake on the tiny study in `workdir` (a copy of config.yaml lives there).

    `overrides` go in a YAML file after configs/test.yaml: `--config` would turn numbers in lists and
    nested values into strings.
    """
    configs = [str(REPO / "configs/test.yaml")]
    if overrides:
        extra = workdir / ".overrides.yaml"
        extra.write_text(yaml.safe_dump(overrides))
        configs.append(str(extra))
    # targets and flags first: --configfile takes every path that follows it
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           *args, "--configfile", *configs]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def new_workdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "config.yaml", path / "config.yaml")
    return path


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run, as {rule: count}."""
    counts = {}
    m = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\ntotal", output, re.S)
    if not m:
        return counts
    for line in m.group(1).splitlines():
        name, n = line.split()
        counts[name] = int(n)
    return counts


def dry(workdir: Path, *targets: str, overrides: dict | None = None) -> dict[str, int]:
    proc = smk(workdir, *targets, "-n", "--quiet", "rules", overrides=overrides)
    return job_counts(proc.stdout + proc.stderr)


def dry_jobs(workdir: Path, *targets: str, overrides: dict | None = None) -> list[tuple[str, str]]:
    """(rule, first output) of every job a dry run plans."""
    proc = smk(workdir, *targets, "-n", overrides=overrides)
    return re.findall(r"^rule (\w+):\n(?:    .*\n)*?    output: ([^,\n]+)", proc.stdout + proc.stderr, re.M)
