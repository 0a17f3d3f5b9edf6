"""Synthetic sets: which class, prompt and seed image i gets, and writing a shard of them.

Invariants (DESIGN.md): image i gets class i mod C; its prompt and seed come from (base seed, i) and
the prompt list alone, so every guidance value of a (generator, strategy) sees the same prompts and
noise; a set of N images is the first ceil(N/S) shards.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from synthscale.generators import sample
from synthscale.shards import write_shard

SEED_SPACE = 2**31 - 1


@dataclass(frozen=True)
class ImageSpec:
    index: int
    label: int
    prompt: str
    seed: int


def image_spec(i: int, class_prompts: Sequence[Sequence[str]], base_seed: int) -> ImageSpec:
    """Class, prompt and noise seed of synthetic image i, from i and the config alone."""
    if i < 0:
        raise ValueError(f"image index must be >= 0, got {i}")
    n_classes = len(class_prompts)
    label = i % n_classes
    ss = np.random.SeedSequence([base_seed, i])
    seed_word, prompt_word = ss.generate_state(2, dtype=np.uint32)
    prompts = class_prompts[label]
    return ImageSpec(
        index=i,
        label=label,
        prompt=prompts[int(prompt_word) % len(prompts)],
        seed=int(seed_word) % SEED_SPACE,
    )


def shard_specs(
    k: int, shard_size: int, class_prompts: Sequence[Sequence[str]], base_seed: int
) -> list[ImageSpec]:
    return [image_spec(i, class_prompts, base_seed) for i in range(k * shard_size, (k + 1) * shard_size)]


def generate_shard(
    pipe,
    path: str | os.PathLike,
    k: int,
    shard_size: int,
    class_prompts: Sequence[Sequence[str]],
    base_seed: int,
    guidance: float,
    steps: int,
    sampler: str,
    batch_size: int,
    generator_name: str,
    class_names: Sequence[str],
    size: int | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Sample shard k of a synthetic set and write it atomically; return its records."""
    specs = shard_specs(k, shard_size, class_prompts, base_seed)
    images: list[np.ndarray] = []
    bar = tqdm(total=len(specs), desc=f"shard {k} g{guidance}", unit="img", disable=not progress)
    for start in range(0, len(specs), batch_size):
        batch = specs[start : start + batch_size]
        out = sample(
            pipe,
            [s.prompt for s in batch],
            [s.seed for s in batch],
            guidance=guidance,
            steps=steps,
            height=size,
            width=size,
        )
        images.extend(out)
        bar.update(len(batch))
    bar.close()
    records = [
        {
            "key": f"{s.index:08d}",
            "index": s.index,
            "label": s.label,
            "class_name": class_names[s.label],
            "prompt": s.prompt,
            "seed": s.seed,
            "guidance": guidance,
            "steps": steps,
            "sampler": sampler,
            "generator": generator_name,
        }
        for s in specs
    ]
    write_shard(path, images, records)
    return records
