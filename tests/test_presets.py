"""The paper presets plan as they are: every config check passes and the job counts follow the grid.

Timing (the 10-second budget) is printed by benchmarks/bench_presets.py, not asserted here."""
from __future__ import annotations

import math
import subprocess

import pytest
import yaml

from conftest import new_workdir  # noqa: F401  (keeps the conftest import order)
from preset_data import PRESETS, REPO, dry_run_cmd, preset_workdir
from test_workflow import job_counts

from synthscale.config import check_config
from synthscale.plan import Plan, shards_for


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return preset_workdir(tmp_path_factory.mktemp("presets"))


def _plan(workdir, preset, monkeypatch):
    """The preset as Snakemake sees it: config.yaml with the preset laid over it."""
    from snakemake.utils import update_config

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(cfg, yaml.safe_load((REPO / "configs" / f"{preset}.yaml").read_text()))
    monkeypatch.chdir(workdir)
    return Plan(check_config(cfg, workdir))


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_plans_within_the_scheduler_budget(workdir, preset, monkeypatch):
    plan = _plan(workdir, preset, monkeypatch)
    proc = subprocess.run(dry_run_cmd(workdir, preset), capture_output=True, text=True, cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = job_counts(proc.stdout + proc.stderr)
    total = sum(v for k, v in counts.items() if k != "all")
    assert 0 < total <= 10_000, counts
    gen = plan.cfg["generation"]
    per_job = plan.shards_per_job()
    # one generation job per block of shards of each set, up to its largest N
    blocks = sum(math.ceil(shards_for(plan.max_n, gen["shard_size"]) / per_job) for _ in plan.synthetic_grid())
    assert counts.get("generate_block", 0) == blocks
    assert counts.get("train_classifier", 0) == sum(len(plan.seeds_for(s, n)) for s, n in plan.runs())
    assert counts["prepare_data"] == 1


def test_training_jobs_name_one_shard_per_generation_job(workdir, monkeypatch):
    """A run's inputs are one shard per generate_block job (the job writes its block together); its
    params still carry every shard. This keeps the presets' dry-runs within seconds."""
    plan = _plan(workdir, "fan-imagenet", monkeypatch)
    per_job = plan.shards_per_job()
    assert per_job == 100
    src = plan.synthetic_grid()[0]
    shards = plan.train_parts(src.name, str(plan.max_n))[0]["shards"]
    heads = plan.block_heads(shards)
    n_shards = shards_for(plan.max_n, plan.cfg["generation"]["shard_size"])  # 2M images: 1,000 of 2,000
    assert len(shards) == n_shards and len(heads) == math.ceil(n_shards / per_job) > 1
    assert heads == shards[::per_job], "the first shard of each block"
    outputs = set(plan.block_outputs(plan.synthetic_dir(src.generator, src.guidance, src.strategy), "0000"))
    assert heads[0] in outputs and shards[per_job - 1] in outputs and shards[per_job] not in outputs
    # a partial last block still names its block; other files pass through
    assert plan.block_heads(shards[:150] + ["x/manifest.json"]) == [shards[0], shards[100], "x/manifest.json"]
    from dataclasses import replace

    filtered = [f"{plan.filtered_dir(replace(src, filter='f1'))}/shard-000001.tar"]
    assert plan.block_heads(filtered) == filtered


def test_timm_names_are_checked_without_importing_timm():
    """check_config's train.arch check reads timm's sources (importing timm costs seconds on every
    dry-run); it agrees with timm.is_model, falling back to it for names it does not find."""
    import random
    import sys

    import timm

    from synthscale.config import timm_model_exists

    names = random.Random(0).sample(timm.list_models(), 200) + ["resnet50.a1_in1k", "resnet18"]
    assert all(timm_model_exists(n) for n in names)
    assert not timm_model_exists("resnet18_but_not_a_model") and not timm_model_exists("../x")
    code = "import sys; from synthscale.config import timm_model_exists as e; " \
           "assert e('vit_base_patch16_224') and e('resnet50'); print('timm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


def test_open_clip_names_are_checked_without_importing_open_clip():
    import sys

    import open_clip

    from synthscale.config import open_clip_model_exists

    assert all(open_clip_model_exists(n) for n in open_clip.list_models())
    assert not open_clip_model_exists("ViT-B-16-not-a-model") and not open_clip_model_exists("../ViT-B-16")
    code = "import sys; from synthscale.config import open_clip_model_exists as e; " \
           "assert e('ViT-B-16'); print('open_clip' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("preset", PRESETS)
def test_a_preset_means_the_same_alone_and_over_config_yaml(workdir, preset, monkeypatch):
    """Snakemake lays config.yaml (the digits study) under every --configfile. A preset takes nothing
    from it that changes what runs or how: the same jobs, seeds and resources as when it is read alone
    (`--replace-workflow-config`), and the same values in every section it uses."""
    layered = _plan(workdir, preset, monkeypatch)
    alone = Plan(check_config(yaml.safe_load((REPO / "configs" / f"{preset}.yaml").read_text()), workdir))

    def jobs(p: Plan):
        return ([(s, n, p.seeds_for(s, n)) for s, n in p.runs()], p.clip_runs(), p.filtered_grid(),
                p.mix_runs(), p.synthetic_grid())

    assert jobs(layered) == jobs(alone)
    unused = {"filter_specs"} if alone.cfg["filters"] == ["none"] else set()
    unused |= set() if alone.cfg["clip"]["enabled"] else {"clip"}
    unused |= set() if alone.mix_runs() else {"mix"}
    assert layered.cfg["mix"]["full_real_n"] == alone.cfg["mix"]["full_real_n"], "the real-only grid stops there"
    for key in sorted(set(layered.cfg) | set(alone.cfg)):
        if key in unused:
            continue
        if key == "prompt_models":  # only the strategies the preset uses
            for s in alone.cfg["strategies"]:
                assert layered.cfg[key].get(s) == alone.cfg[key].get(s), f"{key}.{s}"
            continue
        assert layered.cfg.get(key) == alone.cfg.get(key), key
