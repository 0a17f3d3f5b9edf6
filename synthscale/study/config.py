"""Config checking: the JSON schema fills defaults, `synthscale.study.resolve` fills the values the
YAML leaves implicit, then checks that need the world (paths, registries) and the resolved values.

Every problem becomes one `ConfigError` whose message names the offending key, raised before any
job starts. The functions here only check; resolution lives in resolve.py.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from synthscale.clip.schedule import (
    caption_shard_sizes,
    clip_epochs,
    clip_loaders,
    clip_run_steps,
    clip_warmup_steps,
    min_loader_share,
)
from synthscale.study.resolve import prepared_train_count, resolve_config

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"

# a generation block's time limit covers its images at the stated throughput with this margin, plus
# the pipeline's load (generators[].images_per_second; _check_generate_runtime)
GENERATE_RUNTIME_MARGIN = 1.25
GENERATE_LOAD_MINUTES = 10


def generate_minutes(images: int, images_per_second: float) -> int:
    """The time limit (minutes) a generation job of `images` needs at `images_per_second`: the images
    with GENERATE_RUNTIME_MARGIN to spare, plus GENERATE_LOAD_MINUTES to load the pipeline."""
    return math.ceil(GENERATE_RUNTIME_MARGIN * images / images_per_second / 60) + GENERATE_LOAD_MINUTES


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


def timm_model_exists(arch: str) -> bool:
    """`timm.is_model(arch)`, without importing timm (and torch: seconds, on every dry-run) when it can:
    a name that timm's model sources register (`@register_model` then `def <name>(`) exists; any other
    name (aliases, deprecated names, a timm laid out differently) is asked of timm itself."""
    import importlib.util
    import re

    name = arch.split(".", 1)[0]  # a pretrained tag (resnet50.a1_in1k) names the same architecture
    spec = importlib.util.find_spec("timm")
    if name.isidentifier() and spec is not None and spec.submodule_search_locations:
        pattern = re.compile(rf"@register_model[^\n]*\n\s*def {re.escape(name)}\(")
        for folder in spec.submodule_search_locations:
            for source in sorted(Path(folder, "models").glob("*.py")):
                text = source.read_text(encoding="utf-8", errors="replace")
                if f"def {name}(" in text and pattern.search(text):
                    return True
    import timm

    return bool(timm.is_model(arch))


def open_clip_model_exists(name: str) -> bool:
    """`name in open_clip.list_models()`, without importing open_clip (and torch) when it can: the
    names are open_clip's bundled `model_configs/<name>.json`; any other name is asked of open_clip."""
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    if "/" not in name and spec is not None and spec.submodule_search_locations:
        if any(Path(f, "model_configs", f"{name}.json").is_file() for f in spec.submodule_search_locations):
            return True
    import open_clip

    return name in open_clip.list_models()


def check_config(config: dict[str, Any], workdir: str | os.PathLike = ".") -> dict[str, Any]:
    """Validate against the schema (defaults filled), check what the schema alone gives, resolve
    (synthscale.study.resolve), then check the resolved values. Returns the full, resolved config."""
    cfg = validate_schema(config)
    workdir = Path(workdir)
    _check_unique([g["name"] for g in cfg["generators"]], "generators")
    _check_unique([e["name"] for e in cfg["eval_sets"]], "eval_sets")
    if "train" in {e["name"] for e in cfg["eval_sets"]}:
        raise ConfigError("config key eval_sets: 'train' is the training split, not an eval set")
    _check_strategies(cfg)
    _check_prompt_models(cfg, workdir)
    _check_filters(cfg, workdir)
    _check_dataset_paths(cfg, workdir)
    _check_dataset(cfg, workdir)
    _check_pretrained(cfg, workdir)
    _check_generation(cfg["generation"])
    _check_quality(cfg["quality"], workdir)
    _check_finetuned(cfg["generators"], workdir)
    for g in cfg["generators"]:
        if g["kind"] == "trained":
            _check_tiny_arch(g["name"], g["arch"])
    _check_recipe(cfg)
    resolve_config(cfg, workdir)
    _check_train(cfg)
    _check_eval_set_refs(cfg)
    _check_clip(cfg)
    _check_real_counts(cfg, workdir)
    _check_mix(cfg)
    _check_supervised(cfg)
    _check_max_runtimes(cfg)
    _check_generate_runtime(cfg)
    _check_finetune_gpus(cfg)
    _check_clip_ranks(cfg)
    _check_clip_warmup(cfg)
    return cfg


