# Shared helpers: check the config before any job starts, and derive every path from it.
import sys

from synthscale import quality as Q
from synthscale.config import ConfigError, check_config
from synthscale.plan import (
    N_REGEX,
    SOURCE_REGEX,
    Plan,
    fmt_guidance,
    parse_source,
    synthetic_source,
)

try:
    config.update(check_config(config))
except ConfigError as err:
    sys.exit(f"synthscale: {err}")

PLAN = Plan(config)
R = config["results"]


wildcard_constraints:
    source=SOURCE_REGEX,
    n=N_REGEX,
    guidance=r"[0-9][0-9.e+-]*",
    k=r"\d{6}",
    generator=r"[A-Za-z0-9_.-]+",
    strategy=r"[A-Za-z0-9_-]+",


def res(stage):
    """Snakemake resources of a stage, from the config (SLURM reads the same keys)."""
    r = config["resources"][stage]
    out = {
        "mem_mb": r["mem_mb"],
        "runtime": r["runtime"],
        "cpus_per_task": r["threads"],
    }
    if r["gpu"]:
        out["gpu"] = r["gpu"]
        if r["gpu_model"]:
            out["gpu_model"] = r["gpu_model"]
    if r["slurm_partition"]:
        out["slurm_partition"] = r["slurm_partition"]
    if r["slurm_extra"]:
        out["slurm_extra"] = r["slurm_extra"]
    return out


def threads(stage):
    return config["resources"][stage]["threads"]


def all_targets():
    targets = [
        PLAN.summary,
        PLAN.scaling,
        PLAN.plot("scaling_loss"),
        PLAN.plot("scaling_top1"),
        PLAN.plot("guidance_strategy"),
        f"{R}/findings.html",
    ]
    targets += [PLAN.sample_grid(s) for s in PLAN.synthetic_grid()]
    targets += quality_targets()
    targets += mix_targets()
    return targets


# --- input functions of the stages ---


def caption_prompts(wildcards):
    """A trained generator learns captions from its own caption strategies' prompt files."""
    gen = PLAN.generator(wildcards.generator)
    return [PLAN.prompts(s) for s in gen["caption_strategies"]]


def generator_input(wildcards):
    """A trained generator's folder; pretrained ones load by Hub id or path, outside the DAG."""
    gen = PLAN.generator(wildcards.generator)
    return PLAN.generator_dir(gen["name"]) if gen["kind"] == "trained" else []


def train_inputs(wildcards):
    """The real manifest, and the first ceil(N/S) shards of a synthetic (or mixed) source's set."""
    parts = PLAN.train_parts(wildcards.source, wildcards.n)
    files = [s for p in parts for s in p.get("shards", [])]
    return files + ([PLAN.manifest] if any("split" in p for p in parts) else [])


# --- real + synthetic mixes (rules/mix.smk) ---
MIX_OUTPUTS = {
    "exchange": f"{R}/mix/exchange_rate.csv",
    "effects": f"{R}/mix/effects.csv",
    "scarce": PLAN.plot("mix_scarce_real"),
    "augment": PLAN.plot("mix_augmentation"),
    "exchange_plot": PLAN.plot("mix_exchange_rate"),
    "findings": f"{R}/mix/findings.html",
}


def mix_targets():
    """The mix analysis, when the config schedules mixed runs."""
    return list(MIX_OUTPUTS.values()) if PLAN.mix_runs() else []


# --- the quality stage ---
QCFG = config["quality"]
DATASET = config["dataset"]["name"]
QUALITY_N = Q.quality_n(config)
QREF = Q.reference_paths(R, DATASET)
QUALITY_OUTPUTS = {
    "table": f"{R}/quality.csv",
    "per_class": f"{R}/quality_per_class.csv",
    "tradeoff": PLAN.plot("quality_tradeoff"),
    "fid_cas": PLAN.plot("quality_fid_cas"),
    "per_class_plot": PLAN.plot("quality_per_class_slope"),
    "findings": f"{R}/quality_findings.html",
}


def quality_targets():
    """What rule all needs for this stage (the summary pulls in every per-set file)."""
    return list(QUALITY_OUTPUTS.values())


def judge_input(wildcards):
    """The judge's weights file: the workflow's own, a local timm file, or none (timm by name)."""
    j = QCFG["judge"]
    if j["kind"] == "trained":
        if not j["recipe"] and config["train"]["real_full"]:
            # the judge's recipe is the training recipe: the full-real classifier is that model
            return [PLAN.model("real", "all")]
        return [Q.judge_model_path(R, DATASET)]
    return [j["weights"]] if j.get("weights") else []


def inception_input(wildcards):
    return [QCFG["inception_weights"]] if QCFG["features"] == "inception" else []


def quality_sets():
    return [(s.generator, float(s.guidance), s.strategy) for s in PLAN.synthetic_grid()]
