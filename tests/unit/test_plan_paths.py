"""Plan spells every path once (issue 17): the plots rule all asks for are the rules' outputs, each rule's
log is its entry in plan.LOGS (the files as the rules spelled them before), a torchrun job's stop file is
the one distributed writes, and shard names come from synthscale.data.shards alone."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

import synthscale.distributed as distributed
from helpers import REPO
from synthscale.data.shards import shard_index, shard_name
from synthscale.io import ddp_stop_file
from synthscale.study.config import check_config
from synthscale.study.plan import LOGS, SCALING_METRICS, Plan
from synthscale.study.sources import FILTERED_WILDCARDS, SET_WILDCARDS


@pytest.fixture(scope="module")
def plan() -> Plan:
    with open(REPO / "config.yaml") as f:
        return Plan(check_config(yaml.safe_load(f)))


def rule_blocks() -> dict[str, str]:
    """Each rule of rules/*.smk by name: its text up to the next rule."""
    blocks = {}
    for smk in sorted((REPO / "rules").glob("*.smk")):
        parts = re.split(r"^rule (\w+):\n", smk.read_text(), flags=re.M)
        blocks.update(zip(parts[1::2], parts[2::2]))
    return blocks


def test_the_scaling_guidance_and_clip_plots_rule_all_asks_for_are_the_rules_outputs(plan):
    """rule plot_scaling's output, its {metric} wildcard filled with each metric its regex allows, is the
    targets' scaling plots; plot_guidance_strategy's and clip_report's plots are the targets' too."""
    assert all(re.fullmatch(plan.scaling_metric_regex, m) for m in SCALING_METRICS)
    assert not re.fullmatch(plan.scaling_metric_regex, "loss|top1")
    pattern = plan.scaling_plot("{metric}")
    targets = plan.targets()
    assert [t for t in targets if t.startswith(pattern.split("{")[0])] == [
        pattern.format(metric=m) for m in SCALING_METRICS
    ]
    assert plan.guidance_plot in targets
    assert (plan.clip_plot in targets) == bool(plan.clip_sources())
    blocks = rule_blocks()
    assert 'PLAN.scaling_plot("{metric}")' in blocks["plot_scaling"]
    assert "metric=PLAN.scaling_metric_regex" in blocks["plot_scaling"]
    assert "PLAN.guidance_plot" in blocks["plot_guidance_strategy"]
    assert "PLAN.clip_plot" in blocks["clip_report"]


def test_every_rule_names_its_own_log_and_every_log_entry_is_a_rule():
    blocks = rule_blocks()
    logged = {name: re.findall(r'PLAN\.log\("(\w+)"', text) for name, text in blocks.items() if "\n    log:\n" in text}
    assert all(found == [name] for name, found in logged.items()), logged
    assert set(logged) == set(LOGS)


def test_the_log_files_are_where_the_rules_spelled_them_before(plan):
    """Plan.log(rule, key) gives the files `{results}/logs/<parts>.log` the rules named part by part."""
    r, arch, run = plan.r, plan.arch, plan.run_key("{source}", "{n}", "{seed}")
    filtered, block = plan.set_key(FILTERED_WILDCARDS), plan.set_key(SET_WILDCARDS, block="{block}")
    before = {
        ("prepare_data", None): "prepare_data",
        ("prompts", "{strategy}"): "prompts/{strategy}",
        ("prompts_model", "{strategy}"): "prompts/{strategy}",
        ("train_generator", "{generator}"): "generators/{generator}",
        ("finetune_generator", "{generator}"): "generators/{generator}",
        ("generate_block", block): f"synthetic/{block}",
        ("train_classifier", run): f"train/{arch}/{run}",
        ("evaluate", "{source}"): f"eval/{arch}/{{source}}",
        ("train_judge", None): f"judge/{plan.dataset}",
        ("quality_reference", None): f"quality/{plan.reference_name}",
        ("quality", plan.set_key(SET_WILDCARDS)): f"quality/{plan.set_key(SET_WILDCARDS)}",
        ("quality_summary", None): "quality/summary",
        ("filter_set", filtered): f"filter/{filtered}",
        ("filter_quality", filtered): f"quality/{filtered}",
        ("filter_report", None): "filter/report",
        ("summary", None): "analysis/summary",
        ("scaling_fits", None): "analysis/scaling_fits",
        ("plot_scaling", "{metric}"): "analysis/plot_scaling_{metric}",
        ("plot_guidance_strategy", None): "analysis/plot_guidance_strategy",
        ("sample_grid", plan.sample_name(SET_WILDCARDS)): f"analysis/samples/{plan.sample_name(SET_WILDCARDS)}",
        ("findings", None): "analysis/findings",
        ("cost", None): "analysis/cost",
        ("mix_exchange_rate", None): "analysis/mix_exchange_rate",
        ("plot_mix", None): "analysis/plot_mix",
        ("mix_findings", None): "analysis/mix_findings",
        ("clip_pairs", "{clip_source}"): "clip/pairs/{clip_source}",
        ("train_clip", "{clip_source}"): "clip/train/{clip_source}",
        ("evaluate_clip", "{clip_source}"): "clip/eval/{clip_source}",
        ("clip_report", None): "clip/report",
    }
    assert {rule for rule, _ in before} == set(LOGS)
    for (rule, key), parts in before.items():
        assert plan.log(rule, key) == f"{r}/logs/{parts}.log"
    with pytest.raises(ValueError, match="takes a key"):
        plan.log("evaluate")
    with pytest.raises(ValueError, match="takes no key"):
        plan.log("summary", "x")
    with pytest.raises(ValueError, match="no log folder"):
        plan.log("not_a_rule")


@pytest.mark.parametrize("spec_of", [
    lambda p: p.train_ddp_spec("real", "100", 0),
    lambda p: p.generator_ddp_spec("g"),
])
def test_a_torchrun_jobs_stop_file_is_the_one_distributed_hands_its_ranks(plan, tmp_path, monkeypatch, spec_of):
    """run_torchrun writes the stop file's path into the spec for rank 0: `<spec>.stopped`, beside
    Plan's spec (io.ddp_stop_file)."""
    monkeypatch.chdir(tmp_path)
    seen = {}

    def launch(cmd, env, settled):
        seen.update(json.loads(Path(cmd[-1]).read_text()))
        return 0, None

    monkeypatch.setattr(distributed, "launch", launch)
    distributed.run_torchrun("some.module", {"threads": 2}, 2, spec_of(plan))
    assert seen["stop_file"] == ddp_stop_file(spec_of(plan)) == spec_of(plan) + ".stopped"


def test_plan_names_shards_and_block_outputs_with_the_shards_module(plan, monkeypatch):
    assert [shard_index(shard_name(k)) for k in (0, 7, 123456, 1234567)] == [0, 7, 123456, 1234567]
    assert shard_index("shard-12.tar") is None and shard_index("classes.csv") is None
    assert shard_index("shard-0000001.tar") is None  # not shard_name(1): a stray file, not a shard
    assert plan.shards("g", 2.0, "classname", 3 * plan.cfg["generation"]["shard_size"])[-1].endswith(shard_name(2))
    monkeypatch.setattr(Plan, "shards_per_job", lambda self: 100)
    outs = plan.block_outputs("F", "0042")
    assert outs == [f"F/{shard_name(k)}" for k in range(4200, 4300)]
    assert plan.block_heads(outs) == outs  # outside the synthetic folder: kept as they are
    syn = [f"{plan.synthetic_dir('g', 2.0, 'classname')}/{shard_name(k)}" for k in range(250)]
    assert plan.block_heads(syn) == [syn[0], syn[100], syn[200]]
