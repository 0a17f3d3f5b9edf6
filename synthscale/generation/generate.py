"""Synthetic sets: which class, prompt and seed image i gets, sampling any diffusers text-to-image
pipeline the way diffusers calls it, and writing blocks of shards.

Invariants (DESIGN.md): image i gets class i mod C; its prompt and seed come from (base seed, i) and
the prompt list alone, so every guidance value of a (generator, strategy) sees the same prompts and
noise; image i's noise (initial and every stochastic sampler step) comes from its own
`torch.Generator`, so it does not depend on its batch; a set of N images is the first ceil(N/S) shards.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from synthscale.generation.prompt_encoding import PromptEmbeddings
from synthscale.io import atomic_path, partial_path
from synthscale.data.real import class_names
from synthscale.data.shards import write_shard
from synthscale.prompts.strategies import read_prompts

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


# --- sampling ---


def call_defaults(pipe) -> dict[str, Any]:
    """Fixed `__call__` arguments: negative prompts come as embeddings (PixArt's default "" would
    clash with them); no aspect-ratio binning (PixArt), we ask for square images."""
    params = set(inspect.signature(pipe.__call__).parameters)
    fixed = {"negative_prompt": None, "use_resolution_binning": False}
    return {k: v for k, v in fixed.items() if k in params}


def to_uint8(images: torch.Tensor, size: int | None = None) -> np.ndarray:
    """(B, C, H, W) in [0, 1] on any device -> uint8 (B, h, w, C) on the CPU, the shorter side resized
    to `size` on the device first (antialiased), so only storage-sized images cross to the host."""
    x = images.float()
    if size is not None and min(x.shape[-2:]) != size:
        h, w = x.shape[-2:]
        scale = size / min(h, w)
        x = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode="bilinear", antialias=True)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def generate_images(
    pipe,
    specs: Sequence[ImageSpec],
    guidance: float,
    steps: int,
    batch_size: int,
    embeddings: PromptEmbeddings | None = None,
    height: int | None = None,
    width: int | None = None,
    storage_size: int | None = None,
    pad: bool = False,
    progress: bool = False,
    sampled: dict[str, int] | None = None,
) -> list[np.ndarray]:
    """Sample one image per spec through `pipe.__call__`, as diffusers calls it; uint8 (h, w, C) each.

    Image b gets `generator=torch.Generator("cpu").manual_seed(spec.seed)` (device-independent noise);
    with `pad`, the last batch is filled up to `batch_size` (and trimmed), so every call has one shape.
    Images are stored with their shorter side at `storage_size` (None: as sampled); `sampled`, when
    given, receives the sampled `height` and `width` (provenance).
    """
    embeddings = embeddings or PromptEmbeddings(pipe)
    fixed = call_defaults(pipe)
    size = {k: v for k, v in (("height", height), ("width", width)) if v is not None}
    out: list[np.ndarray] = []
    bar = tqdm(total=len(specs), unit="img", disable=not progress, mininterval=2)
    for start in range(0, len(specs), batch_size):
        batch = list(specs[start : start + batch_size])
        n = len(batch)
        if pad:
            batch += [batch[-1]] * (batch_size - n)
        images = pipe(
            **embeddings([s.prompt for s in batch]),
            generator=[torch.Generator("cpu").manual_seed(int(s.seed)) for s in batch],
            num_inference_steps=steps,
            guidance_scale=guidance,
            output_type="pt",
            **size,
            **fixed,
        ).images
        if sampled is not None:
            sampled.update(height=int(images.shape[-2]), width=int(images.shape[-1]))
        out.extend(to_uint8(images[:n], storage_size))
        bar.update(n)
    bar.close()
    return out


def sample(
    pipe,
    prompts: Sequence[str],
    seeds: Sequence[int],
    guidance: float,
    steps: int,
    height: int | None = None,
    width: int | None = None,
) -> np.ndarray:
    """uint8 images (B, H, W, C) of the prompts, image b from seeds[b] alone (one batch)."""
    specs = [ImageSpec(i, 0, p, int(s)) for i, (p, s) in enumerate(zip(prompts, seeds))]
    return np.stack(generate_images(pipe, specs, guidance, steps, len(specs), height=height, width=width))


# --- shards and blocks of shards ---


def records_of(
    specs: Sequence[ImageSpec],
    class_names: Sequence[str],
    **provenance: Any,
) -> list[dict[str, Any]]:
    """Each image's JSON record: index, class, prompt, seed and the generation settings."""
    return [
        {
            "key": f"{s.index:08d}",
            "index": s.index,
            "label": s.label,
            "class_name": class_names[s.label],
            "prompt": s.prompt,
            "seed": s.seed,
            **provenance,
        }
        for s in specs
    ]


