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

    import timm

    arch = cfg["train"]["arch"]
    if not timm.is_model(arch):
        raise ConfigError(f"config key train.arch: {arch!r} is not a timm model name")

    _check_mix(cfg, workdir)

    res = cfg["resources"]
    base = {**RESOURCE_DEFAULTS, **res.get("default", {})}
    cfg["resources"] = {"default": base} | {s: {**base, **res.get(s, {})} for s in STAGES}
    return cfg


def _check_mix(cfg: dict[str, Any], workdir: Path) -> None:
    """The `mix` section: sets inside the synthetic grid, amounts given, real_n within the real split."""
    mix = cfg["mix"]
    if mix["sets"] != "all":
        gens = {g["name"] for g in cfg["generators"]}
        guidance = {float(g) for g in cfg["guidance"]}
        for i, s in enumerate(mix["sets"]):
            for key, ok, grid in [
                ("generator", s["generator"] in gens, sorted(gens)),
                ("guidance", float(s["guidance"]) in guidance, sorted(guidance)),
                ("strategy", s["strategy"] in cfg["strategies"], cfg["strategies"]),
            ]:
                if not ok:
                    raise ConfigError(
                        f"config key mix.sets.{i}.{key}: {s[key]!r} is not in the synthetic grid "
                        f"(config key {key if key != 'generator' else 'generators'}: {grid})"
                    )
    entries = [e if isinstance(e, dict) else {"n": e} for e in mix["real_n"]]
    values = [e["n"] for e in entries]
    if len(set(values)) != len(values):
        raise ConfigError(f"config key mix.real_n: a value appears twice in {values}")
    manifest = workdir / cfg["results"] / "data" / cfg["dataset"]["name"] / "splits.json"
    prepared = None
    if manifest.exists():
        import json

        prepared = int(json.loads(manifest.read_text())["splits"]["train"]["count"])
    full = mix["full_real_n"]
    if full is not None and prepared is not None and full != prepared:
        raise ConfigError(
            f"config key mix.full_real_n: {full}, but the prepared real train split {manifest} "
            f"holds {prepared} images"
        )
    known = full if full is not None else prepared
    for i, e in enumerate(entries):
        own = "synthetic_n" in e or "synthetic_multiples" in e  # then they replace the section's
        absolute = e.get("synthetic_n", []) if own else mix["synthetic_n"]
        multiples = e.get("synthetic_multiples", []) if own else mix["synthetic_multiples"]
        if not absolute and not multiples:
            raise ConfigError(
                f"config key mix.synthetic_n: mix.real_n {e['n']!r} gets no synthetic amount "
                "(give mix.synthetic_n and/or mix.synthetic_multiples)"
            )
        if e["n"] == "all" and multiples and full is None:
            raise ConfigError(
                "config key mix.full_real_n: needed to turn mix.synthetic_multiples into counts for "
                f"real_n 'all' (the real train split's size{f', {prepared} here' if prepared else ''})"
            )
        if e["n"] != "all" and known is not None and e["n"] > known:
            raise ConfigError(
                f"config key mix.real_n.{i}: {e['n']} is more than the {known} images of the real "
                "train split"
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
