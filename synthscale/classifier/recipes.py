"""Training recipes: named rows of one table, in the style of datacomp's scale configs.

A study picks a row with `train.recipe` and overrides single keys in `train` (the schema describes
every key; the values live here only). `resolve_recipe` lays the overrides over the row.

Keys:
- model: `arch` (timm name), `model_kwargs` (timm.create_model kwargs, e.g. drop_path_rate)
- resolution: `input_size` (pixels fed to the model; null = `dataset.image_size`), `crop_pct`
  (evaluation: resize to input_size / crop_pct, centre-crop input_size), `interpolation`, `mean`, `std`
- schedule: `epochs`, `min_steps` (small sets get at least this many updates), `batch_size` (the
  global batch), `micro_batch_size` (per device and forward pass; null = the global batch over the
  devices: gradient accumulation fills the rest), `optimizer` (adamw, sgd, lamb), `lr`, `momentum`,
  `weight_decay`, `warmup_frac` (linear warm-up over this fraction of training, then cosine),
  `label_smoothing`
- augmentation (timm.data.create_transform in the loader's workers): `scale`, `ratio`
  (random-resized-crop), `pad_crop` (random translation by up to this many pixels, zero padding),
  `hflip`, `color_jitter`, `auto_augment` (timm RandAugment string or null), `re_prob` (random
  erasing), `mixup`, `cutmix` (alphas; 0 = off, applied with timm.data.Mixup)
- data loading (one DataLoader per run, its workers kept across epochs; seed and epoch fix the
  order): `num_workers`,
  `prefetch_factor`, `pin_memory`, `uint8_batches` (workers hand over uint8 images, normalised and
  randomly erased on the device: a quarter of float32's bytes through shared memory and host-to-device
  copies, and no float work in the workers; `auto`: on for CUDA),
  `shuffle_buffer` (samples held per worker for the in-stream shuffle), `decode_cache_mb` (decoded
  images, and the samples of shards that fit, kept per process across epochs; small sets decode
  each image and parse each shard once)
- GPU: `amp` (bf16 autocast), `channels_last`, `compile` (false or a torch.compile mode)
"""

from __future__ import annotations

import copy
from typing import Any

# The default study's recipe: today's loop on 16x16 digits (AdamW, cosine, pad-crop by 2 pixels,
# no flip: digits are not flip-invariant). No loader workers: a worker's start-up costs seconds
# and decoding 16x16 PNGs in the training process keeps up with this small model.
_DIGITS: dict[str, Any] = {
    "arch": "resnet18",
    "model_kwargs": {"channels": [16, 32, 64, 128]},
    "input_size": None,
    "crop_pct": 1.0,
    "interpolation": "bicubic",
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "epochs": 20,
    "min_steps": 80,
    "batch_size": 64,
    "micro_batch_size": None,
    "optimizer": "adamw",
    "lr": 0.003,
    "momentum": 0.9,
    "weight_decay": 0.05,
    "warmup_frac": 0.05,
    "label_smoothing": 0.0,
    "scale": [1.0, 1.0],
    "ratio": [1.0, 1.0],
    "pad_crop": 2,
    "hflip": 0.0,
    "color_jitter": 0.0,
    "auto_augment": None,
    "re_prob": 0.0,
    "mixup": 0.0,
    "cutmix": 0.0,
    "num_workers": 0,
    "prefetch_factor": 2,
    "pin_memory": False,
    "uint8_batches": "auto",
    "shuffle_buffer": 2000,
    "decode_cache_mb": 64,
    "amp": False,
    "channels_last": False,
    "compile": False,
}

