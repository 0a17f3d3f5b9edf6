"""The study on a real single-node SLURM, through `--profile profiles/slurm`.

Needs root and Debian's slurmctld, slurmd, slurm-client and munge (.ci/slurm-setup.sh); skips with
the reason otherwise. The cluster comes from tests/helpers/slurm_cluster.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers import REPO
from helpers.slurm_cluster import NODE_GPUS, NODE_MEMORY_MB, slurm_cluster  # noqa: F401  (fixture)

pytestmark = pytest.mark.slurm

PROFILE = REPO / "profiles" / "slurm"
TEST_CONFIG = REPO / "configs" / "test.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# poll SLURM every few seconds instead of the profile's site-friendly default (40 s before the first check)
FAST_POLL = ["--slurm-init-seconds-before-status-checks", "2"]
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: ([^)]+)\)")


def study_command(results: Path, *extra: str) -> list[str]:
    return SNAKEMAKE + [
        "-s", str(REPO / "Snakefile"),
        "--configfile", str(TEST_CONFIG),
        "--config", f"results={results}",
        *extra,
    ]  # fmt: skip


def run(cmd, cwd, env=None, timeout=1500) -> subprocess.CompletedProcess:
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    proc.seconds = time.time() - t0
    proc.output = proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def study_config():
    assert TEST_CONFIG.exists(), f"{TEST_CONFIG} is the study the SLURM tests run"
    return TEST_CONFIG


@pytest.fixture(scope="module")
def local_run(study_config, study):
    """The test study run on this machine without SLURM (shared with the workflow tests)."""
    return study / "results-test"


def comparable_files(results: Path) -> dict[str, Path]:
    """Outputs that must match between runs: data, prompts, generator, shards, models, tables."""
    # logs hold timings and hosts; benchmarks hold timings (Snakemake's benchmark:); plots are PNGs with
    # renderer metadata
    skip_dirs = {"logs", "benchmarks", "plots"}
    out = {}
    for p in sorted(results.rglob("*")):
        rel = p.relative_to(results)
        if p.is_file() and rel.parts[0] not in skip_dirs and not p.name.startswith("."):
            if p.suffix in {".html"}:  # the findings page embeds the run's time
                continue
            if rel.name in {"cost.csv", "train.log"}:  # compute hours; open_clip_train's log (times, paths)
                continue
            out[str(rel)] = p
    return out


def assert_same_outputs(local: Path, remote: Path) -> None:
    a, b = comparable_files(local), comparable_files(remote)
    assert sorted(a) == sorted(b), f"different output sets: {sorted(set(a) ^ set(b))}"
    differ = []
    for rel in a:
        if a[rel].read_bytes() == b[rel].read_bytes():
            continue
        if a[rel].suffix == ".csv":
            da, db = pd.read_csv(a[rel]), pd.read_csv(b[rel])
            timing = [c for c in da.columns if c in {"seconds", "elapsed", "wall_s", "duration"}]
            try:
                pd.testing.assert_frame_equal(
                    da.drop(columns=timing), db.drop(columns=timing), check_exact=True
                )
                continue
            except AssertionError:
                pass
        differ.append(rel)
    assert not differ, f"outputs differ between the local and the SLURM run: {differ}"
    shards = [r for r in a if r.startswith("synthetic/") and r.endswith(".tar")]
    assert shards, "the study made no synthetic shards"


def test_study_through_profile_matches_local_run(slurm_cluster, local_run, tmp_path):  # noqa: F811
    from helpers.workflow import new_workdir

    new_workdir(tmp_path)  # config.yaml under configs/test.yaml, as in the local run's working directory
    results = tmp_path / "results"
    cmd = study_command(
        results, "--profile", str(PROFILE), *FAST_POLL, "--slurm-keep-successful-logs", "--jobs", "4"
    )
    proc = run(cmd, cwd=tmp_path, env=slurm_cluster.env())
    print(f"SLURM run: {proc.seconds:.0f}s")
    assert proc.returncode == 0, proc.output[-8000:] + "\n" + slurm_cluster.logs()

    # every non-local job went through sbatch, and slurmctld ran it to completion
    submitted = {int(m.group(1)): Path(m.group(2)) for m in SUBMITTED.finditer(proc.output)}
    assert submitted, "no job was submitted to SLURM"
    accepted, completed = set(slurm_cluster.submitted_job_ids()), set(slurm_cluster.completed_job_ids())
    assert set(submitted) <= accepted, "snakemake reports jobs that slurmctld never accepted"
    assert set(submitted) <= completed, "snakemake reports jobs that slurmctld did not run to completion"
    for log in submitted.values():
        assert (tmp_path / log if not log.is_absolute() else log).exists(), f"missing SLURM log {log}"
    logs = tmp_path / ".snakemake" / "slurm_logs"
    kinds = {p.name for p in logs.iterdir()}
    for rule in ("prepare_data", "train_generator", "generate_block"):
        assert f"rule_{rule}" in kinds, f"{rule} did not run through SLURM: {sorted(kinds)}"
    for rule in ("train_classifier", "evaluate"):
        assert any(k == f"rule_{rule}" or (k.startswith("group_") and rule in k) for k in kinds), sorted(
            kinds
        )
    heavy = "prepare_data|prompts|train_generator|generate_block|train_classifier|evaluate"
    assert not re.search(rf"^localrule ({heavy}):", proc.output, re.M), "a heavy rule ran on the submit host"
    # the tiny analysis rules stay on the submit host (localrule: True)
    assert re.search(r"^localrule summary:", proc.output, re.M)
    assert not any(k == "rule_summary" for k in kinds)

    assert_same_outputs(local_run, results)


# ------------------------------------------------------------------ requests SLURM cannot satisfy


@pytest.mark.parametrize(
    "resources, message",
    [
        ({"mem_mb": 50 * NODE_MEMORY_MB}, "Memory specification can not be satisfied"),
        ({"gpu": NODE_GPUS + 3}, "Requested node configuration is not available"),
    ],
    ids=["memory", "gpus"],
)
def test_oversized_request_fails_at_submission(
    slurm_cluster, study_config, tmp_path, resources, message
):  # noqa: F811
    """A config asking for more than the partition has fails fast, with SLURM's own message."""
    res = {"threads": 1, "mem_mb": 1000, "runtime": 10, **resources}
    # CLIP keeps at most one GPU: the config check (before any job) refuses a CLIP on more GPUs than its
    # tiny N has shards for, and this test is about what SLURM refuses
    clip = {**res, "gpu": min(res.get("gpu", 0), 1)}
    override = tmp_path / "oversized.yaml"
    override.write_text("resources:\n  default: {%s}\n  clip: {%s}\n" % tuple(
        ", ".join(f"{k}: {v}" for k, v in r.items()) for r in (res, clip)))
    cmd = SNAKEMAKE + [
        "-s", str(REPO / "Snakefile"),
        "--configfile", str(study_config), str(override),
        "--config", f"results={tmp_path / 'results'}",
        "--profile", str(PROFILE), *FAST_POLL,
    ]  # fmt: skip
    proc = run(cmd, cwd=tmp_path, env=slurm_cluster.env(), timeout=300)
    assert proc.returncode != 0, proc.output[-4000:]
    assert "SLURM sbatch failed" in proc.output, proc.output[-4000:]
    assert message in proc.output, proc.output[-4000:]
    assert proc.seconds < 240, f"took {proc.seconds:.0f}s: submission errors must not hang"