def generate_shard(
    pipe,
    path: str | os.PathLike,
    k: int,
    shard_size: int,
    class_prompts: Sequence[Sequence[str]],
    base_seed: int,
    guidance: float,
    steps: int,
    sampler: str | None,
    batch_size: int,
    generator_name: str,
    class_names: Sequence[str],
    size: int | None = None,
    storage: dict[str, Any] | None = None,
    embeddings: PromptEmbeddings | None = None,
    pad: bool = False,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Sample shard k of a synthetic set at sampling resolution `size` (None: the model's own), store
    it at `storage` (`size`, `format`, `quality`), write it atomically, and return its records."""
    storage = {"size": None, "format": "png", "quality": 95, **(storage or {})}
    specs = shard_specs(k, shard_size, class_prompts, base_seed)
    sampled: dict[str, int] = {}
    images = generate_images(
        pipe, specs, guidance, steps, min(batch_size, shard_size), embeddings,
        height=size, width=size, storage_size=storage["size"], pad=pad, progress=progress, sampled=sampled,
    )
    from synthscale.generation.pipelines import guidance_kind

    # height and width are the stored image's; sample_height and sample_width what the model made
    records = records_of(
        specs, class_names, guidance=guidance, guidance_kind=guidance_kind(pipe), steps=steps,
        sampler=sampler or type(pipe.scheduler).__name__, generator=generator_name,
        height=int(images[0].shape[0]), width=int(images[0].shape[1]),
        sample_height=sampled["height"], sample_width=sampled["width"],
    )
    write_shard(path, images, records, fmt=storage["format"], quality=storage["quality"])
    return records


def block_fingerprint(
    spec: dict[str, Any],
    generation: dict[str, Any],
    guidance: str,
    prompts_path: str | os.PathLike,
    device: str,
    source: str | os.PathLike,
) -> dict[str, Any]:
    """The settings a generation job's shards are made with, which `generate_block` stamps on each
    finished shard: a killed job's shard is reused by its rerun only under the same generator entry
    (`spec`), generation section, guidance (as the wildcard spells it), prompts (the file's SHA-256),
    device and generator source (its modification time when it is a local path: a retrained or
    re-fine-tuned folder makes shards anew; None for a Hub id)."""
    prompts_sha = hashlib.sha256(Path(prompts_path).read_bytes()).hexdigest()
    return {
        "spec": spec,
        "generation": generation,
        "guidance": guidance,
        "prompts": prompts_sha,
        "device": device,
        "source_mtime": os.path.getmtime(source) if os.path.exists(source) else None,
    }


def generate_block(
    pipe,
    paths: Sequence[str | os.PathLike],
    first_shard: int,
    fingerprint: dict[str, Any],
    progress: bool = True,
    **shard_kwargs: Any,
) -> None:
    """Write shards first_shard, first_shard + 1, ... to `paths` with one loaded pipeline.

    Finished shards wait at their `partial_path` (a `.partial/` folder beside the outputs), each with
    the settings that made it (`fingerprint`, JSON): a killed job keeps them, and its rerun reuses those whose settings match
    (Snakemake removes a failed job's declared outputs, not these). The outputs appear only once every
    shard of the block is done.
    """
    embeddings = PromptEmbeddings(pipe, shard_kwargs.pop("prompt_cache", 1024))
    stamp = json.dumps(fingerprint, sort_keys=True, default=str)
    for j, path in enumerate(paths):
        part, tag = partial_path(path), partial_path(path, ".json")
        if part.exists() and tag.exists() and tag.read_text() == stamp:
            print(f"shard {first_shard + j}: reusing the finished {part}", flush=True)
            continue
        generate_shard(pipe, part, first_shard + j, embeddings=embeddings, progress=progress, **shard_kwargs)
        with atomic_path(tag) as tmp:
            tmp.write_text(stamp)
    for path in paths:
        part = partial_path(path)
        with atomic_path(path) as tmp:
            os.unlink(tmp)
            try:
                os.link(part, tmp)
            except OSError:
                shutil.copyfile(part, tmp)
    for path in paths:
        partial_path(path).unlink()
        partial_path(path, ".json").unlink()


def run_block(
    generator: str | Sequence[str],
    spec: dict[str, Any],
    generation: dict[str, Any],
    guidance: str,
    block: str | int,
    prompts_path: str | os.PathLike,
    classes_path: str | os.PathLike,
    outputs: Sequence[str | os.PathLike],
    device: str,
    batch_size: int,
) -> None:
    """One generation job (rule generate_block): block `block` of a synthetic set, its shards
    block x len(outputs), ... to `outputs`.

    Loads the generator (`generator`: the job's generator folders, Plan.generator_inputs; none for a
    pretrained generator, which loads its `spec["source"]`), swaps in the `generation` section's
    sampler and sets its speed-ups, then `generate_block`: a finished shard of a killed job is reused
    only under the same settings (`block_fingerprint`, with `guidance` as the wildcard spells it).
    A compiled pipeline pads every batch to `batch_size` (one shape, one compilation)."""
    from synthscale.generation.pipelines import generator_source, load_generator, set_sampler, speed_up

    source = generator_source(generator, spec)
    pipe = load_generator(source, device=device, dtype=spec["dtype"])
    scheduler = set_sampler(pipe, generation["sampler"])
    speed_up(pipe, generation["channels_last"], generation["vae_slicing"], generation["compile"])
    outputs = list(outputs)
    generate_block(
        pipe,
        outputs,
        first_shard=int(block) * len(outputs),
        fingerprint=block_fingerprint(spec, generation, guidance, prompts_path, device, source),
        shard_size=generation["shard_size"],
        class_prompts=read_prompts(prompts_path),
        base_seed=generation["seed"],
        guidance=float(guidance),
        steps=generation["steps"],
        sampler=scheduler,
        batch_size=batch_size,
        generator_name=spec["name"],
        class_names=class_names(classes_path),
        size=spec["size"],
        storage=generation["storage"],
        pad=generation["compile"] is not None,
        prompt_cache=generation["prompt_cache"],
    )