# ResNet-50 on ImageNet-1k at 224 px: the classic SGD recipe (Goyal et al. 2017, lr 0.1 per 256
# images, linear warm-up; He et al. 2019 "Bag of Tricks": cosine decay, label smoothing 0.1, 120
# epochs, mixup 0.2) with timm's RandAugment (Cubuk et al. 2020, timm's "rand-m9-mstd0.5").
# Evaluation: resize 256, centre-crop 224 (crop_pct 0.875), ImageNet mean/std.
_RESNET50: dict[str, Any] = {
    **_DIGITS,
    "arch": "resnet50",
    "model_kwargs": {},
    "input_size": 224,
    "crop_pct": 0.875,
    "interpolation": "bilinear",
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "epochs": 120,
    "min_steps": 0,
    "batch_size": 1024,
    "optimizer": "sgd",
    "lr": 0.4,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "warmup_frac": 5 / 120,
    "label_smoothing": 0.1,
    "scale": [0.08, 1.0],
    "ratio": [0.75, 4 / 3],
    "pad_crop": 0,
    "hflip": 0.5,
    "color_jitter": 0.0,
    "auto_augment": "rand-m9-mstd0.5",
    "mixup": 0.2,
    "num_workers": 8,
    "prefetch_factor": 4,
    "pin_memory": True,
    "shuffle_buffer": 5000,
    "decode_cache_mb": 0,
    "amp": True,
    "channels_last": True,
}

# ViT-B/16 on ImageNet-1k: DeiT's recipe (Touvron et al. 2021, table 9: AdamW lr 5e-4 per 512
# images, wd 0.05, 300 epochs, 5 warm-up epochs, label smoothing 0.1, RandAugment
# rand-m9-mstd0.5-inc1, mixup 0.8, cutmix 1.0, random erasing 0.25, stochastic depth 0.1).
# Evaluation as Fan et al. 2023 evaluate their ViT-B/16: resize 256, centre-crop 224, mean=std=0.5.
_VIT_B16: dict[str, Any] = {
    **_RESNET50,
    "arch": "vit_base_patch16_224",
    "model_kwargs": {"drop_path_rate": 0.1},
    "interpolation": "bicubic",
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "epochs": 300,
    "optimizer": "adamw",
    "lr": 1e-3,
    "weight_decay": 0.05,
    "warmup_frac": 5 / 300,
    "label_smoothing": 0.1,
    "auto_augment": "rand-m9-mstd0.5-inc1",
    "re_prob": 0.25,
    "mixup": 0.8,
    "cutmix": 1.0,
}

RECIPES: dict[str, dict[str, Any]] = {
    "digits": _DIGITS,
    "imagenet-resnet50": _RESNET50,
    "imagenet-vit-b16": _VIT_B16,
}
RECIPE_KEYS = tuple(_DIGITS)
DEFAULT_RECIPE = "digits"


def unknown_recipe(train: dict[str, Any]) -> str | None:
    """What is wrong with `train["recipe"]` (a name no row has), or None when the row exists."""
    name = train.get("recipe") or DEFAULT_RECIPE
    return None if name in RECIPES else f"unknown recipe {name!r}; known: {sorted(RECIPES)}"


def resolve_recipe(train: dict[str, Any]) -> dict[str, Any]:
    """The named row of `train["recipe"]` (default "digits") with every other key of `train` over it.

    Raises KeyError naming the unknown recipe. Idempotent: a resolved recipe resolves to itself.
    """
    problem = unknown_recipe(train)
    if problem:
        raise KeyError(problem)
    name = train.get("recipe") or DEFAULT_RECIPE
    out = copy.deepcopy(RECIPES[name])
    out.update(copy.deepcopy(train))
    out["recipe"] = name
    return out


# What a trained judge's training reads of `train`: the recipe keys, and the recipe's name (recorded
# in the weights' metadata). The rest of `train` is the study's, not the training's: its grid (seeds,
# real_seeds, real_baseline, real_full, supervised), the evaluate stage's loader (eval_batch_size,
# eval_workers) and checkpoint_minutes (the judge trains without a checkpoint).
JUDGE_KEYS = ("recipe", *RECIPE_KEYS)


def judge_recipe(train: dict[str, Any], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The trained judge's recipe: the study's `train` recipe (resolved) cut to the keys its training
    reads (`JUDGE_KEYS`), with `quality.judge.recipe`'s keys laid over it.

    Rule train_judge's params are this, so a change to any key that changes the judge reruns it, and a
    change to another key of `train` does not."""
    base = {k: v for k, v in train.items() if k in JUDGE_KEYS}
    return {**base, **(overrides or {})}
