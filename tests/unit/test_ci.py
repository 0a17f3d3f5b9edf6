"""CI refuses silent skips: with SYNTHSCALE_REQUIRE naming a requirement, a test that needs it fails
(pytest) and CI stops before the tests, naming what could not be installed (.ci/run)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import REPO

NEEDS_FAKE = textwrap.dedent(
    """
    from helpers.require import require_or_skip

    def test_needs_a_thing():
        require_or_skip("fakething", "fakething is not installed here")

    def test_needs_nothing():
        pass
    """
)


def run_pytest(tmp_path: Path, require: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "test_fake.py").write_text(NEEDS_FAKE)
    env = {k: v for k, v in os.environ.items() if k != "SYNTHSCALE_REQUIRE"}
    if require is not None:
        env["SYNTHSCALE_REQUIRE"] = require
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), env.get("PYTHONPATH", "")])
    # the project's own pytest settings (addopts), on a test file outside the suite
    cmd = [sys.executable, "-m", "pytest", "-c", str(REPO / "pyproject.toml"), "-p", "no:cacheprovider",
           str(tmp_path / "test_fake.py")]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("require", ["fakething", "slurm,fakething,wordnet"])
def test_a_required_thing_that_is_missing_fails_by_name(tmp_path, require):
    proc = run_pytest(tmp_path, require)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "1 failed, 1 passed" in out and "skipped" not in out, out
    assert "SYNTHSCALE_REQUIRE requires 'fakething', which is missing: fakething is not installed here" in out


@pytest.mark.parametrize("require", [None, "", "slurm,wordnet", "fakethingy"])
def test_a_missing_thing_not_required_skips_with_its_reason(tmp_path, require):
    proc = run_pytest(tmp_path, require)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "1 passed, 1 skipped" in out
    # -rs (pyproject.toml's addopts): the reason is printed in the summary
    assert "SKIPPED [1]" in out and "fakething is not installed here" in out, out


STUBS = {
    # stand-ins for .ci/run's tools: nothing is installed, uv records what it is asked to run
    "pip": "exit 0",
    "apt-get": 'echo "apt-get: not here" >&2; exit 100',
    "id": 'echo "$STUB_UID"',
    "uv": textwrap.dedent(
        """
        echo "uv $* SYNTHSCALE_REQUIRE=${SYNTHSCALE_REQUIRE-unset}" >> "$STUB_LOG"
        case "$*" in
            "run python"*) exit "$STUB_WORDNET" ;;  # the WordNet check: 0 found, 1 not found
            *) exit 0 ;;
        esac
        """
    ),
}


def run_ci(tmp_path: Path, require: str | None, uid: int = 1000, wordnet: bool = False):
    bin_ = tmp_path / "bin"
    bin_.mkdir(exist_ok=True)
    for name, body in STUBS.items():
        (bin_ / name).write_text("#!/usr/bin/env bash\n" + body)
        (bin_ / name).chmod(0o755)
    log = tmp_path / "uv.log"
    log.unlink(missing_ok=True)
    env = {"PATH": f"{bin_}:/usr/bin:/bin", "HOME": str(tmp_path), "STUB_LOG": str(log),
           "STUB_UID": str(uid), "STUB_WORDNET": "0" if wordnet else "1"}
    if require is not None:
        env["SYNTHSCALE_REQUIRE"] = require
    proc = subprocess.run(["bash", str(REPO / ".ci/run")], env=env, capture_output=True, text=True, timeout=120)
    return proc, log.read_text() if log.exists() else ""


def test_ci_stops_naming_what_it_could_not_install(tmp_path):
    proc, uv = run_ci(tmp_path, None)  # the default: slurm,wordnet
    assert proc.returncode == 1, proc.stdout + proc.stderr
    failed = [ln for ln in proc.stderr.splitlines() if ln.startswith("CI: SYNTHSCALE_REQUIRE=")]
    assert len(failed) == 2, proc.stderr
    assert "CI: not installed" not in proc.stderr, "each missing thing is named on one line, not split into words"
    assert "could not install: slurm" in failed[0] and "could not install: wordnet" in failed[1]
    assert "uv sync" in uv and "run pytest" not in uv and "run snakemake" not in uv, "no tests after a failed install"

    proc, uv = run_ci(tmp_path, None, wordnet=True)  # WordNet is there, SLURM cannot be set up (not root)
    assert proc.returncode == 1 and "could not install: slurm" in proc.stderr
    assert "could not install: wordnet" not in proc.stderr
    assert "slurm-setup: needs root" in proc.stderr


def test_ci_without_requirements_runs_the_tests_and_says_what_will_skip(tmp_path):
    proc, uv = run_ci(tmp_path, "")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "its tests will skip (not in SYNTHSCALE_REQUIRE): slurm" in proc.stderr
    assert "its tests will skip (not in SYNTHSCALE_REQUIRE): wordnet" in proc.stderr
    assert "uv run pytest SYNTHSCALE_REQUIRE=" + "\n" in uv, uv  # exported, empty

    proc, uv = run_ci(tmp_path, "wordnet", wordnet=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "uv run pytest SYNTHSCALE_REQUIRE=wordnet\n" in uv, "pytest sees the requirement"