def _check_strategies(cfg: dict[str, Any]) -> None:
    """Every prompt strategy a key names is a rule-based one or a `prompt_models` entry."""
    from synthscale.prompts.strategies import STRATEGIES

    known = sorted(STRATEGIES) + sorted(cfg["prompt_models"])
    for key, names in [("strategies", cfg["strategies"])] + [
        (f"generators.{g['name']}.caption_strategies", g["caption_strategies"])
        for g in cfg["generators"]
    ] + [
        (f"generators.{g['name']}.finetune.caption_strategies", g["finetune"]["caption_strategies"])
        for g in cfg["generators"]
        if g["kind"] == "finetuned"
    ]:
        for s in names:
            if s not in STRATEGIES and s not in cfg["prompt_models"]:
                raise ConfigError(f"config key {key}: unknown prompt strategy {s!r}; known: {known}")


def _check_dataset_paths(cfg: dict[str, Any], workdir: Path) -> None:
    """An imagefolder dataset's folders and class table exist, and so do its eval sets' roots (which
    only an imagefolder dataset has)."""
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


def _check_pretrained(cfg: dict[str, Any], workdir: Path) -> None:
    """A pretrained generator names its source; a local folder is checked to load (a Hub id is not)."""
    for g in cfg["generators"]:
        if g["kind"] == "pretrained":
            if "source" not in g:
                raise ConfigError(f"config key generators.{g['name']}.source: required when pretrained")
            src = g["source"]
            looks_local = src.startswith((".", "/", "~")) or (workdir / src).exists()
            if looks_local:
                _check_generator_folder(g["name"], workdir / src, cfg["generation"]["sampler"])


def _check_recipe(cfg: dict[str, Any]) -> None:
    """`train.recipe` names a row of the recipe table (resolution looks it up)."""
    from synthscale.classifier.recipes import unknown_recipe

    problem = unknown_recipe(cfg["train"])
    if problem:
        raise ConfigError(f"config key train.recipe: {problem}")


def _check_train(cfg: dict[str, Any]) -> None:
    """The resolved `train`: the micro-batch divides the batch over the training GPUs, and the
    architecture is a timm model."""
    gpus = cfg["resources"]["train"]["gpu"] or 1
    micro = cfg["train"]["micro_batch_size"]
    if micro and cfg["train"]["batch_size"] % (micro * max(1, gpus)):
        raise ConfigError(
            f"config key train.micro_batch_size: batch_size {cfg['train']['batch_size']} is not a multiple "
            f"of micro_batch_size {micro} x {max(1, gpus)} GPU(s)"
        )

    arch = cfg["train"]["arch"]
    if not timm_model_exists(arch):
        raise ConfigError(f"config key train.arch: {arch!r} is not a timm model name")


def _check_max_runtimes(cfg: dict[str, Any]) -> None:
    """No stage's resolved runtime exceeds its max_runtime."""
    for stage, r in cfg["resources"].items():
        if r["max_runtime"] and r["runtime"] > r["max_runtime"]:
            raise ConfigError(
                f"config key resources.{stage}.runtime: {r['runtime']} min is over its max_runtime of {r['max_runtime']}"
            )


def _check_finetune_gpus(cfg: dict[str, Any]) -> None:
    """A fine-tuning job on several GPUs (torchrun, one rank a GPU) splits each global batch evenly
    over them."""
    gpus = cfg["resources"]["finetune"]["gpu"]
    for g in cfg["generators"]:
        if gpus > 1 and g["kind"] == "finetuned" and g["finetune"]["batch_size"] % gpus:
            raise ConfigError(
                f"config key generators.{g['name']}.finetune.batch_size: {g['finetune']['batch_size']} is not "
                f"a multiple of resources.finetune.gpu ({gpus}); each GPU trains on an equal share of the batch"
            )


