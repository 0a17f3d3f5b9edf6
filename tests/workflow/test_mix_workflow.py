"""Real + synthetic mixes through Snakemake's dry run on the tiny study (configs/test.yaml): adding a
real_n value schedules only its own runs. The mixes' functions are tested in tests/unit/test_mix.py."""
from __future__ import annotations

import copy

import pytest

from helpers.workflow import dry_jobs, new_workdir

pytestmark = pytest.mark.workflow


def test_adding_a_real_n_value_schedules_only_its_runs(tmp_path):
    work = new_workdir(tmp_path / "w")
    base = {"mix": {"real_n": [20], "synthetic_multiples": [1], "sets": [{"generator": "tiny", "guidance": 1.0, "strategy": "classname"}]}}
    more = copy.deepcopy(base)
    more["mix"]["real_n"] = [20, 10]
    before, after = set(dry_jobs(work, overrides=base)), set(dry_jobs(work, overrides=more))
    assert before < after
    new = sorted(after - before)
    r = "results-test/train/resnet18"
    assert new == [
        ("evaluate", "results-test/eval/resnet18/mix/real10/synthetic/tiny/g1/classname/metrics.csv"),
        ("train_classifier", f"{r}/mix/real10/synthetic/tiny/g1/classname/n10/s0/model.safetensors"),
        ("train_classifier", f"{r}/real/n10/s0/model.safetensors"),  # its real-only baseline
    ]
    trained = {o for rule, o in before if rule == "train_classifier"}
    assert f"{r}/mix/real20/synthetic/tiny/g1/classname/n20/s0/model.safetensors" in trained
    assert {rule for rule, _ in before} >= {"mix_exchange_rate", "plot_mix", "mix_findings"}
