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
STAGES = ("train_generator", "generate", "train", "evaluate", "quality", "clip")


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

    import timm

    arch = cfg["train"]["arch"]
    if not timm.is_model(arch):
        raise ConfigError(f"config key train.arch: {arch!r} is not a timm model name")

    _check_clip(cfg)

    res = cfg["resources"]
    base = {**RESOURCE_DEFAULTS, **res.get("default", {})}
    cfg["resources"] = {"default": base} | {s: {**base, **res.get(s, {})} for s in STAGES}
    return cfg


def _check_clip(cfg: dict[str, Any]) -> None:
    """The CLIP arm: model name or config, caption strategies, sources in the grid, N within reach."""
    c = cfg["clip"]
    if not c["enabled"]:
        return
    from synthscale.prompts import STRATEGIES

    for s in c["caption_strategies"]:
        if s not in STRATEGIES:
            raise ConfigError(
                f"config key clip.caption_strategies: unknown prompt strategy {s!r}; known: {sorted(STRATEGIES)}"
            )
    mc = c["model_config"]
    if mc is None:
        import open_clip

        if c["model"] not in open_clip.list_models():
            raise ConfigError(
                f"config key clip.model: {c['model']!r} is no open_clip model name; give clip.model_config"
            )
    elif isinstance(mc, str) and not Path(mc).is_file():
        raise ConfigError(f"config key clip.model_config: file {mc!r} does not exist")
    elif isinstance(mc, dict) and not {"embed_dim", "vision_cfg", "text_cfg"} <= set(mc):
        raise ConfigError("config key clip.model_config: needs embed_dim, vision_cfg and text_cfg")
    if isinstance(c["sources"], list):
        grid = {(g["name"], float(gs), s) for g in cfg["generators"] for gs in cfg["guidance"]
                for s in cfg["strategies"]}
        for i, s in enumerate(c["sources"]):
            if (s["generator"], float(s["guidance"]), s["strategy"]) not in grid:
                raise ConfigError(
                    f"config key clip.sources[{i}]: {s} is not a synthetic set of the grid "
                    "(generators x guidance x strategies)"
                )
    n_clip = c["n_images"] or cfg["n_images"]
    has_synthetic = c["sources"] != "none"
    if has_synthetic and max(n_clip) > max(cfg["n_images"]):
        raise ConfigError(
            f"config key clip.n_images: {max(n_clip)} is more than the largest n_images "
            f"({max(cfg['n_images'])}), the size of every synthetic set"
        )
    smallest = min(n_clip)
    if c["batch_size"] > smallest:
        raise ConfigError(
            f"config key clip.batch_size: {c['batch_size']} is more than the smallest CLIP N ({smallest})"
        )


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
