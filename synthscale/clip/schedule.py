"""The steps of a CLIP run, as open_clip_train counts them: its loaders (workers on each rank), the caption
shards dealt out to them, steps an epoch, epochs, and the warm-up. Plain arithmetic with no imports
beyond the standard library, so the config check uses it before any job runs."""

from __future__ import annotations

import math
from typing import Any, Sequence


def clip_loaders(recipe: dict[str, Any], gpus: int = 1) -> int:
    """The data loaders of a CLIP run: `workers` a rank (one when 0, the rank itself) on `gpus` ranks."""
    return max(1, int(recipe["workers"])) * max(1, int(gpus))


def caption_shard_sizes(n_pairs: int, shard_size: int, loaders: int = 1) -> list[int]:
    """Sizes of a run's caption shards, for open_clip_train's loaders to share evenly: the fewest shards
    of at most `shard_size` whose count is a multiple of `loaders`, the sizes differing by one at most.

    open_clip_train deals the shards of an epoch out to its loaders in turn (webdataset's split_by_node,
    then split_by_worker, after a seeded shard shuffle), and each loader yields the same number of
    batches, going round its shards again when they run out. With a count that is not a multiple (100
    shards over 64 loaders), a loader that holds one shard reads it twice an epoch while one that holds
    two reads most of them once. Where N is too small for `loaders` shards of at most `shard_size`, the
    shards are larger (never empty); fewer pairs than loaders is an error (the config check refuses it).
    """
    if n_pairs < loaders:
        raise ValueError(f"{n_pairs} pairs cannot give each of {loaders} loaders a shard")
    count = math.ceil(math.ceil(n_pairs / shard_size) / loaders) * loaders
    count = min(count, n_pairs // loaders * loaders)
    base, extra = divmod(n_pairs, count)
    return [base + 1] * extra + [base] * (count - extra)


def clip_steps_per_epoch(n_pairs: int, recipe: dict[str, Any], ranks: int = 1) -> int:
    """Optimiser steps of one pass over n_pairs, as open_clip_train counts them: each of `ranks` GPUs
    takes `batch_size` pairs a step, so a step takes batch_size x ranks (its global batch), and the
    batch count is rounded up to a multiple of its loader workers (each yields as many; at least one)."""
    batches = math.ceil(n_pairs / (recipe["batch_size"] * max(1, int(ranks))))
    workers = max(1, int(recipe.get("workers", 0)))
    return math.ceil(batches / workers) * workers


def min_loader_share(sizes: Sequence[int], loaders: int) -> int:
    """The fewest pairs any of `loaders` open_clip_train loaders can hold, whatever order the shards of
    these sizes are dealt in (every loader gets floor(shards / loaders) of them at least): it batches
    only its own share, dropping a partial batch each pass, so a share under one batch yields none,
    and under DDP a rank whose loaders yield nothing leaves the others waiting in a collective."""
    return sum(sorted(sizes)[: len(sizes) // loaders])


def clip_epochs(n_pairs: int, recipe: dict[str, Any], ranks: int = 1) -> int:
    """`epochs` passes, raised so that a small N still gets `min_steps` optimiser steps (on `ranks` GPUs)."""
    steps_per_epoch = clip_steps_per_epoch(n_pairs, recipe, ranks)
    return max(int(recipe["epochs"]), math.ceil(recipe.get("min_steps", 0) / steps_per_epoch))


def clip_warmup_steps(n_pairs: int, recipe: dict[str, Any], ranks: int = 1) -> int:
    """The linear warm-up of a run of n_pairs, in optimiser steps: `warmup` steps when it is 1 or more,
    or that share of the run's steps when it is below 1 (0.1: a tenth of every run, so each N's
    schedule has the same shape)."""
    warmup = recipe["warmup"]
    if warmup >= 1:
        return int(warmup)
    return round(warmup * clip_run_steps(n_pairs, recipe, ranks))


def clip_run_steps(n_pairs: int, recipe: dict[str, Any], ranks: int = 1) -> int:
    """Optimiser steps of a whole run of n_pairs (`clip_epochs` passes)."""
    return clip_epochs(n_pairs, recipe, ranks) * clip_steps_per_epoch(n_pairs, recipe, ranks)
