"""What a job loads beyond its own wildcards' files (Plan's input methods, which rules/common.smk's
input functions hand on): a generator's folders, a fine-tuned generator's base, the judge's weights,
a filter's scorer. A file the study makes must be an input (so its job runs first); a Hub id or an
outside path must not (Snakemake would look for it as a file)."""
from __future__ import annotations

import copy

import pytest
import yaml

from synthscale.study.config import check_config
from synthscale.study.plan import Plan, local_dir


@pytest.fixture(scope="module")
def cfg():
    with open("config.yaml") as f:
        return check_config(yaml.safe_load(f))


def plan_with(cfg, generators=None, judge=None, train=None, filter_specs=None) -> Plan:
    """A Plan over the checked default config with sections replaced (past the config check)."""
    c = copy.deepcopy(cfg)
    base = {g["name"]: g for g in c["generators"]}
    if generators is not None:
        c["generators"] = [{**base.get(g.pop("like", None), {}), **g} for g in copy.deepcopy(generators)]
    if judge is not None:
        c["quality"]["judge"] = judge
    c["train"].update(train or {})
    c["filter_specs"].update(filter_specs or {})
    return Plan(c)


def test_a_study_made_generator_is_an_input_and_a_pretrained_one_is_not(cfg):
    plan = plan_with(cfg, generators=[
        {"like": "tinydigits", "name": "trained"},
        {"like": "tinydigits-ft", "name": "full-ft", "base": "trained"},
        {"name": "hub", "kind": "pretrained", "source": "org/model"},
    ])  # fmt: skip
    assert plan.generator_inputs("trained") == [plan.generator_dir("trained")]
    assert plan.generator_inputs("full-ft") == [plan.generator_dir("full-ft")]  # full weights: its own folder
    assert plan.generator_inputs("hub") == []


@pytest.mark.parametrize("base, made_here", [("trained", True), ("hub", False), ("org/outside", False)])
def test_a_lora_loads_over_its_base_which_is_an_input_only_when_the_study_makes_it(cfg, base, made_here):
    lora = {"like": "tinydigits-ft", "name": "lora", "base": base}
    plan = plan_with(cfg, generators=[
        {"like": "tinydigits", "name": "trained"},
        {"name": "hub", "kind": "pretrained", "source": "org/model"},
        lora,
    ])  # fmt: skip
    plan.generator("lora")["finetune"] = {**plan.generator("lora")["finetune"], "mode": "lora"}
    own = [plan.generator_dir("lora")]
    assert plan.generator_inputs("lora") == own + ([plan.generator_dir(base)] if made_here else [])
    assert plan.finetune_base_inputs("lora") == ([plan.generator_dir(base)] if made_here else [])
    # what the base loads from: the study's folder, a pretrained generator's source, or the name as given
    expected = {"trained": plan.generator_dir("trained"), "hub": "org/model", "org/outside": "org/outside"}
    assert plan.finetune_base_source("lora") == expected[base]


@pytest.mark.parametrize("judge, real_full, expected", [
    ({"kind": "trained", "recipe": {}}, True, "full-real classifier"),
    ({"kind": "trained", "recipe": {}}, False, "judge"),
    ({"kind": "trained", "recipe": {"epochs": 3}}, True, "judge"),
    ({"kind": "timm", "name": "resnet18", "weights": "weights/r18.safetensors"}, True, "weights/r18.safetensors"),
    ({"kind": "timm", "name": "resnet18"}, True, None),
])  # fmt: skip
def test_the_judge_input_is_the_file_it_loads(cfg, judge, real_full, expected):
    """A trained judge with the training recipe unchanged is the full-real classifier (when that one is
    trained anyway); with its own recipe, its own job's weights; a timm judge, its local file or none."""
    plan = plan_with(cfg, judge=judge, train={"real_full": real_full})
    named = {"full-real classifier": plan.model("real", "all"), "judge": plan.judge_model}
    assert plan.judge_inputs() == ([named.get(expected, expected)] if expected else [])


def test_a_filters_scorer_files_are_its_inputs(cfg, tmp_path):
    clip = {"kind": "clip", "keep_fraction": 0.5, "overgenerate": 2.0}
    plan = plan_with(cfg, filter_specs={
        "local": {**clip, "clip": {"model": f"local-dir:{tmp_path}/clip", "pretrained": None}},
        "weights": {**clip, "clip": {"model": "ViT-B-32", "pretrained": "w/vitb32.bin"}},
    })  # fmt: skip
    assert plan.filter_clip_inputs("local") == [f"{tmp_path}/clip/open_clip_config.json"]
    assert plan.filter_clip_inputs("weights") == ["w/vitb32.bin"]
    assert plan.filter_clip_inputs("conf") == [] and plan.filter_judge_inputs("conf") == plan.judge_inputs()
    assert plan.filter_judge_inputs("local") == []
    assert local_dir("local-dir:a/b") == "a/b" and local_dir("ViT-B-32") is None
