# Shared helpers: check the config before any job starts, and derive every path from it.
import re
import sys

from synthscale import warm
from synthscale.clip.schedule import clip_loaders
from synthscale.clip.train import clip_recipe
from synthscale.study.config import ConfigError, check_config
from synthscale.prompts.strategies import STRATEGIES
from synthscale.study.plan import N_REGEX, Plan
from synthscale.study.sources import (
    CLIP_SOURCE_REGEX,
    FILTERED_WILDCARDS,
    SET_WILDCARDS,
    SOURCE_REGEX,
    parse_source,
    synthetic_source,
)

try:
    config.update(check_config(config))
except ConfigError as err:
    sys.exit(f"synthscale: {err}")

PLAN = Plan(config)


wildcard_constraints:
    source=SOURCE_REGEX,
    n=N_REGEX,
    guidance=r"[0-9][0-9.e+-]*",
    k=r"\d{6}",
    generator=r"[A-Za-z0-9_.-]+",
    strategy=r"[A-Za-z0-9_-]+",
    filter=r"[A-Za-z0-9_-]+",
    seed=r"\d+",


def res(stage):
    """Snakemake resources of a stage, from the config (SLURM reads the same keys); the runtime grows
    with each retry (resources.<stage>.retry_runtime_factor)."""
    return PLAN.resources(stage)


def threads(stage):
    return config["resources"][stage]["threads"]


def all_targets():
    targets = []
    if PLAN.supervised:  # the classifier arm (train.supervised)
        targets += [
            PLAN.summary,
            PLAN.scaling,
            PLAN.plot("scaling_loss"),
            PLAN.plot("scaling_top1"),
            PLAN.plot("guidance_strategy"),
            PLAN.findings,
        ]
    targets += [PLAN.sample_grid(s) for s in PLAN.synthetic_grid()]
    targets += quality_targets()
    targets += filter_targets()
    targets += PLAN.clip_targets()
    targets += mix_targets()
    return targets


# --- input functions of the stages ---


def caption_prompts(wildcards):
    """A trained generator learns captions from its own caption strategies' prompt files."""
    gen = PLAN.generator(wildcards.generator)
    return [PLAN.prompts(s) for s in gen["caption_strategies"]]


def generator_input(wildcards):
    return PLAN.generator_inputs(wildcards.generator)


def generator_regex(kind):
    """A wildcard pattern that matches only the names of one kind of generator (never matches if none)."""
    names = [re.escape(g["name"]) for g in config["generators"] if g["kind"] == kind]
    return "|".join(names) or "(?!)"


def finetune_prompts(wildcards):
    """A fine-tuned generator's captions come from its finetune.caption_strategies' prompt files."""
    gen = PLAN.generator(wildcards.generator)
    return [PLAN.prompts(s) for s in gen["finetune"]["caption_strategies"]]


def finetune_base(wildcards):
    return PLAN.finetune_base_inputs(wildcards.generator)


def finetune_base_source(wildcards):
    return PLAN.finetune_base_source(wildcards.generator)


def train_inputs(wildcards):
    """The real manifest, and the first ceil(N/S) shards of a synthetic (or mixed) source's set,
    one per generation job (PLAN.block_heads): the job reads every shard from params.parts
    """
    parts = PLAN.train_parts(wildcards.source, wildcards.n)
    files = PLAN.block_heads([s for p in parts for s in p.get("shards", [])])
    return files + ([PLAN.manifest] if any("split" in p for p in parts) else [])


# --- real + synthetic mixes (rules/mix.smk) ---
MIX_OUTPUTS = PLAN.mix_outputs()


# the mix section as the analysis reads it; full_real_n is left out, because the config check fills it in
# from the prepared manifest when unset, and a changed param would rerun the analysis after preparation
MIX_PARAMS = {k: v for k, v in config["mix"].items() if k != "full_real_n"}


def mix_targets():
    """The mix analysis, when the config schedules mixed runs."""
    return list(MIX_OUTPUTS.values()) if PLAN.mix_runs() else []


# --- the quality stage ---
QCFG = config["quality"]
QREF = PLAN.quality_reference()
QUALITY_OUTPUTS = PLAN.quality_outputs()
COST_OUTPUTS = PLAN.cost_outputs()


def quality_targets():
    """What rule all needs for this stage (the summary pulls in every per-set file)."""
    targets = list(QUALITY_OUTPUTS.values())
    # cost is accuracy per compute hour: it needs the classifier arm
    return targets + (list(COST_OUTPUTS.values()) if PLAN.supervised else [])


def classifier_tables():
    """The classifier arm's tables, read for CAS and per-class slopes; none when train.supervised is off."""
    if not PLAN.supervised:
        return {}
    return {"summary": PLAN.summary, "eval_per_class": PLAN.per_class}


def judge_input(wildcards):
    return PLAN.judge_inputs()


def inception_input(wildcards):
    return [QCFG["inception_weights"]] if QCFG["features"] == "inception" else []


def quality_sets():
    return [(s.generator, float(s.guidance), s.strategy) for s in PLAN.synthetic_grid()]


# --- the filter stage (rules/filter.smk) ---
# no filtered set: no shard outputs either (Snakemake would try every synthetic shard an input names
# against each of them: 2,000 patterns at 2M images made the ImageNet presets' dry-runs take minutes)
FILTER_SHARDS = (
    PLAN.set_shards(FILTERED_WILDCARDS, PLAN.filter_target())
    if PLAN.filtered_grid()
    else []
)
FILTER_OUTPUTS = PLAN.filter_outputs()


def filter_targets():
    """The filter report, when the filter axis names any filter that covers a grid point."""
    return list(FILTER_OUTPUTS.values()) if PLAN.filtered_grid() else []


def filtered_source(wildcards):
    return parse_source(
        synthetic_source(
            wildcards.generator,
            float(wildcards.guidance),
            wildcards.strategy,
            wildcards.filter,
        )
    )


def filter_source_shards(wildcards):
    """The unfiltered set's first shards: the kept target times the filter's overgenerate factor."""
    n = PLAN.filter_input_n(wildcards.filter)
    return PLAN.shards(wildcards.generator, wildcards.guidance, wildcards.strategy, n)


def filter_judge_input(wildcards):
    return PLAN.filter_judge_inputs(wildcards.filter)


def filter_clip_input(wildcards):
    return PLAN.filter_clip_inputs(wildcards.filter)


def name_alternatives(names):
    """A wildcard regex matching exactly these names (one that matches nothing when empty)."""
    return "|".join(re.escape(n) for n in sorted(names)) or "(?!)"


# --- the CLIP stage ---
CLIP = config["clip"]


def clip_train_inputs(wildcards):
    """The first ceil(N/S) shards of the synthetic set a CLIP run uses (none for real)."""
    src = parse_source(wildcards.clip_source)
    if src.kind == "real":
        return []
    syn = src.synthetic
    return PLAN.shards(syn.generator, syn.guidance, syn.strategy, int(wildcards.n))
