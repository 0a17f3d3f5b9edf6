"""The study's file targets: one path per grid point, derived from the checked config alone.

Sources of training data are named like paths; their grammar (building and parsing the names) is
`synthscale.study.sources`.
"""

from __future__ import annotations

import inspect
import math
import os
import re
from pathlib import Path
from typing import Any

from synthscale.classifier.recipes import judge_recipe
from synthscale.clip.names import local_dir
from synthscale.clip.schedule import clip_loaders
from synthscale.clip.train import clip_recipe
from synthscale.data.shards import SHARD_DIGITS, shard_index, shard_name, shard_pattern
from synthscale.prompts.strategies import STRATEGIES
from synthscale.study.sources import (
    FILTERED_WILDCARDS,
    SYNTHETIC_PREFIX,
    Source,
    clip_mixed_source,
    guidance_part,
    mix_source,
    parse_source,
    set_name,
)


def shards_per_job(generation: dict[str, Any]) -> int:
    """Shards one generation job writes: images_per_job / shard_size (null: one shard per job)."""
    per_job = generation.get("images_per_job") or generation["shard_size"]
    return per_job // generation["shard_size"]


def block_digits(per_job: int) -> int:
    """A block of 10**d shards is the shards whose SHARD_DIGITS-digit index shares its first SHARD_DIGITS - d digits, so
    block b holds shards b * 10**d ... (b + 1) * 10**d - 1 and shard names do not depend on blocks."""
    d = len(str(per_job)) - 1
    if per_job != 10**d or d >= SHARD_DIGITS:
        raise ValueError(f"shards per job must be 1, 10, 100, 1000, ...; got {per_job}")
    return d


