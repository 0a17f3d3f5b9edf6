"""Replicate seeds (issue 11): `train.seeds` for every run, `train.real_seeds` for the real-only runs on
the N grid (where real's slope, the reference of every ratio, is fitted)."""
from __future__ import annotations

import copy

import pytest

from synthscale.study.config import ConfigError, check_config
from synthscale.study.plan import Plan

SYN = "synthetic/tinydigits/g2/classname"


def _plan(raw, **train) -> Plan:
    cfg = copy.deepcopy(raw)
    cfg["train"].update(train)
    return Plan(check_config(cfg))


def test_real_seeds_replicate_only_the_real_grid_runs(default_raw):
    plan = _plan(default_raw, seeds=[0], real_seeds=[0, 1, 2])
    real = plan.seed_runs("real")
    grid = [str(n) for n in plan.cfg["n_images"]]
    assert [(n, s) for n, s in real if n in grid] == [(n, s) for n in grid for s in (0, 1, 2)]
    off = [(n, s) for n, s in real if n not in grid]
    assert ("all", 0) in off and {s for _, s in off} == {0}  # the full real set keeps train.seeds
    assert {s for _, s in plan.seed_runs(SYN)} == {0}
    mix = next(s for s in plan.sources() if s.startswith("mix/"))
    assert {s for _, s in plan.seed_runs(mix)} == {0}


def test_real_seeds_default_to_seeds(default_raw):
    plan = _plan(default_raw, seeds=[3, 4], real_seeds=None)
    assert plan.seeds_for("real") == plan.seeds_for(SYN) == [3, 4]


def test_a_model_without_a_seed_is_its_sources_first_seed(default_raw):
    plan = _plan(default_raw, seeds=[0], real_seeds=[5, 6])
    assert plan.model("real", "30").endswith("/real/n30/s5/model.safetensors")
    assert plan.model("real", "all").endswith("/real/nall/s0/model.safetensors")
    assert plan.model(SYN, "30").endswith(f"/{SYN}/n30/s0/model.safetensors")


@pytest.mark.parametrize("bad", [[], [1, 1], [-1], "0"])
def test_bad_real_seeds_name_the_key(default_raw, bad):
    with pytest.raises(ConfigError, match="train.real_seeds"):
        _plan(default_raw, real_seeds=bad)


def test_a_jobs_side_files_are_named_by_plan_beside_its_outputs(default_raw):
    """The scripts take a classifier's checkpoint and DDP spec, and a fine-tuning's DDP spec, from Plan."""
    plan = _plan(default_raw)
    model = plan.model(SYN, "100", 0)
    assert plan.train_checkpoint(SYN, "100", 0) == model.replace("model.safetensors", "checkpoint.pt")
    assert plan.train_ddp_spec(SYN, "100", 0) == model.replace("model.safetensors", "ddp_spec.json")
    assert plan.train_dir(SYN, "100", 0) + "/log.csv" == plan.train_log(SYN, "100", 0)
    ckpt = plan.generator_checkpoint("tuned")
    assert plan.generator_ddp_spec("tuned") == ckpt.replace("tuned.pt", "tuned.ddp_spec.json")
