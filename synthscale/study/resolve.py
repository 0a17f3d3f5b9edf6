"""Config resolution: from the schema-validated config (defaults filled), the values the study runs on
that the YAML leaves implicit: the training recipe and input size, every stage's resources in full, the
eval set a key leaves null, the real baselines of a CLIP-only study, and the real train split's size
from the prepared manifest on disk.

Each step fills the config in place and returns it; `resolve_config` runs them all. Nothing here
checks: `synthscale.study.config.check_config` checks what a step needs before it (an unknown recipe)
and everything else after, so each step may assume the keys the schema guarantees.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synthscale.classifier.recipes import resolve_recipe

RESOURCE_DEFAULTS: dict[str, Any] = {
    "threads": 1,
    "mem_mb": 2000,
    "runtime": 20,
    "gpu": 0,
    "gpu_model": None,
    "slurm_partition": None,
    "slurm_extra": None,
    "retry_runtime_factor": 1.5,
    "max_runtime": None,
}
# every rule's resources come from one of these (rules/common.smk: res); `default` serves the rest
STAGES = (
    "prepare", "train_generator", "finetune", "generate", "train", "evaluate", "quality", "prompts", "filter",
    "clip", "judge", "clip_eval", "clip_pairs",
)
# stages that, unnamed, take another stage's resources (one GPU at most): one-process stages that used to share
# a multi-GPU stage, and the CLIP runs' caption shards (one CPU thread: the default resources)
STAGE_PARENTS = {"judge": "train", "clip_eval": "clip", "clip_pairs": "default"}


def resolve_config(cfg: dict[str, Any], workdir: str | Path = ".") -> dict[str, Any]:
    """Every resolution step below, in place, on a schema-validated config whose recipe exists."""
    resolve_train(cfg)
    resolve_eval_set_refs(cfg)
    resolve_full_real_n(cfg, Path(workdir))
    resolve_supervised(cfg)
    resolve_resources(cfg)
    return cfg


def resolve_train(cfg: dict[str, Any]) -> dict[str, Any]:
    """`train` from its named recipe (`train.*` keys over the row); input_size, unset, is the dataset's
    image_size. Raises KeyError for an unknown recipe (config.check_config checks it first)."""
    cfg["train"] = resolve_recipe(cfg["train"])
    if cfg["train"]["input_size"] is None:
        cfg["train"]["input_size"] = cfg["dataset"]["image_size"]
    return cfg


def resolve_eval_set_refs(cfg: dict[str, Any]) -> dict[str, Any]:
    """Keys that name one eval set (quality.reference_set, analysis.eval_set): null means the first of
    `eval_sets`."""
    first = cfg["eval_sets"][0]["name"]
    for section, key in [("quality", "reference_set"), ("analysis", "eval_set")]:
        if cfg[section][key] is None:
            cfg[section][key] = first
    return cfg


def prepared_train_count(cfg: dict[str, Any], workdir: Path) -> tuple[Path, int | None]:
    """The prepared manifest's path, and its real train split's size once it is prepared."""
    from synthscale.study.plan import manifest_path

    manifest = workdir / manifest_path(cfg["results"], cfg["dataset"]["name"])
    if not manifest.exists():
        return manifest, None
    return manifest, int(json.loads(manifest.read_text())["splits"]["train"]["count"])


def resolve_full_real_n(cfg: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """`mix.full_real_n`, the real train split's size: unset, the prepared manifest's once the split is
    prepared (multiples of `all` and the real-only grids use it); a value given is kept (the check
    compares it with the manifest)."""
    if cfg["mix"]["full_real_n"] is None:
        _, prepared = prepared_train_count(cfg, workdir)
        if prepared is not None:
            cfg["mix"]["full_real_n"] = prepared
    return cfg


def resolve_supervised(cfg: dict[str, Any]) -> dict[str, Any]:
    """`train.supervised: false` (a CLIP-only study) trains no classifier, so the real baselines are off."""
    if not cfg["train"]["supervised"]:
        cfg["train"]["real_baseline"] = False
        cfg["train"]["real_full"] = False
    return cfg


def resolve_resources(cfg: dict[str, Any]) -> dict[str, Any]:
    """Every stage's resources in full: `resources.default` over the built-in defaults, a stage's own
    entry over that; a stage with no entry of its own takes its parent's, on one GPU at most."""
    res = cfg["resources"]
    base = {**RESOURCE_DEFAULTS, **res.get("default", {})}
    cfg["resources"] = {"default": base} | {s: {**base, **res.get(s, {})} for s in STAGES}
    for stage, parent in STAGE_PARENTS.items():
        if stage not in res:
            own = cfg["resources"][parent]
            cfg["resources"][stage] = {**own, "gpu": min(own["gpu"], 1)}
    return cfg