TINY = textwrap.dedent("""
    rule all:
        input: "gpu.txt", "fails.txt"

    rule uses_gpu:
        output: "gpu.txt"
        resources: mem_mb=200, runtime=5, cpus_per_task=1, gpu=1, gpu_model="fake"
        shell: "echo job=${{SLURM_JOB_ID:-none}} gpus=${{CUDA_VISIBLE_DEVICES:-none}} > {output}"

    rule fails:
        output: "fails.txt"
        resources: mem_mb=200, runtime=5, cpus_per_task=1
        shell: "echo 'this job fails on purpose'; exit 3"
    """)


def test_gpu_job_runs_and_failed_job_is_retried_then_reported(slurm_cluster, tmp_path):  # noqa: F811
    (tmp_path / "Snakefile").write_text(TINY)
    cmd = SNAKEMAKE + ["--profile", str(PROFILE), *FAST_POLL, "--retries", "1"]
    proc = run(cmd, cwd=tmp_path, env=slurm_cluster.env(), timeout=300)
    assert proc.returncode != 0, proc.output[-4000:]

    # the fake GPU was granted through gres: SLURM set CUDA_VISIBLE_DEVICES
    gpu = (tmp_path / "gpu.txt").read_text()
    assert re.search(r"job=\d+ gpus=0", gpu), gpu

    # the failing job ran twice (retries: 1) and its SLURM log is named in the report
    fail_ids = [m for m in SUBMITTED.finditer(proc.output) if "rule_fails" in m.group(2)]
    assert len(fail_ids) == 2, proc.output[-4000:]
    logs = re.findall(r"log: (\S+rule_fails\S+\.log)", proc.output)
    assert logs and all(Path(p if Path(p).is_absolute() else tmp_path / p).exists() for p in logs)
    assert (
        "this job fails on purpose"
        in Path(logs[-1] if Path(logs[-1]).is_absolute() else tmp_path / logs[-1]).read_text()
    )
