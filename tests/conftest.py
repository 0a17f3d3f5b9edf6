"""Shared fixtures: pinned threads (bit-identical reruns), small real data, and one local run of the
tiny study (configs/test.yaml) that the workflow and SLURM tests both read; `require_or_skip`, which
turns a missing system requirement into a failure when SYNTHSCALE_REQUIRE names it (CI: .ci/run)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parent.parent

torch.set_num_threads(1)

REQUIRE_VAR = "SYNTHSCALE_REQUIRE"


def required() -> set[str]:
    """The requirements SYNTHSCALE_REQUIRE names (comma-separated, e.g. `slurm,wordnet`)."""
    return {name.strip() for name in os.environ.get(REQUIRE_VAR, "").split(",") if name.strip()}


def require_or_skip(name: str, reason: str) -> None:
    """Skip the calling test (or fixture) because `name` is missing here, saying why; fail instead when
    SYNTHSCALE_REQUIRE names it, so that CI cannot pass with a whole group of tests skipped."""
    if name in required():
        pytest.fail(f"{REQUIRE_VAR} requires {name!r}, which is missing: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def digits_16():
    """sklearn's digits at 16x16, grey (N, 16, 16, 1) uint8, with labels."""
    from synthscale.data import load_digits_images

    return load_digits_images(16)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


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


@pytest.fixture(scope="session")
def study(tmp_path_factory) -> Path:
    """The tiny study, run once locally on 2 cores; tests must not change its files."""
    work = new_workdir(tmp_path_factory.mktemp("study"))
    smk(work, "--cores", "2")
    return work
