"""Config checking: the JSON schema fills defaults, then checks that need the world (paths, registries).

Every problem becomes one `ConfigError` whose message names the offending key, raised before any
job starts.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"

RESOURCE_DEFAULTS: dict[str, Any] = {
    "threads": 1,
    "mem_mb": 2000,
    "runtime": 20,
    "gpu": 0,
    "gpu_model": None,
    "slurm_partition": None,
    "slurm_extra": None,
}
STAGES = ("train_generator", "generate", "train", "evaluate", "quality")


class ConfigError(ValueError):
    """A config problem, with a message that names the key."""


def _with_defaults(cls):
    validate_props = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_props(validator, properties, instance, schema)

    return jsonschema.validators.extend(cls, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft7Validator)


def load_schema(path: str | os.PathLike = SCHEMA_PATH) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top>"


def validate_schema(config: dict[str, Any], schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fill defaults and check types; raise ConfigError naming the first bad key."""
    config = copy.deepcopy(config)
    validator = _Validator(schema or load_schema())
    # defaults of nested objects need a second pass once their parents exist
    for _ in range(2):
        errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
        if errors:
            e = errors[0]
            raise ConfigError(f"config key {_key(e.absolute_path)}: {e.message}")
    return config


def check_config(config: dict[str, Any], workdir: str | os.PathLike = ".") -> dict[str, Any]:
    """Validate against the schema, then check names, paths and registries. Returns the full config."""
    cfg = validate_schema(config)
    workdir = Path(workdir)
    _check_unique([g["name"] for g in cfg["generators"]], "generators")
    _check_unique([e["name"] for e in cfg["eval_sets"]], "eval_sets")
    if "train" in {e["name"] for e in cfg["eval_sets"]}:
        raise ConfigError("config key eval_sets: 'train' is the training split, not an eval set")

    from synthscale.prompts import STRATEGIES

    for key, names in [("strategies", cfg["strategies"])] + [
        (f"generators.{g['name']}.caption_strategies", g["caption_strategies"])
        for g in cfg["generators"]
    ]:
        for s in names:
            if s not in STRATEGIES:
                raise ConfigError(
                    f"config key {key}: unknown prompt strategy {s!r}; known: {sorted(STRATEGIES)}"
                )

    ds = cfg["dataset"]
    if ds["kind"] == "imagefolder":
        for k in ("train_dir", "test_dir", "classes_csv"):
            if k not in ds:
                raise ConfigError(f"config key dataset.{k}: required for an imagefolder dataset")
            if not (workdir / ds[k]).exists():
                raise ConfigError(f"config key dataset.{k}: path {ds[k]!r} does not exist")
        for e in cfg["eval_sets"]:
            if "root" in e and not (workdir / e["root"]).exists():
                raise ConfigError(
                    f"config key eval_sets.{e['name']}.root: path {e['root']!r} does not exist"
                )
    elif any("root" in e for e in cfg["eval_sets"]):
        raise ConfigError("config key eval_sets.root: only an imagefolder dataset has eval roots")

    for g in cfg["generators"]:
        if g["kind"] == "pretrained":
            if "source" not in g:
                raise ConfigError(f"config key generators.{g['name']}.source: required when pretrained")
            src = g["source"]
            looks_local = src.startswith((".", "/", "~")) or (workdir / src).exists()
            if looks_local and not (workdir / src / "model_index.json").exists():
                raise ConfigError(
                    f"config key generators.{g['name']}.source: {src!r} is no diffusers pipeline "
                    "folder (no model_index.json)"
                )

    from synthscale.recipes import resolve_recipe

    try:
        cfg["train"] = resolve_recipe(cfg["train"])
    except KeyError as err:
        raise ConfigError(f"config key train.recipe: {err.args[0]}") from None
    if cfg["train"]["input_size"] is None:
        cfg["train"]["input_size"] = cfg["dataset"]["image_size"]
    res_cfg = cfg.get("resources", {})
    gpus = {**RESOURCE_DEFAULTS, **res_cfg.get("default", {}), **res_cfg.get("train", {})}["gpu"] or 1
    micro = cfg["train"]["micro_batch_size"]
    if micro and cfg["train"]["batch_size"] % (micro * max(1, gpus)):
        raise ConfigError(
            f"config key train.micro_batch_size: batch_size {cfg['train']['batch_size']} is not a multiple "
            f"of micro_batch_size {micro} x {max(1, gpus)} GPU(s)"
        )

    import timm

    arch = cfg["train"]["arch"]
    if not timm.is_model(arch):
        raise ConfigError(f"config key train.arch: {arch!r} is not a timm model name")

    res = cfg["resources"]
    base = {**RESOURCE_DEFAULTS, **res.get("default", {})}
    cfg["resources"] = {"default": base} | {s: {**base, **res.get(s, {})} for s in STAGES}
    return cfg


def _check_unique(names: list[str], key: str) -> None:
    seen = set()
    for n in names:
        if n in seen:
            raise ConfigError(f"config key {key}: name {n!r} appears twice")
        seen.add(n)


def load_config(path: str | os.PathLike, workdir: str | os.PathLike = ".") -> dict[str, Any]:
    """Read a YAML config file and check it."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}".splitlines()[0]) from e
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping")
    return check_config(raw, workdir)