def _check_clip_ranks(cfg: dict[str, Any]) -> None:
    """A CLIP run on resources.clip.gpu ranks (torchrun, one a GPU) with clip.workers loader workers
    each: open_clip_train deals its caption shards (`caption_shard_sizes`) out to these workers x
    ranks loaders, and each batches only its own share, dropping a partial batch each pass. So at
    every CLIP N the smallest share a loader can be dealt (`min_loader_share`) must hold one
    clip.batch_size batch: a loader with less yields none, and under DDP its rank falls out of step
    with the others and the job hangs. Every CLIP run, real, synthetic or mixed, holds N pairs in all."""
    c = cfg["clip"]
    if not c["enabled"]:
        return
    ranks = max(1, cfg["resources"]["clip"]["gpu"])
    loaders = clip_loaders(c, ranks)
    for n in sorted(c["n_images"] or cfg["n_images"]):
        share = min_loader_share(caption_shard_sizes(n, c["shard_size"], loaders), loaders) if n >= loaders else 0
        if share < c["batch_size"]:
            raise ConfigError(
                f"config key clip.batch_size: at N = {n} a loader can be dealt {share} pairs, fewer than one batch "
                f"of {c['batch_size']} ({loaders} loaders: clip.workers {c['workers']}, at least 1, x "
                f"resources.clip.gpu {ranks}; shards of at most clip.shard_size {c['shard_size']}); lower "
                "clip.batch_size or clip.workers, or raise clip.shard_size"
            )


WARMUP_MAX_SHARE = 0.5  # of the smallest CLIP run's steps


def _check_clip_warmup(cfg: dict[str, Any]) -> None:
    """clip.warmup is whole steps (1 or more) or a share of each run's steps (below 1), and it leaves the
    smallest run at least half its steps past the warm-up: open_clip_train's cosine schedule starts
    after it, so a warm-up as long as the run keeps the rate climbing to its end (fan-clip's old
    2000 steps were 98% of its N = 250k run)."""
    c = cfg["clip"]
    if not c["enabled"]:
        return
    if any(a.split("=")[0] in ("--accum-freq", "--accum_freq") for a in c["extra_args"]):
        raise ConfigError(
            "config key clip.extra_args: --accum-freq divides open_clip_train's steps, which the warm-up share, "
            "min_steps and the recorded steps per epoch count without it; raise clip.batch_size or GPUs instead"
        )
    warmup = c["warmup"]
    if warmup >= 1 and warmup != int(warmup):
        raise ConfigError(f"config key clip.warmup: {warmup} is neither whole steps nor a share below 1")
    ranks = max(1, cfg["resources"]["clip"]["gpu"])
    smallest = min(c["n_images"] or cfg["n_images"])
    steps, warm_steps = clip_run_steps(smallest, c, ranks), clip_warmup_steps(smallest, c, ranks)
    if warm_steps > WARMUP_MAX_SHARE * steps:
        raise ConfigError(
            f"config key clip.warmup: {warm_steps} warm-up steps are more than {WARMUP_MAX_SHARE:.0%} of the "
            f"{steps} steps of the smallest CLIP run (N = {smallest}, {clip_epochs(smallest, c, ranks)} epochs of "
            f"clip.batch_size {c['batch_size']} x resources.clip.gpu {ranks}); use at most "
            f"{int(WARMUP_MAX_SHARE * steps)} steps, or a share of each run's steps (e.g. 0.1)"
        )


def _check_generate_runtime(cfg: dict[str, Any]) -> None:
    """A generation block fits its time limit at every generator's stated throughput: a block that
    cannot finish would be killed at the same point on every retry."""
    gen = cfg["generation"]
    images = gen["images_per_job"] or gen["shard_size"]
    res = cfg["resources"]["generate"]
    for g in cfg["generators"]:
        ips = g.get("images_per_second")
        if not ips:
            continue
        need = generate_minutes(images, ips)
        if res["runtime"] < need:
            raise ConfigError(
                f"config key resources.generate.runtime: {res['runtime']} min is under the {need} min a block of "
                f"generation.images_per_job = {images} images needs at generators.{g['name']}.images_per_second "
                f"= {ips} (x{GENERATE_RUNTIME_MARGIN} margin + {GENERATE_LOAD_MINUTES} min to load); raise the "
                "runtime or lower images_per_job"
            )


