"""Replicate seeds through Snakemake's dry run on the tiny study (configs/test.yaml): each seed is its
own training job, one evaluate job per source covers them all, and adding real_seeds adds only real-only
runs. The seeds in Plan are tested in tests/unit/test_plan_seeds.py."""
from __future__ import annotations

import re

import pytest

from helpers.workflow import dry, dry_jobs, new_workdir

pytestmark = pytest.mark.workflow


def test_seeds_are_a_grid_axis(tmp_path):
    """Each replicate seed is its own training target; one evaluate job per source covers them all."""
    counts = dry(new_workdir(tmp_path / "wd"), overrides={"train": {"seeds": [0, 4], "real_seeds": None}})
    assert counts["train_classifier"] == 2 * 6 and counts["evaluate"] == 3


def test_adding_real_seeds_schedules_only_real_runs(tmp_path):
    work = new_workdir(tmp_path / "w")
    before = set(dry_jobs(work, overrides={"train": {"seeds": [0], "real_seeds": None}}))
    after = set(dry_jobs(work, overrides={"train": {"seeds": [0], "real_seeds": [0, 1]}}))
    new = sorted(o for rule, o in after - before if rule == "train_classifier")
    grid = {o for rule, o in before if rule == "train_classifier" and re.search(r"/real/n\d+/", o)}
    assert new == sorted(o.replace("/s0/", "/s1/") for o in grid), new
