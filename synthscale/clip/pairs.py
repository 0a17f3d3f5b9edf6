"""The image-text shards of a CLIP run (Fan et al. 2023's CLIP arm): N pairs of a (source, N), captioned.

A CPU job first writes the run's caption shards (`write_clip_pairs`, rule clip_pairs): N image-text pairs
of its source; the training job (`train_clip`, holding the GPUs) reads them.
- Captions, like for like: every pair, real or synthetic, is captioned by the same function,
  `pair_caption(i, label)`: a prompt of its class drawn from (seed, i) out of the pool of the class
  prompt strategies `clip.caption_strategies` (the stand-in for LAION alt-text). A synthetic image's
  own prompt and a real image's own caption stay in the pair's JSON record, never in its caption, so
  real and synthetic pairs of the same class sequence carry the same captions. With the default pool
  (classname + templates) CLIP's 80 zero-shot templates are IN the training captions of both; a pool
  without `templates` keeps them out of both. `clip.captions: own` instead captions every pair by its
  own text (a synthetic image's prompt, a real image's caption; an error where one lacks it): like
  for like only where the synthetic prompts are real captions, as in Fan et al.'s LAION setting.
- real: the first N real images; synthetic: the first N synthetic ones;
- mixed (synthetic + real) at N: N pairs in all (`n_pairs`, the axis every source shares), the
  first round(N * `clip.mix_real_fraction`) real images and the first N minus that synthetic ones,
  interleaved at the sample level: each pair is drawn from a part with probability proportional to
  what that part has left, seeded, so every stretch of the shards holds both in proportion. The
  synthetic part's captions come from their own draw stream (a part salt), so real image i and
  synthetic image i, of the same class, do not share one draw: the mix keeps the pool's variety.
- shards: as many as a multiple of the training job's loaders, of at most `clip.shard_size` pairs
  (`caption_shard_sizes`), so open_clip_train deals every loader an equal share.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from synthscale.clip.schedule import caption_shard_sizes
from synthscale.data.real import read_classes, split_shards
from synthscale.data.shards import ShardWriter, image_ext, iter_samples
from synthscale.io import write_json


# --- captions ---------------------------------------------------------------------------------


def caption_pools(classes, strategies: Sequence[str]) -> list[list[str]]:
    """Per class (index order), every prompt of the given strategies: the real images' caption pool."""
    from synthscale.prompts.strategies import class_prompts

    pools: list[list[str]] = [[] for _ in range(len(classes))]
    for s in strategies:
        for c, prompts in enumerate(class_prompts(classes, s)):
            pools[c] += list(prompts)
    return pools


def pair_caption(i: int, label: int, pools: Sequence[Sequence[str]], seed: int, part: int = 0) -> str:
    """The caption of image i of a part, real or synthetic: a prompt of its class drawn from (seed, i).

    `part` > 0 salts the draw: a run's later parts (a mixed run's synthetic one) draw from their own
    stream, so real image i and synthetic image i (same class) do not repeat one caption draw."""
    pool = pools[label]
    entropy = [int(seed), 7919, int(i)] + ([int(part)] if part else [])
    word = np.random.SeedSequence(entropy).generate_state(1)[0]
    return pool[int(word) % len(pool)]


def iter_captioned(
    paths: Sequence[str | os.PathLike],
    n: int | None,
    kind: str,
    pools: Sequence[Sequence[str]] | None = None,
    seed: int = 0,
    captions: str = "pool",
    part: int = 0,
) -> Iterator[tuple[str, bytes, int, str, dict[str, Any]]]:
    """(image extension, image bytes, label, caption, record) of the first n samples of shards.

    The caption is `pair_caption(i, label, pools, seed, part)` for either `kind` ("real" or "synthetic"); the
    sample's own text (a synthetic prompt, a real caption) is kept in the record as `own_text`.
    captions="own": the caption is that own text (a real record's `prompt` never counts as one).
    """
    count = 0
    for i, (key, s) in enumerate(iter_samples(paths)):
        if n is not None and count >= n:
            return
        ext = image_ext(s, key, f"{paths}")
        rec = json.loads(s["json"]) if "json" in s else {}
        label = int(s["cls"]) if "cls" in s else int(rec["label"])
        if kind not in ("real", "synthetic"):
            raise ValueError(f"unknown part kind {kind!r}")
        own = s["txt"].decode() if "txt" in s else rec.get("caption", rec.get("prompt" if kind == "synthetic" else ""))
        if captions == "own":
            if not own:
                raise ValueError(f"config key clip.captions: own, but {kind} sample {key} "
                                 f"in {paths} has no {'prompt' if kind == 'synthetic' else 'caption'}")
            text = own
        elif captions == "pool":
            if pools is None:
                raise ValueError("CLIP pairs need caption pools (clip.caption_strategies)")
            text = pair_caption(i, label, pools, seed, part)
        else:
            raise ValueError(f"config key clip.captions: unknown {captions!r}; choose pool or own")
        if own:
            rec = {**rec, "own_text": own}
        yield ext, s[ext], label, text, rec
        count += 1
    if n is not None and count < n:
        raise ValueError(f"asked for {n} images but the shards {list(map(str, paths))} hold {count}")