def _check_dataset(cfg: dict[str, Any], workdir: Path) -> None:
    """The class table reads (WordNet present where it fills names), eval-set class subsets exist."""
    ds = cfg["dataset"]
    if ds["kind"] == "digits":
        from synthscale.data.real import digits_classes

        ids = digits_classes()["id"].tolist()
    else:
        from synthscale.data.real import read_classes_table

        try:
            ids = read_classes_table(workdir / ds["classes_csv"])["id"].tolist()
        except (ValueError, KeyError, FileNotFoundError) as err:
            raise ConfigError(f"config key dataset.classes_csv: {err}") from None
    for e in cfg["eval_sets"]:
        if e.get("classes") == "folders":
            if ds["kind"] != "imagefolder":
                raise ConfigError(f"config key eval_sets.{e['name']}.classes: `folders` needs an imagefolder dataset")
            continue
        unknown = [c for c in e.get("classes", []) if str(c) not in set(ids)]
        if unknown:
            raise ConfigError(
                f"config key eval_sets.{e['name']}.classes: class id(s) {unknown} are not in the class table"
            )


def _check_prompt_models(cfg: dict[str, Any], workdir: Path) -> None:
    """Model-made strategies: no clash with a rule-based name; a local model folder must exist."""
    from synthscale.prompts.models import looks_local
    from synthscale.prompts.strategies import STRATEGIES

    for name, spec in cfg["prompt_models"].items():
        key = f"prompt_models.{name}"
        if name in STRATEGIES:
            raise ConfigError(f"config key {key}: {name!r} is a rule-based strategy's name")
        model = spec["model"]
        if looks_local(model) or (workdir / model).exists():
            path = Path(model).expanduser()
            path = path if path.is_absolute() else workdir / path
            if not (path / "config.json").exists():
                raise ConfigError(
                    f"config key {key}.model: {model!r} is no local transformers model folder "
                    "(no config.json there)"
                )
        rounds, batch = spec.get("max_rounds"), spec.get("batch_size")
        if spec["kind"] != "caption" and rounds and batch and rounds * batch < spec["count"]:
            raise ConfigError(
                f"config key {key}.max_rounds: {rounds} rounds x {batch} texts cannot fill a pool of "
                f"count {spec['count']}; raise it, or leave it null (4 x ceil(count / batch_size))"
            )
        for field in ("template", "format"):
            if field in spec:
                try:
                    spec[field].format(name="x", description="x", hypernym="x", text="x", caption="x")
                except (KeyError, IndexError, ValueError) as e:
                    raise ConfigError(f"config key {key}.{field}: bad template field {e}") from None


def _check_filters(cfg: dict[str, Any], workdir: Path) -> None:
    """The filter axis: `none` plus named specs whose scope lies in the grid and whose scorer exists."""
    from synthscale.clip.names import local_dir

    specs = cfg["filter_specs"]
    if "none" in specs:
        raise ConfigError("config key filter_specs.none: 'none' names the unfiltered sets")
    if "none" not in cfg["filters"]:
        raise ConfigError("config key filters: must include 'none' (the unfiltered sets)")
    for f in cfg["filters"]:
        if f != "none" and f not in specs:
            raise ConfigError(f"config key filters: unknown filter {f!r}; known: none, {sorted(specs)}")
    grid = {
        "generators": {g["name"] for g in cfg["generators"]},
        "guidance": {float(g) for g in cfg["guidance"]},
        "strategies": set(cfg["strategies"]),
    }
    results = Path(cfg["results"])
    # only the filters on the axis: a study that extends another may leave specs unused
    for name, spec in ((f, specs[f]) for f in cfg["filters"] if f != "none"):
        key = f"filter_specs.{name}"
        for axis, values in grid.items():
            for v in spec.get(axis) or []:
                if (float(v) if axis == "guidance" else v) not in values:
                    raise ConfigError(f"config key {key}.{axis}: {v!r} is not in the study's {axis}")
        if spec["kind"] == "clip":
            if "clip" not in spec:
                raise ConfigError(f"config key {key}.clip: required for a clip filter")
            model, weights = spec["clip"]["model"], spec["clip"]["pretrained"]
            if local_dir(model) is not None:
                folder = Path(local_dir(model))
                if not (workdir / folder / "open_clip_config.json").exists():
                    # no rule writes open_clip's local-dir layout (the CLIP arm saves model.safetensors
                    # and model_config.json), so a folder under results/ is no job's output either
                    under_results = folder.parts[: len(results.parts)] == results.parts
                    raise ConfigError(
                        f"config key {key}.clip.model: {str(folder)!r} holds no open_clip_config.json"
                        + (
                            f", and no rule writes one under results ({cfg['results']!r}); point it at a "
                            "folder that holds open_clip_config.json and open_clip_model.safetensors"
                            if under_results
                            else ""
                        )
                    )
            else:
                if not open_clip_model_exists(model):
                    raise ConfigError(f"config key {key}.clip.model: {model!r} is no open_clip model name")
                if not weights:
                    raise ConfigError(
                        f"config key {key}.clip.pretrained: a local weights file is required "
                        "(nothing is downloaded)"
                    )
            if weights and not (workdir / weights).exists():
                raise ConfigError(f"config key {key}.clip.pretrained: {weights!r} does not exist")


