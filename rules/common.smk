# Shared helpers: check the config before any job starts and make the Plan, which spells every path.
import sys

from synthscale import warm
from synthscale.study.config import ConfigError, check_config
from synthscale.study.plan import N_REGEX, Plan
from synthscale.study.sources import (
    CLIP_SOURCE_REGEX,
    FILTERED_WILDCARDS,
    SET_WILDCARDS,
    SOURCE_REGEX,
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
    return PLAN.targets()


# --- input functions of the stages: each hands its wildcards to the Plan method of the same name ---


def caption_prompts(wildcards):
    return PLAN.caption_prompts(wildcards.generator)


def generator_input(wildcards):
    return PLAN.generator_inputs(wildcards.generator)


def generator_regex(kind):
    return PLAN.generator_regex(kind)


def generation_spec(wildcards):
    return PLAN.generation_spec(wildcards.generator)


def finetune_prompts(wildcards):
    return PLAN.finetune_prompts(wildcards.generator)


def finetune_base(wildcards):
    return PLAN.finetune_base_inputs(wildcards.generator)


def finetune_base_source(wildcards):
    return PLAN.finetune_base_source(wildcards.generator)


def train_inputs(wildcards):
    return PLAN.train_inputs(wildcards.source, wildcards.n)


# --- real + synthetic mixes (rules/mix.smk) ---
MIX_OUTPUTS = PLAN.mix_outputs()
MIX_PARAMS = PLAN.mix_params()


# --- the quality stage ---
QCFG = config["quality"]
QREF = PLAN.quality_reference()
QUALITY_OUTPUTS = PLAN.quality_outputs()
COST_OUTPUTS = PLAN.cost_outputs()


def classifier_tables():
    return PLAN.classifier_tables()


def judge_input(wildcards):
    return PLAN.judge_inputs()


def inception_input(wildcards):
    return PLAN.inception_inputs()


# --- the filter stage (rules/filter.smk) ---
FILTER_SHARDS = PLAN.filter_shard_outputs()
FILTER_OUTPUTS = PLAN.filter_outputs()


def filter_source_shards(wildcards):
    return PLAN.filter_source_shards(
        wildcards.generator, wildcards.guidance, wildcards.strategy, wildcards.filter
    )


def filter_quality_shards(wildcards):
    return PLAN.filter_quality_shards(
        wildcards.generator, wildcards.guidance, wildcards.strategy, wildcards.filter
    )


def filter_judge_input(wildcards):
    return PLAN.filter_judge_inputs(wildcards.filter)


def filter_clip_input(wildcards):
    return PLAN.filter_clip_inputs(wildcards.filter)


# --- the CLIP stage ---
CLIP = config["clip"]


def clip_train_inputs(wildcards):
    return PLAN.clip_train_inputs(wildcards.clip_source, wildcards.n)