def shards_for(n: int, shard_size: int) -> int:
    """Nested N: a set of N images is the first ceil(N / S) shards."""
    if n < 1 or shard_size < 1:
        raise ValueError(f"N and shard size must be positive, got {n} and {shard_size}")
    return -(-n // shard_size)


def retry_runtime(minutes: int, factor: float = 1.0, cap: int | None = None):
    """A Snakemake resource callable: `minutes` on the first attempt, times `factor` per retry, at most
    `cap`, so a job killed at its time limit is not resubmitted with the same one."""

    def runtime(wildcards, attempt: int = 1) -> int:
        grown = math.ceil(minutes * factor ** (attempt - 1))
        return min(grown, cap) if cap else grown

    # Snakemake reads the signature of a resource callable for every job: computed once, it costs nothing
    runtime.__signature__ = inspect.signature(runtime)
    return runtime


def stage_resources(res: dict[str, Any]) -> dict[str, Any]:
    """A stage's Snakemake resources from its checked `resources.<stage>` entry (SLURM reads the same
    keys): the runtime grows with the attempt; a GPU model is named only by the site's profile or here. A
    GPU job asks for one node (SLURM's --nodes=1): torchrun here starts its ranks on one node only, so
    `--gpus=8` without it could spread the GPUs over nodes the ranks never reach."""
    out = {
        "mem_mb": res["mem_mb"],
        "runtime": retry_runtime(res["runtime"], res["retry_runtime_factor"], res["max_runtime"]),
        "cpus_per_task": res["threads"],
    }
    if res["gpu"]:
        out["gpu"] = res["gpu"]
        out["nodes"] = 1
        if res["gpu_model"]:
            out["gpu_model"] = res["gpu_model"]
    for key in ("slurm_partition", "slurm_extra"):
        if res[key]:
            out[key] = res[key]
    return out


N_REGEX = r"\d+|all"

# --- grid points as every path of theirs spells them (outputs, logs, benchmarks), and read back ---
N_PREFIX, SEED_PREFIX, BLOCK_PREFIX = "n", "s", "block-"


def run_key(source: str, n: str | int, seed: int | str) -> str:
    """A trained model's grid point in its paths: `{source}/n{N}/s{seed}` (a classifier's or a CLIP's
    folder, the job's log and benchmark). Snakemake wildcards work: `run_key("{source}", "{n}", "{seed}")`."""
    return f"{source}/{N_PREFIX}{n}/{SEED_PREFIX}{seed}"


def parse_run_key(key: str) -> tuple[str, str, int | None] | None:
    """run_key read back: (source, N label, seed), or None when `key` is no run's. The seed is None in
    a key without one (benchmarks written before seeds were)."""
    *head, last = key.split("/")
    seed = None
    if head and last.startswith(SEED_PREFIX) and last[len(SEED_PREFIX) :].isdigit():
        seed, (*head, last) = int(last[len(SEED_PREFIX) :]), head
    n = last[len(N_PREFIX) :]
    if not (head and last.startswith(N_PREFIX) and re.fullmatch(N_REGEX, n)):
        return None
    try:
        parse_source("/".join(head))
    except ValueError:
        return None
    return "/".join(head), n, seed


def set_key(src: Source, block: str | None = None) -> str:
    """A synthetic set's grid point in its paths: `{generator}/g{guidance}/{strategy}[/f-{filter}]` (its
    folders, its quality files, its jobs' logs and benchmarks), then `block-{block}` for the block of
    shards one generation job writes. A Source of wildcards works: `set_key(SET_WILDCARDS, "{block}")`."""
    key = set_name(src.generator, src.guidance, src.strategy, src.filter)
    return key if block is None else f"{key}/{BLOCK_PREFIX}{block}"


SET_KEY_PARTS = 3  # generator, g{guidance}, strategy


def split_set_key(key: str) -> tuple[Source, str] | None:
    """set_key read back as (the unfiltered set the key begins with, the rest as spelled: a filter's
    `f-{filter}`, a block's `block-{block}`), or None when the key begins with no set."""
    parts = key.split("/")
    try:
        src = parse_source(SYNTHETIC_PREFIX + "/".join(parts[:SET_KEY_PARTS]))
    except ValueError:
        return None
    return src, "/".join(parts[SET_KEY_PARTS:])


def name_alternatives(names) -> str:
    """A wildcard regex matching exactly these names (one that matches nothing when empty)."""
    return "|".join(re.escape(n) for n in sorted(names)) or "(?!)"


def manifest_path(results: str, dataset: str) -> str:
    """The prepared real dataset's manifest under a results folder (Plan.manifest; the config check)."""
    return f"{results}/data/{dataset}/splits.json"


BENCHMARK_SUFFIX = ".tsv"

# Each rule's log (Snakemake's `log:`) under `{results}/logs/`, by rule name (Plan.log): `{key}` is the
# job's grid point as the rule hands it (wildcards), `{arch}`, `{dataset}` and `{reference}` the study's
# classifier architecture, dataset and real reference set (Plan.reference_name).
LOGS = {
    "prepare_data": "prepare_data",
    "prompts": "prompts/{key}",
    "prompts_model": "prompts/{key}",
    "train_generator": "generators/{key}",
    "finetune_generator": "generators/{key}",
    "generate_block": "synthetic/{key}",
    "train_classifier": "train/{arch}/{key}",
    "evaluate": "eval/{arch}/{key}",
    "train_judge": "judge/{dataset}",
    "quality_reference": "quality/{reference}",
    "quality": "quality/{key}",
    "quality_summary": "quality/summary",
    "filter_set": "filter/{key}",
    "filter_quality": "quality/{key}",
    "filter_report": "filter/report",
    "summary": "analysis/summary",
    "scaling_fits": "analysis/scaling_fits",
    "plot_scaling": "analysis/plot_scaling_{key}",
    "plot_guidance_strategy": "analysis/plot_guidance_strategy",
    "sample_grid": "analysis/samples/{key}",
    "findings": "analysis/findings",
    "cost": "analysis/cost",
    "mix_exchange_rate": "analysis/mix_exchange_rate",
    "plot_mix": "analysis/plot_mix",
    "mix_findings": "analysis/mix_findings",
    "clip_pairs": "clip/pairs/{key}",
    "train_clip": "clip/train/{key}",
    "evaluate_clip": "clip/eval/{key}",
    "clip_report": "clip/report",
}

SCALING_METRICS = ("loss", "top1")  # the scaling plots' metrics (rule plot_scaling's {metric})


def benchmark_parts(path: str | os.PathLike, root: str | os.PathLike) -> list[str]:
    """[rule, part, ...] of a benchmark file under `root` (Plan.benchmarks_dir): Plan.benchmark read back."""
    return list(Path(path).relative_to(root).with_suffix("").parts)


class Plan:
    """Paths and target lists of one study."""

    run_key = staticmethod(run_key)
    set_key = staticmethod(set_key)

    def __init__(self, cfg: dict[str, Any]):
        self.cfg = cfg
        self.r = cfg["results"]
        self.dataset = cfg["dataset"]["name"]
        self.arch = cfg["train"]["arch"]

    # --- data, prompts, generators ---
    @property
    def manifest(self) -> str:
        return manifest_path(self.r, self.dataset)

    @property
    def classes(self) -> str:
        return f"{self.r}/data/{self.dataset}/classes.csv"

    def prompts(self, strategy: str) -> str:
        return f"{self.r}/prompts/{self.dataset}/{strategy}.jsonl"

    def prompt_model(self, strategy: str) -> dict[str, Any]:
        """A model-made prompt strategy's entry of `prompt_models` (its job's params)."""
        return self.cfg["prompt_models"][strategy]

    def generator(self, name: str) -> dict[str, Any]:
        for g in self.cfg["generators"]:
            if g["name"] == name:
                return g
        raise KeyError(f"no generator named {name!r} in the config")

    def generator_regex(self, kind: str) -> str:
        """A wildcard regex matching the names of this study's generators of one kind (none: nothing)."""
        return name_alternatives(g["name"] for g in self.cfg["generators"] if g["kind"] == kind)

    def prompt_regex(self, model: bool = False) -> str:
        """A wildcard regex matching the prompt strategies a rule makes: the rule-based ones (STRATEGIES,
        rule prompts) or, with `model`, the config's `prompt_models` (rule prompts_model)."""
        return name_alternatives(self.cfg["prompt_models"] if model else STRATEGIES)

    def generation_spec(self, name: str) -> dict[str, Any]:
        """A generator's entry as a generation job's params: without images_per_second, which only sizes
        the job's time limit (the config check), so changing it reruns nothing."""
        return {k: v for k, v in self.generator(name).items() if k != "images_per_second"}

    def caption_prompts(self, name: str) -> list[str]:
        """A trained generator learns captions from its own caption strategies' prompt files."""
        return [self.prompts(s) for s in self.generator(name)["caption_strategies"]]

    def finetune_prompts(self, name: str) -> list[str]:
        """A fine-tuned generator's captions come from its finetune.caption_strategies' prompt files."""
        return [self.prompts(s) for s in self.generator(name)["finetune"]["caption_strategies"]]

    def generation_batch_size(self, name: str) -> int:
        """Images per pipeline call of a generator: its own batch_size, else generation.batch_size."""
        return self.generator(name).get("batch_size") or self.cfg["generation"]["batch_size"]

    def resources(self, stage: str) -> dict[str, Any]:
        """Snakemake resources of a stage (`resources.<stage>`; rules/common.smk: res)."""
        return stage_resources(self.cfg["resources"][stage])

    def generator_dir(self, name: str) -> str:
        return f"{self.r}/generators/{name}"

    def generator_checkpoint(self, name: str) -> str:
        """A fine-tuning job's resumable state (kept outside the generator's folder, which is its output)."""
        return f"{self.r}/checkpoints/generators/{name}.pt"

    def generator_ddp_spec(self, name: str) -> str:
        """The spec a multi-GPU fine-tuning job hands its torchrun ranks, beside its checkpoint (and,
        beside the spec, rank 0's stop note: synthscale.io.ddp_stop_file)."""
        return f"{self.r}/checkpoints/generators/{name}.ddp_spec.json"

    def generator_inputs(self, name: str) -> list[str]:
        """The folders a generator loads from that this study makes: its own (trained or fine-tuned),
        and a LoRA's base when the study trains or fine-tunes that base too (LoRA weights load over
        it); none for a pretrained generator, which loads by Hub id or path, outside the DAG."""
        gen = self.generator(name)
        if gen["kind"] == "pretrained":
            return []
        dirs = [self.generator_dir(name)]
        if gen["kind"] == "finetuned" and gen["finetune"]["mode"] == "lora" and self._made_here(gen["base"]):
            dirs.append(self.generator_dir(gen["base"]))
        return dirs

    def finetune_base_source(self, name: str) -> str:
        """What a fine-tuned generator's base loads from: a study generator's folder (trained or
        fine-tuned here) or source (pretrained), else the Hub id or path as the config gives it."""
        base = self.generator(name)["base"]
        other = {g["name"]: g for g in self.cfg["generators"]}.get(base)
        if other is None:
            return base
        return other["source"] if other["kind"] == "pretrained" else self.generator_dir(base)

    def finetune_base_inputs(self, name: str) -> list[str]:
        """The base's folder when this study makes the base (a job's output), else nothing."""
        base = self.generator(name)["base"]
        return [self.generator_dir(base)] if self._made_here(base) else []

    def _made_here(self, name: str) -> bool:
        """A generator of this study that a job trains or fine-tunes (not a pretrained one)."""
        return any(g["name"] == name and g["kind"] != "pretrained" for g in self.cfg["generators"])

    # --- synthetic sets ---
    def synthetic_dir(self, generator: str, guidance: float | str, strategy: str) -> str:
        return f"{self.r}/synthetic/{set_name(generator, guidance, strategy)}"

    def shards(self, generator: str, guidance: float | str, strategy: str, n: int) -> list[str]:
        folder = self.synthetic_dir(generator, guidance, strategy)
        k = shards_for(n, self.cfg["generation"]["shard_size"])
        return [f"{folder}/{shard_name(i)}" for i in range(k)]

    def shards_per_job(self) -> int:
        return shards_per_job(self.cfg["generation"])

    def images_per_job(self) -> int:
        """Images one generate_block job writes: a block of shards, each full."""
        return self.shards_per_job() * self.cfg["generation"]["shard_size"]

    def block_outputs(self, folder: str, block: str = "{block}") -> list[str]:
        """The shard files one generation job writes: block `block` of the set in `folder` (both may
        be Snakemake wildcards); shard k of the set is in block k // shards_per_job."""
        d = block_digits(self.shards_per_job())
        return [f"{folder}/{shard_pattern(f'{block}{j:0{d}d}' if d else block)}" for j in range(10**d)]

    def block_heads(self, paths: list[str]) -> list[str]:
        """One shard per generation job among `paths`: the first shard of each block of an
        unfiltered synthetic set (other paths kept as they are).

        A generate_block job writes its block's shards together, so naming one of them as an input
        makes Snakemake wait for (and rerun) the whole job; the consumer reads the full list from
        its params. With blocks of 100 shards a 2M-image run names 20 files, not 2,000, which keeps
        the dry-run of the ImageNet presets within seconds. One shard per job: `paths` unchanged."""
        per_job = self.shards_per_job()
        if per_job == 1:
            return list(paths)
        synthetic = f"{self.r}/synthetic/"
        out, seen = [], set()
        for p in paths:
            folder, _, name = p.rpartition("/")
            k = shard_index(name)
            if not (p.startswith(synthetic) and k is not None and "/f-" not in folder):
                out.append(p)
                continue
            block = (folder, k // per_job)
            if block not in seen:
                seen.add(block)
                out.append(p)
        return out

    @property
    def block_regex(self) -> str:
        return rf"\d{{{SHARD_DIGITS - block_digits(self.shards_per_job())}}}"

    def synthetic_grid(self) -> list[Source]:
        return [
            Source("synthetic", g["name"], float(gs), s)
            for g in self.cfg["generators"]
            for gs in self.cfg["guidance"]
            for s in self.cfg["strategies"]
        ]

    # --- filtered sets (synthscale.quality.filtering) ---
    def filter_spec(self, name: str) -> dict[str, Any]:
        return self.cfg["filter_specs"][name]

    def filter_judge_inputs(self, name: str) -> list[str]:
        """A judge filter's judge weights (`judge_inputs`); nothing for other filters."""
        return self.judge_inputs() if self.filter_spec(name)["kind"] == "judge" else []

    def filter_clip_inputs(self, name: str) -> list[str]:
        """A CLIP filter's local files: its weights, and a `local-dir:` model's open_clip_config.json
        (files the user provides: no rule writes them, and the config check refuses a missing one)."""
        spec = self.filter_spec(name)
        if spec["kind"] != "clip":
            return []
        model, weights = spec["clip"]["model"], spec["clip"]["pretrained"]
        folder = local_dir(model)
        return ([weights] if weights else []) + ([f"{folder}/open_clip_config.json"] if folder else [])

    def filter_applies(self, name: str, src: Source) -> bool:
        spec = self.filter_spec(name)
        return (
            (spec.get("generators") is None or src.generator in spec["generators"])
            and (spec.get("guidance") is None or float(src.guidance) in [float(g) for g in spec["guidance"]])
            and (spec.get("strategies") is None or src.strategy in spec["strategies"])
        )

    def filtered_grid(self) -> list[Source]:
        """Every filtered set: each unfiltered set times each filter of the axis that covers it."""
        return [
            Source("synthetic", s.generator, s.guidance, s.strategy, f)
            for s in self.synthetic_grid()
            for f in self.cfg.get("filters", ["none"])
            if f != "none" and self.filter_applies(f, s)
        ]

    def filtered_dir(self, src: Source) -> str:
        return f"{self.r}/synthetic/{set_key(src)}"

    def filter_target(self) -> int:
        """Images a filtered set keeps: full shards up to the largest N, like an unfiltered set."""
        s = self.cfg["generation"]["shard_size"]
        return shards_for(self.max_n, s) * s

    def filter_input_n(self, filter: str) -> int:
        """Images generated to filter from: the kept target times the filter's overgenerate factor."""
        return int(-(-self.filter_target() * self.filter_spec(filter)["overgenerate"] // 1))

    def filter_source_shards(self, generator: str, guidance: float | str, strategy: str, filter: str) -> list[str]:
        """What a filter job reads: the unfiltered set's first shards, the kept target times the filter's
        overgenerate factor."""
        return self.shards(generator, guidance, strategy, self.filter_input_n(filter))

    def filter_shard_outputs(self) -> list[str]:
        """A filter job's shards, as wildcard patterns (FILTERED_WILDCARDS). None when no filtered set is
        planned: Snakemake would try every synthetic shard an input names against each of them (2,000
        patterns at 2M images made the ImageNet presets' dry-runs take minutes)."""
        return self.set_shards(FILTERED_WILDCARDS, self.filter_target()) if self.filtered_grid() else []

    def filtered_source(self, generator: str, guidance: float | str, strategy: str, filter: str) -> Source:
        """The filtered set of a synthetic set's wildcards (filter `none`: the set itself)."""
        return Source("synthetic", generator, float(guidance), strategy, None if filter == "none" else filter)

    def filter_quality_shards(self, generator: str, guidance: float | str, strategy: str, filter: str) -> list[str]:
        """The filtered set's shards its quality job measures (`quality_n` images)."""
        return self.set_shards(self.filtered_source(generator, guidance, strategy, filter), self.quality_n)

    def filter_targets(self) -> list[str]:
        """The filter report, when the filter axis names any filter that covers a grid point."""
        return list(self.filter_outputs().values()) if self.filtered_grid() else []

    def filter_counts(self, src: Source) -> str:
        return f"{self.filtered_dir(src)}/counts.json"

    def set_shards(self, src: Source, n: int) -> list[str]:
        """The first ceil(N/S) shards of a set, filtered or not."""
        if src.filter is None:
            return self.shards(src.generator, src.guidance, src.strategy, n)
        k = shards_for(n, self.cfg["generation"]["shard_size"])
        return [f"{self.filtered_dir(src)}/{shard_name(i)}" for i in range(k)]

    def filter_runs(self) -> list[tuple[str, str]]:
        """Every (filtered source, n) pair to train."""
        return [(s.name, str(n)) for s in self.filtered_grid() for n in self.cfg["n_images"]]

    def filter_quality_json(self, src: Source) -> str:
        """A filtered set's quality: beside its unfiltered set's, in a folder named like that file."""
        return f"{self.r}/quality/{set_key(src)}.json"

    def filter_quality_per_class(self, src: Source) -> str:
        return self.filter_quality_json(src)[: -len(".json")] + "_per_class.csv"

    def filtered_sources(self) -> list[str]:
        """Every filtered set by source name, in `filtered_grid` order (the filter report's rows)."""
        return [s.name for s in self.filtered_grid()]

    def filter_report_inputs(self) -> dict[str, list[str]]:
        """What the filter report reads, one list per kind of file, each entry the filtered set of the
        same position in `filtered_sources`: its counts and quality, its unfiltered set's quality, and
        the CAS tables (evaluation metrics) of both."""
        grid = self.filtered_grid()
        return {
            "counts": [self.filter_counts(s) for s in grid],
            "quality": [self.filter_quality_json(s) for s in grid],
            "base_quality": [self.quality_json(s.generator, s.guidance, s.strategy) for s in grid],
            "cas": [self.eval_csv(s.name) for s in grid],
            "base_cas": [self.eval_csv(s.unfiltered.name) for s in grid],
        }

    def filter_outputs(self) -> dict[str, str]:
        """The filter report's table, plot and findings."""
        return {
            "table": f"{self.r}/filter.csv",
            "plot": self.plot("filter"),
            "findings": f"{self.r}/filter_findings.html",
        }

    @property
    def filter_cas_n(self) -> str:
        """The N whose CAS the filter report compares, as the summary's `n` column spells it: the largest."""
        return str(self.max_n)

    @property
    def max_n(self) -> int:
        return max(self.cfg["n_images"])

    # --- training and evaluation ---
    @property
    def supervised(self) -> bool:
        """Whether the classifier arm runs (`train.supervised`)."""
        return bool(self.cfg["train"].get("supervised", True))

    def runs(self) -> list[tuple[str, str]]:
        """Every (source, n) pair to train: synthetic at each N, real at each N, real at all (none
        when `train.supervised` is false: the config check then turns the real runs off too)."""
        runs = []
        if self.supervised:
            runs = [(s.name, str(n)) for s in self.synthetic_grid() for n in self.cfg["n_images"]]
        if self.cfg["train"]["real_baseline"]:
            runs += [("real", str(n)) for n in self.real_ns(self.cfg["n_images"])]
        if self.cfg["train"]["real_full"]:
            runs.append(("real", "all"))
        return runs + [r for r in self.mix_runs() if r not in runs]

    def real_ns(self, ns: list[int]) -> list[int]:
        """The N values a real-only run can take: those within the real train split, when its size is
        given (`mix.full_real_n`); past it, "real at N" would be the whole split again under another name."""
        known = self.real_count("all")
        return [n for n in ns if known is None or n <= known]

    # --- real + synthetic mixes (config section `mix`) ---
    def mix_sets(self) -> list[Source]:
        """The synthetic sets that are mixed with real data: `mix.sets`, or the whole grid."""
        sets = self.cfg.get("mix", {}).get("sets", "all")
        if sets == "all":
            return self.synthetic_grid()
        return [Source("synthetic", s["generator"], float(s["guidance"]), s["strategy"]) for s in sets]

    def mix_real(self) -> list[tuple[int | str, list[int], list[float]]]:
        """(R, absolute amounts, multiples) per mix.real_n entry.

        An entry that names amounts of its own (either key) replaces the section's amounts.
        """
        mix = self.cfg.get("mix", {})
        out = []
        for e in mix.get("real_n", []):
            spec = e if isinstance(e, dict) else {"n": e}
            own = "synthetic_n" in spec or "synthetic_multiples" in spec
            amounts = spec if own else mix
            out.append(
                (
                    spec["n"],
                    list(amounts.get("synthetic_n", [])),
                    list(amounts.get("synthetic_multiples", [])),
                )
            )
        return out

    def real_count(self, real_n: int | str) -> int | None:
        """Real images behind a real_n value; None for `all` when mix.full_real_n is unset."""
        if real_n == "all":
            return self.cfg.get("mix", {}).get("full_real_n")
        return int(real_n)

    def mix_amounts(self, real_n: int | str, absolute: list[int], multiples: list[float]) -> list[int]:
        """Synthetic amounts added to real_n: the absolute ones, then multiples of the real count."""
        amounts = list(absolute)
        if multiples:
            count = self.real_count(real_n)
            if count is None:
                raise ValueError("mix.full_real_n is needed for multiples of real_n 'all'")
            amounts += [max(1, round(m * count)) for m in multiples]
        return list(dict.fromkeys(amounts))

    def mix_outputs(self) -> dict[str, str]:
        """The mix analysis's tables, plots and findings."""
        return {
            "exchange": f"{self.r}/mix/exchange_rate.csv",
            "effects": f"{self.r}/mix/effects.csv",
            "scarce": self.plot("mix_scarce_real"),
            "augment": self.plot("mix_augmentation"),
            "exchange_plot": self.plot("mix_exchange_rate"),
            "findings": f"{self.r}/mix/findings.html",
        }

    def mix_targets(self) -> list[str]:
        """The mix analysis, when the config schedules mixed runs."""
        return list(self.mix_outputs().values()) if self.mix_runs() else []

    def mix_params(self) -> dict[str, Any]:
        """The mix section as the analysis reads it. full_real_n is left out: the config check fills it in
        from the prepared manifest when unset, and a changed param would rerun the analysis after
        preparation."""
        return {k: v for k, v in self.cfg["mix"].items() if k != "full_real_n"}

    def mix_runs(self) -> list[tuple[str, str]]:
        """Every mixed (source, n), n being the synthetic amount, plus the real-only run at each real_n."""
        runs = []
        for r, absolute, multiples in self.mix_real():
            if self.cfg["mix"].get("real_only_baselines", True):
                runs.append(("real", str(r)))
            amounts = self.mix_amounts(r, absolute, multiples)
            runs += [(mix_source(r, s.name), str(n)) for s in self.mix_sets() for n in amounts]
        return runs

    @property
    def seeds(self) -> list[int]:
        """Replicate training seeds (`train.seeds`): one model per (source, N, seed)."""
        return [int(s) for s in self.cfg["train"].get("seeds", [0])]

    def seeds_for(self, source: str, n: str | None = None) -> list[int]:
        """Replicate seeds of one (source, N): `train.real_seeds` (when set) for the real-only runs on
        the N grid (n_images, where real's slope is fitted), `train.seeds` for every other run
        (synthetic, mixed, the full real set, a mix's real-only baseline off the grid). n None = any
        grid N."""
        real = self.cfg["train"].get("real_seeds")
        on_grid = n is None or n in {str(v) for v in self.cfg["n_images"]}
        if real and on_grid and parse_source(source).kind == "real":
            return [int(s) for s in real]
        return self.seeds

    def train_parts(self, source: str, n: str) -> list[dict[str, Any]]:
        """The training data of a run as parts: real first, then synthetic.

        A part is {"shards": [...], "limit": N or None} (the first N images of its shards), or, for
        the real split whose shard names the manifest holds, {"split": "train", "limit": ...}.
        """
        src = parse_source(source)
        if src.kind == "real":
            return [{"split": "train", "limit": None if n == "all" else int(n)}]
        syn_n = self.max_n if n == "all" else int(n)
        part = {"shards": self.set_shards(src.synthetic, syn_n), "limit": None if n == "all" else syn_n}
        if src.kind == "synthetic":
            return [part]
        real = {"split": "train", "limit": None if src.real_n == "all" else int(src.real_n)}
        return [real, part]

    def train_inputs(self, source: str, n: str) -> list[str]:
        """A classifier job's input files: the first shard of each generation job among its synthetic
        (or mixed) set's first ceil(N/S) shards (`block_heads`; the job reads every shard from its
        `train_parts` params), then the real manifest when a part is the real split."""
        parts = self.train_parts(source, n)
        files = self.block_heads([s for p in parts for s in p.get("shards", [])])
        return files + ([self.manifest] if any("split" in p for p in parts) else [])

    def train_dir(self, source: str, n: str, seed: int | str | None = None) -> str:
        """A trained classifier's folder; seed None = the source's first replicate seed."""
        s = self.seeds_for(source, n)[0] if seed is None else seed
        return f"{self.r}/train/{self.arch}/{run_key(source, n, s)}"

    def model(self, source: str, n: str, seed: int | str | None = None) -> str:
        """A trained classifier's weights; seed None = the source's first replicate seed."""
        return f"{self.train_dir(source, n, seed)}/model.safetensors"

    def train_log(self, source: str, n: str, seed: int | str | None = None) -> str:
        return f"{self.train_dir(source, n, seed)}/log.csv"

    def train_checkpoint(self, source: str, n: str, seed: int | str) -> str:
        """A classifier job's resumable state, beside its model (removed once the model is written)."""
        return f"{self.train_dir(source, n, seed)}/checkpoint.pt"

    def train_ddp_spec(self, source: str, n: str, seed: int | str) -> str:
        """The spec a multi-GPU classifier job hands its torchrun ranks, beside its model (and, beside
        the spec, rank 0's stop note: synthscale.io.ddp_stop_file)."""
        return f"{self.train_dir(source, n, seed)}/ddp_spec.json"

    def train_mix(self) -> dict[str, Any]:
        """How a classifier's loader combines a mixed run's parts: `mix.mode` and `mix.synthetic_prob`
        (the rest of the mix section plans runs, and changing it retrains none)."""
        return {k: self.cfg["mix"][k] for k in ("mode", "synthetic_prob")}

    def seed_runs(self, source: str) -> list[tuple[str, int]]:
        """Every (n_label, seed) model of one source, N-major."""
        return [(n, s) for n in self.n_labels(source) for s in self.seeds_for(source, n)]

    def models(self, source: str) -> list[str]:
        """Every classifier of one source in `seed_runs` order: what its evaluation job reads, zipped
        there with `model_n_labels` and `model_seeds`."""
        return [self.model(source, n, s) for n, s in self.seed_runs(source)]

    def model_n_labels(self, source: str, clip: bool = False) -> list[str]:
        """The N label of each of `models(source)` (with `clip`, of `clip_models(source)`), in its order."""
        return [n for n, _ in (self.clip_seed_runs(source) if clip else self.seed_runs(source))]

    def model_seeds(self, source: str, clip: bool = False) -> list[int]:
        """The seed of each of `models(source)` (with `clip`, of `clip_models(source)`), in its order."""
        return [s for _, s in (self.clip_seed_runs(source) if clip else self.seed_runs(source))]

    def sources(self) -> list[str]:
        """Training sources in run order, each once."""
        return list(dict.fromkeys(s for s, _ in self.runs()))

    def n_labels(self, source: str) -> list[str]:
        """The training sizes of one source ("all" for the whole real split)."""
        return [n for s, n in self.runs() + self.filter_runs() if s == source]

    # one evaluation job per source covers all its N: evaluation takes a second, its imports many
    def eval_csv(self, source: str) -> str:
        return f"{self.r}/eval/{self.arch}/{source}/metrics.csv"

    def eval_per_class(self, source: str) -> str:
        return f"{self.r}/eval/{self.arch}/{source}/per_class.csv"

    def all_eval(self) -> list[str]:
        return [self.eval_csv(s) for s in self.sources()]

    def all_eval_per_class(self) -> list[str]:
        return [self.eval_per_class(s) for s in self.sources()]

    def eval_set_names(self) -> list[str]:
        """The evaluation sets (`eval_sets`) by name, in config order: every model meets each."""
        return [e["name"] for e in self.cfg["eval_sets"]]

    def eval_set_ood(self) -> dict[str, bool]:
        """Whether each evaluation set is out of distribution, by name (the analysis tables' `ood`)."""
        return {e["name"]: e["ood"] for e in self.cfg["eval_sets"]}

    # --- analysis ---
    @property
    def summary(self) -> str:
        return f"{self.r}/summary.csv"

    @property
    def per_class(self) -> str:
        return f"{self.r}/per_class.csv"

    @property
    def scaling(self) -> str:
        return f"{self.r}/scaling.csv"

    @property
    def findings(self) -> str:
        return f"{self.r}/findings.html"

    def plot(self, name: str) -> str:
        return f"{self.r}/plots/{name}.png"

    def scaling_plot(self, metric: str) -> str:
        """A metric's scaling plot (rule plot_scaling; a wildcard works: `scaling_plot("{metric}")`)."""
        return self.plot(f"scaling_{metric}")

    @property
    def scaling_metric_regex(self) -> str:
        """The metrics with a scaling plot, as a wildcard regex."""
        return name_alternatives(SCALING_METRICS)

    @property
    def guidance_plot(self) -> str:
        """Accuracy over guidance x prompt strategy (rule plot_guidance_strategy)."""
        return self.plot("guidance_strategy")

    def sample_name(self, src: Source) -> str:
        """A synthetic set's sample grid by name, as its plot's and its log's paths spell it."""
        return f"{src.generator}_g{guidance_part(src.guidance)}_{src.strategy}"

    def sample_grid(self, src: Source) -> str:
        return self.plot(f"samples/{self.sample_name(src)}")

    def sample_shard(self, src: Source) -> str:
        """The shard a set's sample grid shows: its first."""
        return self.set_shards(src, 1)[0]

    def targets(self) -> list[str]:
        """What `rule all` builds: the classifier arm's tables, plots and findings (train.supervised),
        a sample grid per synthetic set, then the quality, filter, CLIP and mix stages' outputs."""
        targets = []
        if self.supervised:
            targets += [
                self.summary,
                self.scaling,
                *(self.scaling_plot(m) for m in SCALING_METRICS),
                self.guidance_plot,
                self.findings,
            ]
        targets += [self.sample_grid(s) for s in self.synthetic_grid()]
        targets += self.quality_targets()
        targets += self.filter_targets()
        targets += self.clip_targets()
        targets += self.mix_targets()
        return targets

    # --- logs (Snakemake's `log:` files) ---
    def log(self, rule: str, key: str | None = None) -> str:
        """A job's log: `{results}/logs/` then its rule's entry in LOGS, with `key` (the job's grid point,
        named like `benchmark`'s parts; Snakemake wildcards work) where the entry has one, `.log`.
        `PLAN.log("evaluate", "{source}")` is `{results}/logs/eval/{arch}/{source}.log`."""
        if rule not in LOGS:
            raise ValueError(f"no log folder for rule {rule!r}; add it to synthscale.study.plan.LOGS")
        layout = LOGS[rule]
        if ("{key}" in layout) != (key is not None):
            has = "a" if "{key}" in layout else "no"
            raise ValueError(f"rule {rule}'s log {layout!r} takes {has} key; got {key!r}")
        name = layout.format(key=key, arch=self.arch, dataset=self.dataset, reference=self.reference_name)
        return f"{self.r}/logs/{name}.log"

    # --- benchmarks (Snakemake's `benchmark:` files, read by the cost table) ---
    def benchmark(self, rule: str, *parts: str) -> str:
        """`{results}/benchmarks/{rule}/{part}/.../{last part}.tsv`.

        Name the job's grid point as its outputs do, so the cost table (`parse_benchmark`) reads the
        file back to it: a model's `run_key(source, n, seed)`, a source alone, a synthetic set's
        `set_key(src)` (a generation job's with its block), or a name of its own (a generator, a
        dataset). Snakemake wildcards work: `PLAN.benchmark("train_classifier",
        PLAN.run_key("{source}", "{n}", "{seed}"))`.
        """
        if not parts:
            raise ValueError("a benchmark path needs at least one part (a wildcard or a name)")
        return f"{self.benchmarks_dir}/{rule}/" + "/".join(str(p) for p in parts) + BENCHMARK_SUFFIX

    @property
    def benchmarks_dir(self) -> str:
        return f"{self.r}/benchmarks"

    # --- quality of the synthetic sets ---
    @property
    def judge_model(self) -> str:
        """The workflow-trained judge: one per dataset, shared by every synthetic set."""
        return f"{self.r}/judge/{self.dataset}/model.safetensors"

    def judge_inputs(self) -> list[str]:
        """The judge's weights file: the workflow's own (the full-real classifier when the judge takes
        the training recipe unchanged and that classifier is trained anyway), a local timm file, or
        none (timm by name)."""
        j = self.cfg["quality"]["judge"]
        if j["kind"] == "trained":
            if not j["recipe"] and self.cfg["train"]["real_full"]:
                return [self.model("real", "all")]
            return [self.judge_model]
        return [j["weights"]] if j.get("weights") else []

    def judge_recipe(self) -> dict[str, Any]:
        """The trained judge's recipe (synthscale.classifier.recipes.judge_recipe): what its training
        reads of `train`, with `quality.judge.recipe` laid over it."""
        return judge_recipe(self.cfg["train"], self.cfg["quality"]["judge"].get("recipe"))

    @property
    def judge_log(self) -> str:
        return f"{self.r}/judge/{self.dataset}/log.csv"

    @property
    def quality_n(self) -> int:
        """Images per set to measure: `quality.n_images` (a cap, as FID-10k), at most the largest N,
        so the quality rule reads only shards the study generates anyway."""
        return min(int(self.cfg["quality"]["n_images"]), self.max_n)

    def quality_json(self, generator: str, guidance: float | str, strategy: str) -> str:
        return f"{self.r}/quality/{set_name(generator, guidance, strategy)}.json"

    def quality_shards(self, generator: str, guidance: float | str, strategy: str) -> list[str]:
        """The shards of a synthetic set its quality job measures (`quality_n` images)."""
        return self.shards(generator, guidance, strategy, self.quality_n)

    def quality_per_class(self, generator: str, guidance: float | str, strategy: str) -> str:
        return self.quality_json(generator, guidance, strategy)[: -len(".json")] + "_per_class.csv"

    @property
    def reference_name(self) -> str:
        """The real reference set by name, as its quality files' and its log's paths spell it."""
        return f"real_{self.dataset}"

    def quality_reference(self) -> dict[str, str]:
        """The real reference set's cached FID features, and its own quality."""
        base = f"{self.r}/quality/{self.reference_name}"
        return {"npz": f"{base}.npz", "json": f"{base}.json", "per_class": f"{base}_per_class.csv"}

    def quality_outputs(self) -> dict[str, str]:
        """The quality summary's table, plots and findings."""
        return {
            "table": f"{self.r}/quality.csv",
            "per_class": f"{self.r}/quality_per_class.csv",
            "tradeoff": self.plot("quality_tradeoff"),
            "fid_cas": self.plot("quality_fid_cas"),
            "per_class_plot": self.plot("quality_per_class_slope"),
            "findings": f"{self.r}/quality_findings.html",
        }

    def quality_jsons(self) -> list[str]:
        """Every synthetic set's quality, in grid order (what the quality summary reads)."""
        return [self.quality_json(s.generator, s.guidance, s.strategy) for s in self.synthetic_grid()]

    def quality_per_class_files(self) -> list[str]:
        return [self.quality_per_class(s.generator, s.guidance, s.strategy) for s in self.synthetic_grid()]

    def quality_targets(self) -> list[str]:
        """The quality summary's outputs (which pull in every per-set file), and the cost table's when the
        classifier arm runs: cost is accuracy per compute hour."""
        return list(self.quality_outputs().values()) + (list(self.cost_outputs().values()) if self.supervised else [])

    def classifier_tables(self) -> dict[str, str]:
        """The classifier arm's tables the quality summary reads (CAS, per-class slopes); none when
        train.supervised is off."""
        return {"summary": self.summary, "eval_per_class": self.per_class} if self.supervised else {}

    def inception_inputs(self) -> list[str]:
        """The local Inception weights when FID runs in Inception features (`quality.features`)."""
        q = self.cfg["quality"]
        return [q["inception_weights"]] if q["features"] == "inception" else []

    # --- cost ---
    def cost_outputs(self) -> dict[str, str]:
        return {
            "table": f"{self.r}/cost.csv",
            "plot": self.plot("cost"),
            "findings": f"{self.r}/cost_findings.html",
        }
    # --- CLIP (Fan et al.'s CLIP arm): sources real, synthetic/..., mixed/... (synthetic + real) ---
    def clip_synthetic(self) -> list[Source]:
        """The synthetic sets that CLIPs train on (`clip.sources`: all, none or a list)."""
        sel = self.cfg["clip"]["sources"]
        if sel == "all":
            return self.synthetic_grid()
        if sel == "none":
            return []
        return [Source("synthetic", s["generator"], float(s["guidance"]), s["strategy"]) for s in sel]

    def clip_n(self) -> list[int]:
        return list(self.cfg["clip"]["n_images"] or self.cfg["n_images"])

    def clip_mix_real_fraction(self) -> float:
        """The real share of a synthetic + real CLIP run's N pairs (`clip.mix_real_fraction`)."""
        return float(self.cfg["clip"].get("mix_real_fraction", 0.5))

    def clip_seeds_for(self, source: str) -> list[int]:
        """Replicate seeds of a CLIP source: `clip.real_seeds` (when set) for real, else `clip.seeds`."""
        c = self.cfg["clip"]
        if source == "real" and c.get("real_seeds"):
            return [int(s) for s in c["real_seeds"]]
        return [int(s) for s in c.get("seeds", [0])]

    def clip_seed_runs(self, source: str) -> list[tuple[str, int]]:
        """Every (n_label, seed) CLIP of one source, N-major."""
        ns = self.real_ns(self.clip_n()) if source == "real" else self.clip_n()
        return [(str(n), s) for n in ns for s in self.clip_seeds_for(source)]

    def clip_sources(self) -> list[str]:
        """CLIP training sources in report order: real, each synthetic set, then each synthetic + real."""
        if not self.cfg["clip"]["enabled"]:
            return []
        syn = [s.name for s in self.clip_synthetic()]
        out = ["real"] if self.cfg["clip"]["real"] else []
        out += syn
        if self.cfg["clip"]["mixed"]:
            out += [clip_mixed_source(s) for s in syn]
        return out

    def clip_models(self, source: str) -> list[str]:
        """Every CLIP of one source in `clip_seed_runs` order: what its evaluation job reads, zipped
        there with `model_n_labels(source, clip=True)` and `model_seeds(source, clip=True)`."""
        return [self.clip_model(source, n, s) for n, s in self.clip_seed_runs(source)]

    def clip_runs(self) -> list[tuple[str, str, int]]:
        return [(s, n, seed) for s in self.clip_sources() for n, seed in self.clip_seed_runs(s)]

    def clip_train_inputs(self, clip_source: str, n: str | int) -> list[str]:
        """The first ceil(N/S) shards of the synthetic set a CLIP run's pairs come from (none for real).

        Every shard, not `block_heads`: the clip_pairs job reads its shard list from this input (a
        classifier job reads its list from params). Both wait for the same generation jobs."""
        src = parse_source(clip_source)
        if src.kind == "real":
            return []
        syn = src.synthetic
        return self.shards(syn.generator, syn.guidance, syn.strategy, int(n))

    def clip_dir(self, source: str, n: str | int, seed: int | str) -> str:
        return f"{self.r}/clip/{run_key(source, n, seed)}"

    def clip_pairs(self, source: str, n: str | int, seed: int | str) -> str:
        """The run's image-text shards (rule clip_pairs; removed once its CLIP is trained)."""
        return f"{self.clip_dir(source, n, seed)}/pairs"

    def clip_model(self, source: str, n: str | int, seed: int | str) -> str:
        return f"{self.clip_dir(source, n, seed)}/model.safetensors"

    def clip_model_config(self, source: str, n: str | int, seed: int | str) -> str:
        return f"{self.clip_dir(source, n, seed)}/model_config.json"

    def clip_work_dir(self, source: str, n: str | int, seed: int | str) -> str:
        """A CLIP job's open_clip_train folder (its logs and resumable epoch checkpoints), beside its
        model (removed once the model is written)."""
        return f"{self.clip_dir(source, n, seed)}/work"

    def clip_train_log(self, source: str, n: str | int, seed: int | str) -> str:
        """open_clip_train's log of a CLIP job, kept beside its model."""
        return f"{self.clip_dir(source, n, seed)}/train.log"

    def clip_eval_csv(self, source: str) -> str:
        return f"{self.r}/clip/eval/{source}/metrics.csv"

    def all_clip_eval(self) -> list[str]:
        """Every CLIP source's zero-shot metrics, in `clip_sources` order (the CLIP report's)."""
        return [self.clip_eval_csv(s) for s in self.clip_sources()]

    def clip_reference_set(self) -> str:
        """The evaluation set the CLIP findings compare on: the first of `eval_sets`."""
        return self.eval_set_names()[0]

    @property
    def clip_summary(self) -> str:
        return f"{self.r}/clip/summary.csv"

    @property
    def clip_scaling(self) -> str:
        return f"{self.r}/clip/scaling.csv"

    @property
    def clip_table(self) -> str:
        return f"{self.r}/clip/zero_shot.csv"

    @property
    def clip_plot(self) -> str:
        """The CLIP arm's zero-shot loss against N (rule clip_report)."""
        return self.plot("clip_scaling")

    @property
    def clip_recipe(self) -> dict[str, Any]:
        """The CLIP runs' training recipe (synthscale.clip.train.clip_recipe of the `clip` section)."""
        return clip_recipe(self.cfg["clip"])

    @property
    def clip_loaders(self) -> int:
        """The data loaders of a CLIP run on `resources.clip.gpu` ranks (the pairs job shards for them)."""
        return clip_loaders(self.cfg["clip"], self.cfg["resources"]["clip"]["gpu"])

    @property
    def clip_findings(self) -> str:
        return f"{self.r}/clip/findings.html"

    def clip_targets(self) -> list[str]:
        """What rule all needs from the CLIP arm (empty when it is off)."""
        if not self.clip_sources():
            return []
        return [self.clip_summary, self.clip_scaling, self.clip_table, self.clip_plot, self.clip_findings]