def _check_quality(q: dict[str, Any], workdir: Path) -> None:
    """The judge and the FID feature network must be loadable before any job is planned."""
    judge = q["judge"]
    if judge["kind"] == "timm":
        if not judge.get("name"):
            raise ConfigError("config key quality.judge.name: a timm model name is required when quality.judge.kind is timm")
        w = judge.get("weights")
        if w and not (workdir / w).is_file():
            raise ConfigError(f"config key quality.judge.weights: file {w!r} does not exist (nothing is downloaded)")
    if q["features"] == "inception":
        w = q.get("inception_weights")
        if not w:
            raise ConfigError(
                "config key quality.inception_weights: a local Inception weights file is required when "
                "quality.features is inception"
            )
        if not (workdir / w).is_file():
            raise ConfigError(f"config key quality.inception_weights: file {w!r} does not exist (nothing is downloaded)")


def _check_generator_folder(name: str, folder: Path, sampler: str | None) -> None:
    """A local generator folder: a text-to-image pipeline (or a LoRA over one) whose scheduler
    family admits generation.sampler."""
    from synthscale.generation.pipelines import check_local_source

    problem = check_local_source(folder, sampler)
    if problem is not None:
        part, message = problem
        key = f"generators.{name}.source" if part == "source" else "generation.sampler"
        raise ConfigError(f"config key {key}: {message}" + (f" (generator {name})" if part == "sampler" else ""))


def _check_generation(gen: dict[str, Any]) -> None:
    per_job = gen["images_per_job"]
    if per_job is None:
        return
    from synthscale.study.plan import block_digits

    shards, rest = divmod(per_job, gen["shard_size"])
    try:
        if rest:
            raise ValueError
        block_digits(shards)
    except ValueError:
        raise ConfigError(
            f"config key generation.images_per_job: {per_job} must be shard_size ({gen['shard_size']}) "
            "times 1, 10, 100 or 1000 (a job writes a block of consecutive shards)"
        ) from None


def _check_tiny_arch(name: str, arch: dict[str, Any]) -> None:
    """A trained generator's UNet widths split into its norm groups and its attention heads."""
    key = f"config key generators.{name}.arch"
    for i, w in enumerate(arch["unet_widths"]):
        if w % arch["norm_groups"]:
            raise ConfigError(f"{key}.norm_groups: {arch['norm_groups']} does not divide unet width {w}")
        if i and w % min(w, arch["attention_head_dim"]):  # the first block has no attention
            raise ConfigError(
                f"{key}.attention_head_dim: {arch['attention_head_dim']} channels per head do not divide "
                f"unet width {w}"
            )
    if arch["text_width"] % arch["text_heads"]:
        raise ConfigError(f"{key}.text_heads: {arch['text_heads']} does not divide text_width {arch['text_width']}")


def _check_finetuned(generators: list[dict[str, Any]], workdir: Path) -> None:
    """A finetuned generator's base: another generator of the study, a pipeline folder or a Hub id."""
    by_name = {g["name"]: g for g in generators}
    for g in generators:
        key = f"config key generators.{g['name']}"
        if "train_shift" in g and g["kind"] != "trained":
            raise ConfigError(f"{key}.train_shift: only a trained generator has a training shift")
        if g["kind"] != "finetuned":
            if "base" in g:
                raise ConfigError(f"{key}.base: only a finetuned generator has a base")
            continue
        if "base" not in g:
            raise ConfigError(f"{key}.base: required when finetuned")
        base = g["base"]
        if base == g["name"]:
            raise ConfigError(f"{key}.base: a generator cannot be its own base")
        if base in by_name:
            other = by_name[base]
            if other["kind"] == "finetuned" and other["finetune"]["mode"] == "lora":
                raise ConfigError(f"{key}.base: {base!r} holds LoRA weights only; fine-tune its base")
            continue
        looks_local = base.startswith((".", "/", "~")) or (workdir / base).exists()
        if looks_local and not (workdir / base / "model_index.json").exists():
            raise ConfigError(
                f"{key}.base: {base!r} is neither a generator of this study nor a diffusers "
                "pipeline folder (no model_index.json)"
            )
        if not looks_local and base.count("/") != 1:
            raise ConfigError(
                f"{key}.base: {base!r} is neither a generator of this study ({sorted(by_name)}), "
                "a local pipeline folder, nor a Hub id (owner/name)"
            )


