# Shared helpers: check the config before any job starts, and derive every path from it.
import sys

from synthscale.config import ConfigError, check_config
from synthscale.plan import N_REGEX, SOURCE_REGEX, Plan, parse_source

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
    out = {"mem_mb": r["mem_mb"], "runtime": r["runtime"], "cpus_per_task": r["threads"]}
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
    return targets
