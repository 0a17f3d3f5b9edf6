"""The paper presets plan as they are: every config check passes and the job counts follow the grid
arithmetic of their YAML.

Timing (the 10-second budget) is printed by benchmarks/bench_presets.py, not asserted here."""
from __future__ import annotations

import math
import subprocess

import pytest
import yaml

from helpers import REPO
from helpers.preset_data import PRESETS, dry_run_cmd, preset_workdir
from helpers.workflow import job_counts

from synthscale.study.config import check_config
from synthscale.study.plan import Plan, shards_for


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


def _layered(preset: str) -> dict:
    """The preset's YAML as Snakemake reads it: laid over config.yaml (no Plan, no config check)."""
    from snakemake.utils import update_config

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(cfg, yaml.safe_load((REPO / "configs" / f"{preset}.yaml").read_text()))
    return cfg


def grid_job_counts(cfg: dict) -> dict[str, int]:
    """Jobs per rule by the grid arithmetic the docs state (docs/config.md, docs/methods.md; the check
    itself: docs/imagenet.md), from the config's keys alone (schema defaults where a key is unset),
    independent of synthscale.study.plan:
    - a synthetic set per generator x guidance x strategy, generated up to the largest N it is used
      at (n_images, mix amounts, clip.n_images) in shards of generation.shard_size, written in blocks
      of images_per_job / shard_size shards per generate_block job;
    - classifiers (when train.supervised): each set at each N x train.seeds; real at each N up to mix.full_real_n x
      train.real_seeds; the full real split; per mix.real_n entry a real-only run (if not trained
      already) and each mix set at each synthetic amount (absolute, then multiples of the real count);
    - one evaluation per training source; CLIPs: real, each set, each set + real, at each clip N and
      seed (clip.real_seeds for real, else clip.seeds)."""
    gen, train, mix, clip = cfg["generation"], cfg["train"], cfg.get("mix", {}), cfg.get("clip", {})
    shard, n_images = gen["shard_size"], cfg["n_images"]
    shards_per_job = (gen.get("images_per_job") or shard) // shard
    sets = [(g["name"], float(gs), st) for g in cfg["generators"] for gs in cfg["guidance"] for st in cfg["strategies"]]
    named = lambda spec: sets if spec == "all" else [(s["generator"], float(s["guidance"]), s["strategy"]) for s in spec]  # noqa: E731
    need = {s: max(n_images) for s in sets}  # images each set is generated to
    seeds = len(train.get("seeds", [0]))
    full_real = mix.get("full_real_n")
    runs: dict[tuple, int] = {}  # (source, n) -> models (seeds)
    supervised = train.get("supervised", True)  # false: the CLIP arm only, no classifier at all
    if supervised:
        runs |= {(s, n): seeds for s in sets for n in n_images}
    if supervised and train["real_baseline"]:
        runs |= {("real", n): len(train.get("real_seeds") or train.get("seeds", [0]))
                 for n in n_images if full_real is None or n <= full_real}
    if supervised and train["real_full"]:
        runs[("real", "all")] = seeds
    for entry in mix.get("real_n", []):
        spec = entry if isinstance(entry, dict) else {"n": entry}
        amounts_from = spec if "synthetic_n" in spec or "synthetic_multiples" in spec else mix
        r = spec["n"]
        real = full_real if r == "all" else r
        amounts = set(amounts_from.get("synthetic_n", []))
        amounts |= {max(1, round(m * real)) for m in amounts_from.get("synthetic_multiples", [])}
        if mix.get("real_only_baselines", True):
            runs.setdefault(("real", r), seeds)
        for s in named(mix.get("sets", "all")):
            runs |= {(("mix", r, s), a): seeds for a in amounts}
            need[s] = max(need[s], *amounts)
    counts = {
        "prepare_data": 1,
        "generate_block": sum(math.ceil(math.ceil(n / shard) / shards_per_job) for n in need.values()),
        "train_classifier": sum(runs.values()),
        "evaluate": len({source for source, _ in runs}),
    }
    if clip.get("enabled"):
        clip_ns = clip.get("n_images") or n_images
        syn = [] if clip["sources"] == "none" else named(clip["sources"])
        real_ns = [n for n in clip_ns if full_real is None or n <= full_real] if clip.get("real", True) else []
        sources = (1 if real_ns else 0) + len(syn) * (2 if clip.get("mixed", True) else 1)
        seeds = len(clip.get("seeds") or [0])
        real_seeds = len(clip.get("real_seeds") or clip.get("seeds") or [0])
        counts["train_clip"] = (len(real_ns) * real_seeds
                                + len(syn) * len(clip_ns) * seeds * (2 if clip.get("mixed", True) else 1))
        counts["clip_pairs"] = counts["train_clip"]  # each run's caption shards, a CPU job of its own
        counts["evaluate_clip"] = sources
        assert all(need[s] >= max(clip_ns) for s in syn), "CLIP N beyond n_images: extend the arithmetic"
    return counts


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_job_counts_follow_the_grid_arithmetic(workdir, preset):
    """The dry-run's jobs per rule equal the counts worked out from the preset's YAML (not from Plan),
    and stay within the 10,000 jobs a dry-run may plan."""
    proc = subprocess.run(dry_run_cmd(workdir, preset), capture_output=True, text=True, cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = job_counts(proc.stdout + proc.stderr)
    total = sum(v for k, v in counts.items() if k != "all")
    assert 0 < total <= 10_000, counts
    expected = grid_job_counts(_layered(preset))
    assert {rule: counts.get(rule, 0) for rule in expected} == expected


@pytest.mark.parametrize(
    "preset,expected",
    [  # worked by hand from the YAML (see each preset's comments), a check on the arithmetic itself
        ("fan-imagenet", {"generate_block": 24 * 10, "train_classifier": 24 * 6 + 5 + 1 + 3 + 7, "evaluate": 29}),
        ("imagenet100-sd", {"generate_block": 18 * 12, "train_classifier": 18 * 5 + 5 + 1 + 10, "evaluate": 25}),
        ("azizi-imagenet", {"generate_block": 4 * 39, "train_classifier": 4 * 5 + 3 + 1 + 3, "evaluate": 6}),
        # real at 250k, 500k, 1M (within ImageNet's 1.28M) + one set and its mix at 6 N, one seed each
        ("fan-clip", {"generate_block": 80, "train_classifier": 0, "evaluate": 0, "train_clip": 3 + 6 * 2,
                      "clip_pairs": 3 + 6 * 2, "evaluate_clip": 3}),
    ],
)
def test_grid_arithmetic_by_hand(preset, expected):
    got = grid_job_counts(_layered(preset))
    assert {k: got.get(k, 0) for k in expected} == expected


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

    from synthscale.study.config import timm_model_exists

    names = random.Random(0).sample(timm.list_models(), 200) + ["resnet50.a1_in1k", "resnet18"]
    assert all(timm_model_exists(n) for n in names)
    assert not timm_model_exists("resnet18_but_not_a_model") and not timm_model_exists("../x")
    code = "import sys; from synthscale.study.config import timm_model_exists as e; " \
           "assert e('vit_base_patch16_224') and e('resnet50'); print('timm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


def test_open_clip_names_are_checked_without_importing_open_clip():
    import sys

    import open_clip

    from synthscale.study.config import open_clip_model_exists

    assert all(open_clip_model_exists(n) for n in open_clip.list_models())
    assert not open_clip_model_exists("ViT-B-16-not-a-model") and not open_clip_model_exists("../ViT-B-16")
    code = "import sys; from synthscale.study.config import open_clip_model_exists as e; " \
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


# --- resources: every stage named by the preset, and time limits that cover a computed need ---

# images in the folders the presets prepare (ImageNet-1k train and val, ImageNet-R, ImageNet-Sketch); a
# preset that keeps a class subset is charged the whole folder, an upper bound
FOLDER_IMAGES = {"data/imagenet/train": 1_281_167, "data/imagenet/val": 50_000, "data/imagenet-r": 30_000,
                 "data/imagenet-sketch": 50_889}
# images/s one thread of prepare_data decodes, resizes and re-encodes (an ImageNet JPEG is ~500x375;
# DESIGN.md: decoding alone takes ~2.5 ms): a stated planning rate, on the slow side
PREPARE_PER_THREAD = 100
# rules that start torchrun (or open_clip_train's DDP) and so may hold more than one GPU
MULTI_GPU_RULES = {"train_classifier", "train_clip", "finetune_generator"}
# stages whose jobs resume from a checkpoint (train_classifier, train_clip, finetune_generator)
RESUMING_STAGES = {"train", "clip", "finetune"}


def rule_stages() -> dict[str, str | None]:
    """Each rule of rules/*.smk and the resources stage it reads (`res("stage")`); None for a local rule."""
    import re

    out = {}
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for name, body in re.findall(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", smk.read_text(), re.M | re.S):
            stage = re.search(r"\*\*res\(\"(\w+)\"\)", body)
            assert stage or "localrule: True" in body, f"rule {name} runs as a job without a resources stage"
            out[name] = stage.group(1) if stage else None
    return out


def test_the_rules_read_every_stage_and_only_stages_the_schema_knows():
    from synthscale.study.resolve import STAGES

    stages = rule_stages()
    assert {"prepare_data", "generate_block", "train_judge", "evaluate_clip"} <= set(stages)
    used = {s for s in stages.values() if s}
    assert used <= set(STAGES) | {"default"}
    # one-process rules get their own stage, not a multi-GPU one
    assert stages["train_judge"] != stages["train_classifier"] and stages["evaluate_clip"] != stages["train_clip"]


@pytest.mark.parametrize("preset", PRESETS)
def test_every_stage_has_explicit_resources_that_fit(workdir, preset, monkeypatch):
    from synthscale.study.resolve import STAGES

    raw = yaml.safe_load((REPO / "configs" / f"{preset}.yaml").read_text())["resources"]
    stages = rule_stages()
    # every stage, so no job of this preset (or of an edit of it) runs on config.yaml's digits resources
    missing = (set(STAGES) | {"default"} | {s for s in stages.values() if s}) - set(raw)
    assert not missing, f"{preset}: no resources for {sorted(missing)}"
    for stage, r in raw.items():
        assert {"threads", "mem_mb", "runtime"} <= set(r), f"{preset}: resources.{stage}"
        assert "gpu_model" not in r, f"{preset}: resources.{stage}.gpu_model belongs to the site's profile"
    plan = _plan(workdir, preset, monkeypatch)
    cfg = plan.cfg

    def minutes(stage, attempt=1):
        return plan.resources(stage)["runtime"](None, attempt=attempt)

    # prepare_data reads the train and test folders and every OOD set's root
    ds = cfg["dataset"]
    folders = [ds["train_dir"], ds["test_dir"]] + [e["root"] for e in cfg["eval_sets"] if e.get("root")]
    images = sum(FOLDER_IMAGES[f] for f in folders)
    need = images / (raw["prepare"]["threads"] * PREPARE_PER_THREAD) / 60
    assert minutes("prepare") >= 1.5 * need, f"{preset}: prepare needs ~{need:.0f} min for {images} images"
    # a generation block at the slowest generator's stated throughput, with 20% to spare
    gen = cfg["generation"]
    per_job = gen["images_per_job"] or gen["shard_size"]
    for g in cfg["generators"]:
        assert g["images_per_second"], f"{preset}: generators.{g['name']}.images_per_second is not stated"
        need = per_job / g["images_per_second"] / 60
        assert minutes("generate") >= 1.2 * need, f"{preset}: a block of {g['name']} needs ~{need:.0f} min"
    for rule, stage in stages.items():
        if stage and rule not in MULTI_GPU_RULES:
            assert raw[stage].get("gpu", 0) <= 1, f"{preset}: {rule} runs one process but asks for GPUs"
    for stage in raw:
        if plan.resources(stage).get("gpu"):  # torchrun starts every rank on one node: SLURM's --nodes=1
            assert plan.resources(stage).get("nodes") == 1, f"{preset}: {stage} asks for GPUs on any number of nodes"
    for stage in raw:
        if stage in RESUMING_STAGES:
            # it resumes from its checkpoint: a retry at the same limit goes on; a growing one would pass
            # the partition's maximum. SLURM's SIGTERM comes early enough to save before the kill.
            assert minutes(stage, attempt=4) == minutes(stage), f"{preset}: a retry of {stage} asks for more time"
            assert "--signal=TERM@" in (plan.resources(stage).get("slurm_extra") or ""), f"{preset}: {stage}"
        else:
            assert minutes(stage, attempt=2) > minutes(stage), f"{preset}: a retry of {stage} gets the same limit"


def test_the_slurm_profile_gives_resuming_rules_more_attempts():
    """A training that resumes from its checkpoint may need several allocations at the partition's
    limit: the profile lists the rules of the resuming stages as preemptible, with more retries."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    resuming = {rule for rule, stage in rule_stages().items() if stage in RESUMING_STAGES}
    assert resuming == {"train_classifier", "train_clip", "finetune_generator"}
    assert set(profile["preemptible-rules"]) == resuming
    assert profile["preemptible-retries"] >= 3 > profile["retries"]


def test_fan_clip_trains_real_clips_only_within_the_real_split(workdir, monkeypatch):
    """ImageNet has 1.28M training images: real CLIP runs (and the real part of a mix) stop there, and
    the evaluation asks for no real model past it (Snakemake would otherwise schedule it)."""
    plan = _plan(workdir, "fan-clip", monkeypatch)
    split = plan.cfg["mix"]["full_real_n"]
    assert split == 1_281_167
    real = [int(n) for s, n, _ in plan.clip_runs() if s == "real"]
    mixed_real = round(max(plan.clip_n()) * plan.clip_mix_real_fraction())
    assert len(set(real)) >= 3 and max(real) <= split and mixed_real <= split
    proc = subprocess.run(dry_run_cmd(workdir, "fan-clip"), capture_output=True, text=True, cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert job_counts(proc.stdout + proc.stderr)["train_clip"] == len(plan.clip_runs())