def _check_clip(cfg: dict[str, Any]) -> None:
    """The CLIP arm: model name or config, caption strategies, sources in the grid, N within reach."""
    c = cfg["clip"]
    if not c["enabled"]:
        return
    from synthscale.prompts.strategies import STRATEGIES

    for s in c["caption_strategies"]:
        if s not in STRATEGIES:
            raise ConfigError(
                f"config key clip.caption_strategies: unknown prompt strategy {s!r}; known: {sorted(STRATEGIES)}"
            )
    mc = c["model_config"]
    if mc is None:
        if not open_clip_model_exists(c["model"]):
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
    from synthscale.clip.train import check_launcher

    try:
        check_launcher(c["launcher"])
    except ValueError as err:
        raise ConfigError(f"config key clip.launcher: {err}") from None
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


def _check_eval_set_refs(cfg: dict[str, Any]) -> None:
    """Keys that name one eval set (null was resolved to the first of `eval_sets`) name one (the
    prepared splits are named after them, so a typo would fail inside a job)."""
    names = [e["name"] for e in cfg["eval_sets"]]
    for section, key in [("quality", "reference_set"), ("analysis", "eval_set")]:
        value = cfg[section][key]
        if value not in names:
            raise ConfigError(f"config key {section}.{key}: {value!r} is not an eval set; eval_sets: {names}")


def _check_supervised(cfg: dict[str, Any]) -> None:
    """`train.supervised: false` turns the classifier arm off (a CLIP-only study): no classifier is
    trained (resolution turned the real baselines off), so nothing that is read through a classifier
    may be asked for: mixed classifiers (`mix.real_n`) and filtered sets (compared by their CAS)."""
    if cfg["train"]["supervised"]:
        return
    if cfg["mix"]["real_n"]:
        raise ConfigError(
            "config key mix.real_n: mixed sources train classifiers, but train.supervised is false; "
            "set mix.real_n: [] (the CLIP arm mixes through clip.mixed)"
        )
    filters = [f for f in cfg["filters"] if f != "none"]
    if filters:
        raise ConfigError(
            f"config key filters: {filters} are compared by the CAS of classifiers trained on them, "
            "but train.supervised is false; set filters: [none]"
        )


def _check_real_counts(cfg: dict[str, Any], workdir: Path) -> None:
    """Real runs take the first N real images, so N may not pass the real train split. Its size is
    `mix.full_real_n` (resolved, when unset, from the prepared manifest), which must agree with the
    manifest once it exists; the real-only grids stop there (Plan.real_ns), and a CLIP mix's real part
    past it is an error. Before the split is prepared and without `mix.full_real_n`, a too-large N fails
    in its job."""
    manifest, prepared = prepared_train_count(cfg, workdir)
    full = cfg["mix"]["full_real_n"]
    if full is not None and prepared is not None and full != prepared:
        raise ConfigError(
            f"config key mix.full_real_n: {full}, but the prepared real train split {manifest} "
            f"holds {prepared} images"
        )
    c = cfg["clip"]
    if full is not None and c["enabled"] and c["mixed"] and c["sources"] != "none":
        from synthscale.clip.pairs import mix_split

        key = "clip.mix_real_fraction"
        n = mix_split(max(c["n_images"] or cfg["n_images"]), c["mix_real_fraction"])[0]
        if n > full:
            raise ConfigError(f"config key {key}: {n} real images asked for, but the real train split holds {full}")


def _check_mix(cfg: dict[str, Any]) -> None:
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
    # resolved from the prepared split if unset; _check_real_counts ran first, so the two agree
    full = mix["full_real_n"]
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
                "real_n 'all' (the real train split's size; read from the prepared split once it exists)"
            )
        if e["n"] != "all" and full is not None and e["n"] > full:
            raise ConfigError(
                f"config key mix.real_n.{i}: {e['n']} is more than the {full} images of the real "
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