def write_caption_shards(
    out_dir: str | os.PathLike,
    parts: Sequence[tuple[str, Sequence[str | os.PathLike], int | None]],
    pools: Sequence[Sequence[str]] | None,
    seed: int,
    shard_size: int | Sequence[int] = 1000,
    captions: str = "pool",
) -> tuple[list[Path], int]:
    """Write the image-text shards of one CLIP run; parts are (kind, shards, first n); `shard_size`:
    pairs a shard, or each shard's own (`caption_shard_sizes`).

    Two or more parts interleave at the sample level: each pair comes from a part with probability
    proportional to what it has left, drawn from `seed`. Streams sample by sample (bounded memory);
    returns (shard paths, number of samples).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with ShardWriter(out_dir, shard_size) as writer:
        for kind, ext, data, label, text, rec in interleave_parts(parts, pools, seed, captions):
            key = f"{writer.count:09d}"
            meta = {"key": key, "label": label, "caption": text, "origin": kind, "record": rec}
            writer.write(data, meta, ext)
    return [out_dir / name for name in writer.names], writer.count


def interleave_parts(
    parts: Sequence[tuple[str, Sequence[str | os.PathLike], int | None]],
    pools: Sequence[Sequence[str]] | None,
    seed: int,
    captions: str = "pool",
) -> Iterator[tuple[str, str, bytes, int, str, dict[str, Any]]]:
    """(kind, ext, bytes, label, caption, record) of every part's first n samples, mixed at the sample
    level: each draw picks a part with probability proportional to its samples left (seeded).
    Part j's captions draw from stream j (`pair_caption`'s `part`), its position in `parts` before
    empty parts are dropped, so a part keeps its stream, and its captions nest, at every N."""
    parts = [(j, *p) for j, p in enumerate(parts) if p[2] is None or p[2] > 0]
    if len(parts) == 1:
        j, kind, paths, n = parts[0]
        for sample in iter_captioned(paths, n, kind, pools, seed, captions, j):
            yield (kind, *sample)
        return
    if any(n is None for _, _, _, n in parts):
        raise ValueError("parts that interleave need their sizes")
    streams = [iter_captioned(paths, n, kind, pools, seed, captions, j) for j, kind, paths, n in parts]
    left = np.array([n for _, _, _, n in parts], dtype=np.int64)
    rng = np.random.default_rng([int(seed), 104729])
    while left.sum() > 0:
        j = int(rng.choice(len(parts), p=left / left.sum()))
        left[j] -= 1
        yield (parts[j][1], *next(streams[j]))
    for it in streams:  # let each stream check that its shards held n samples
        for _ in it:
            pass


def mix_split(n_pairs: int, real_fraction: float) -> tuple[int, int]:
    """(real, synthetic) pairs of a synthetic + real run of n_pairs pairs in all."""
    n_real = int(round(n_pairs * real_fraction))
    return n_real, n_pairs - n_real


def clip_parts(
    kind: str,
    n: int,
    real_shards: Sequence[str | os.PathLike],
    synthetic_shards: Sequence[str | os.PathLike],
    mix_real_fraction: float = 0.5,
) -> list[tuple[str, Sequence[str | os.PathLike], int]]:
    """What a (source kind, N) run trains on: (kind, shards, first n) parts; N pairs in all."""
    if kind == "real":
        return [("real", real_shards, n)]
    if kind == "synthetic":
        return [("synthetic", synthetic_shards, n)]
    if kind == "mixed":
        n_real, n_syn = mix_split(n, mix_real_fraction)
        return [("real", real_shards, n_real), ("synthetic", synthetic_shards, n_syn)]
    raise ValueError(f"unknown CLIP source kind {kind!r}")


PAIRS_INDEX = "pairs.json"


def make_clip_pairs(
    folder: str | os.PathLike,
    kind: str,
    n: int,
    manifest: str | os.PathLike,
    synthetic_shards: Sequence[str | os.PathLike],
    classes_csv: str | os.PathLike,
    mix_real_fraction: float,
    recipe: dict[str, Any],
    seed: int,
    loaders: int = 1,
) -> Path:
    """The rule clip_pairs: `write_clip_pairs` of one CLIP run's `clip_parts`, the real ones the
    manifest's train split. `kind` is the CLIP source's (real, synthetic or mixed: study.sources'
    `parse_source(source).kind`, which the rule's script reads from the wildcard)."""
    parts = clip_parts(kind, n, split_shards(manifest, "train"), list(synthetic_shards), mix_real_fraction)
    return write_clip_pairs(folder, parts, read_classes(classes_csv), recipe, seed, loaders)


def write_clip_pairs(
    folder: str | os.PathLike,
    parts: Sequence[tuple[str, Sequence[str | os.PathLike], int | None]],
    classes,
    recipe: dict[str, Any],
    seed: int,
    loaders: int = 1,
) -> Path:
    """The image-text shards of one CLIP run in `folder` (a CPU job of its own, so the training job
    holds its GPUs for training only), with `pairs.json` (shards, pair count and what they were made
    from: parts, seed, caption pools, shard sizes) written last; returns the folder. The shards are
    sized for the run's `loaders` (`clip_loaders`, `caption_shard_sizes`) where every part's size is
    given, else they hold `shard_size` pairs each. A folder whose index records the same parts, seed,
    caption pools and shard sizes is kept; any other (a killed job's, or one made from other inputs)
    is written again."""
    folder = Path(folder)
    index = folder / PAIRS_INDEX
    pools = caption_pools(classes, recipe["caption_strategies"])
    made_from = {
        "parts": [[kind, [str(p) for p in shards], n] for kind, shards, n in parts],
        "seed": int(seed),
        "pools": hashlib.sha256(json.dumps(pools).encode()).hexdigest(),
        "captions": recipe.get("captions", "pool"),
        "shard_size": int(recipe["shard_size"]),
        "loaders": int(loaders),
    }
    if index.exists() and read_pairs_index(folder).get("made_from") == made_from:
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    sizes: int | list[int] = int(recipe["shard_size"])
    if all(n is not None for _, _, n in parts):
        sizes = caption_shard_sizes(sum(n for _, _, n in parts), sizes, loaders)
    shards, count = write_caption_shards(folder, parts, pools, seed, sizes, made_from["captions"])
    if isinstance(sizes, int):  # every shard full but the last
        sizes = [sizes] * (count // sizes) + ([count % sizes] if count % sizes else [])
    write_json(index, {"shards": [p.name for p in shards], "count": count, "sizes": sizes, "made_from": made_from})
    return folder


def read_pairs_index(folder: str | os.PathLike) -> dict[str, Any]:
    """The `pairs.json` of a `write_clip_pairs` folder, parsed: its shard names, pair count, shard sizes
    and what they were made from. A training job reads it once and hands it to the readers below."""
    return json.loads((Path(folder) / PAIRS_INDEX).read_text())


def clip_pairs_made_from(index: dict[str, Any]) -> dict[str, Any]:
    """What a `write_clip_pairs` folder holds (its `read_pairs_index`), beyond its shard paths: its
    inputs (parts, seed, caption pools, shard size, loaders), pair count and shard sizes; equal for a
    rewrite from the same inputs."""
    return {k: index.get(k) for k in ("made_from", "count", "sizes")}


def clip_pair_sizes(index: dict[str, Any]) -> list[int] | None:
    """Pairs in each shard of a `write_clip_pairs` folder (its `read_pairs_index`; None for a folder
    written before they were recorded)."""
    return index.get("sizes")


def read_clip_pairs(
    folder: str | os.PathLike, index: dict[str, Any] | None = None
) -> tuple[list[Path], int, dict[str, int | None]]:
    """(shard paths, pair count, pairs per part) of a `write_clip_pairs` folder, from its index when
    given (`read_pairs_index`), else read here."""
    folder = Path(folder)
    info = read_pairs_index(folder) if index is None else index
    part_counts = {kind: n for kind, _, n in info["made_from"]["parts"]}
    return [folder / name for name in info["shards"]], int(info["count"]), part_counts
