"""Where a loader worker's time goes for one ImageNet-style training image: decoding the stored JPEG
(PIL, which the loader uses, against torchvision.io.decode_jpeg) and the presets' training transform
(timm's RandomResizedCrop, flip, RandAugment, as `train_transform` builds it). Prints figures per image
on one thread, and whether the loader's decoder gives PIL's pixels; asserts nothing.

    python benchmarks/bench_decode.py [--images 300] [--size 256] [--quality 90]
        [--recipe imagenet-resnet50 imagenet-vit-b16]

The presets store images with the shorter side at `dataset.image_size` (256) as JPEG quality 90
(`data/imagefolder.py`), so the decode is of a ~256x341 image, not of ImageNet's ~400x500 originals.
"""

from __future__ import annotations

import argparse
import io
import random
import time

import numpy as np
import torch
from PIL import Image

from synthscale.data.transforms import train_transform
from synthscale.classifier.recipes import resolve_recipe


def smooth_jpegs(count: int, size: int, quality: int, seed: int = 0) -> list[bytes]:
    """Smooth random colour fields (ImageNet-like JPEG sizes, not noise) at (size, 4/3 size)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0 : size * 4 // 3] / size
    out = []
    for _ in range(count):
        f = rng.uniform(2, 12, (3, 3))
        img = sum(np.sin(f[c, 0] * x + f[c, 1] * y + f[c, 2])[..., None] * np.eye(3)[c] for c in range(3))
        b = io.BytesIO()
        Image.fromarray((img * 110 + 128).astype(np.uint8)).save(b, "JPEG", quality=quality)
        out.append(b.getvalue())
    return out


def pil_decode(raw: bytes) -> Image.Image:
    with Image.open(io.BytesIO(raw)) as im:
        return im.convert("RGB")


def per_image_ms(fn, items: list, repeat: int = 3) -> float:
    fn(items[0])
    t = time.perf_counter()
    for _ in range(repeat):
        for it in items:
            fn(it)
    return (time.perf_counter() - t) / (repeat * len(items)) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--recipe", nargs="+", default=["imagenet-resnet50", "imagenet-vit-b16"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    import warnings

    warnings.filterwarnings("ignore", message=".*decoding and encoding capabilities of TorchVision")
    from torchvision.io import ImageReadMode, decode_jpeg

    raws = smooth_jpegs(args.images, args.size, args.quality)
    tv = lambda r: decode_jpeg(torch.frombuffer(bytearray(r), dtype=torch.uint8), mode=ImageReadMode.RGB)  # noqa: E731
    same = all(np.array_equal(np.asarray(pil_decode(r)), tv(r).permute(1, 2, 0).numpy()) for r in raws)
    to_pil = lambda r: Image.fromarray(np.ascontiguousarray(tv(r).permute(1, 2, 0).numpy()))  # noqa: E731
    pil_ms, tv_ms, tv_pil_ms = per_image_ms(pil_decode, raws), per_image_ms(tv, raws), per_image_ms(to_pil, raws)
    print(f"{args.images} JPEGs at {args.size}x{args.size * 4 // 3}, quality {args.quality}, mean "
          f"{np.mean([len(r) for r in raws]) / 1024:.1f} KiB; one thread")
    print(f"decode: PIL (the loader's) {pil_ms:.3f} ms/image; torchvision.io.decode_jpeg {tv_ms:.3f} to a "
          f"tensor, {tv_pil_ms:.3f} to the PIL image timm's transforms take; same pixels: {same}")
    images = [pil_decode(r) for r in raws]
    for name in args.recipe:
        recipe = resolve_recipe({"recipe": name})
        recipe["input_size"] = recipe["input_size"] or 224
        for u8 in (False, True):
            tf = train_transform({**recipe, "uint8_batches": u8})
            random.seed(0)
            np.random.seed(0)
            torch.manual_seed(0)
            ms = per_image_ms(tf, images)
            print(f"{name} transform ({'uint8' if u8 else 'float'} out): {ms:.3f} ms/image; decode is "
                  f"{pil_ms / (pil_ms + ms):.0%} of decode + transform")


if __name__ == "__main__":
    main()
