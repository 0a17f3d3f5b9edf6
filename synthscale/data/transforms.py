"""The classifier's image transforms, applied in the loader's workers (synthscale.data.loader).

Training: timm's `create_transform` (random-resized crop, flip, colour jitter, RandAugment, random
erasing) as the recipe sets it, with a pad-crop translation when asked and a numpy short-cut when timm's
part is the identity (`TrainTransform`); `posterize` stands in for RandAugment's posterize at 0 bits.
`seeded_apply` draws a transform's randomness from one seed, so an image's augmentation does not depend
on the worker that draws it. `uint8_batches` says whether the workers hand over uint8 images (`auto`:
on for CUDA); `DeviceNormalize` then finishes the batch on the device (ToTensor's scaling, Normalize,
random erasing). Evaluation: `eval_transform`, resize to S / crop_pct and centre-crop S.
"""

from __future__ import annotations

import random
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image


def uint8_batches(recipe: dict[str, Any], device: str = "cpu") -> bool:
    """Whether batches cross from the workers as uint8 (normalised on the device): the recipe's
    `uint8_batches`, where `auto` (or absent) means on for CUDA."""
    flag = recipe.get("uint8_batches", "auto")
    return torch.device(device).type == "cuda" if flag in ("auto", None) else bool(flag)


def train_transform(recipe: dict[str, Any]):
    """PIL image to normalised float (3, S, S): timm's training transform, plus pad-crop when asked.

    With `recipe["uint8_batches"] is True`, to uint8 (3, S, S) instead (timm's `use_prefetcher` form:
    no ToTensor/Normalize, no random erasing): `DeviceNormalize` finishes the batch on the device."""
    from timm.data import auto_augment, create_transform

    for name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
        auto_augment.NAME_TO_OP[name] = posterize  # ops bind their function when built, below
    u8 = recipe.get("uint8_batches") is True
    size = int(recipe["input_size"])
    tf = create_transform(
        size,
        is_training=True,
        scale=tuple(recipe["scale"]),
        ratio=tuple(recipe["ratio"]),
        hflip=float(recipe["hflip"]),
        vflip=0.0,
        color_jitter=float(recipe["color_jitter"]) or None,
        auto_augment=recipe["auto_augment"],
        interpolation=recipe["interpolation"],
        mean=tuple(recipe["mean"]),
        std=tuple(recipe["std"]),
        re_prob=0.0 if u8 else float(recipe["re_prob"]),
        use_prefetcher=u8,
    )
    return TrainTransform(tf, recipe)


def posterize(img: Image.Image, bits_to_keep: int, **_: Any) -> Image.Image:
    """timm's RandAugment posterize, with Pillow < 12's answer for 0 bits kept: a black image.

    timm asks for 0 bits at the top magnitude (`inc1` policies at level 10, which the `mstd` noise of
    the ViT recipe reaches for about 2% of draws), and Pillow >= 12 raises there instead, which killed
    the loader within the first batch."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return img.point([0] * 256 * len(img.getbands()))
    from PIL import ImageOps

    return ImageOps.posterize(img, bits_to_keep)


class DeviceNormalize:
    """The uint8 batch's last steps, on the device (timm's PrefetchLoader's split): ToTensor's scaling
    and Normalize, then random erasing (`re_prob`).

    The scaling and Normalize are a per-channel table of the 256 values, computed on the CPU with the
    float path's own arithmetic (`x / 255`, `- mean`, `/ std` in float32) and looked up on the device,
    so a batch equals the float path's bit for bit on any device (CUDA's division by a scalar is a
    multiply by its reciprocal, which is not). Random erasing is timm's RandomErasing on the batch,
    drawing from python's `random` and torch's generator, which the trainer seeds per step: the boxes
    are not the float path's (drawn per image in the workers, before the pad-crop), so with `re_prob`
    > 0 the two paths train alike but not bit-identically."""

    def __init__(self, recipe: dict[str, Any], device: str | torch.device):
        mean = torch.tensor(recipe["mean"], dtype=torch.float32).view(-1, 1)
        std = torch.tensor(recipe["std"], dtype=torch.float32).view(-1, 1)
        levels = torch.arange(256, dtype=torch.float32).div(255).view(1, -1)
        self.table = levels.sub(mean).div(std).reshape(-1).to(device)  # (C * 256,), channel-major
        self.offsets = (torch.arange(len(recipe["mean"]), dtype=torch.int32) * 256).view(1, -1, 1, 1).to(device)
        self.erase = None
        if float(recipe["re_prob"]) > 0:
            from timm.data.random_erasing import RandomErasing

            self.erase = RandomErasing(float(recipe["re_prob"]), mode="const", device=device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = self.table[x.int() + self.offsets]
        return self.erase(x) if self.erase is not None else x


def _geometry_is_identity(recipe: dict[str, Any]) -> bool:
    """True when timm's training transform maps an image already at the input size to itself (the
    random-resized crop takes the whole image; no flip, colour, RandAugment or erasing)."""
    return (
        tuple(recipe["scale"]) == (1.0, 1.0)
        and tuple(recipe["ratio"]) == (1.0, 1.0)
        and not recipe["hflip"]
        and not recipe["color_jitter"]
        and not recipe["auto_augment"]
        and not recipe["re_prob"]
    )


class TrainTransform:
    """timm's training transform, then the pad-crop translation when the recipe asks for one.

    When timm's part is the identity for an image already at the input size (`_geometry_is_identity`:
    today's digits recipe) it is short-cut: the pad-crop on the uint8 array and ToTensor/Normalize's
    arithmetic in numpy, a fraction of the per-image cost, the same result (a test checks it).
    Random draws: python's `random` (pad offsets, timm's crops), numpy's (RandAugment) and torch's
    default generator (flips, erasing): `seeded_apply` seeds the ones `uses_numpy`/`uses_torch` name.
    """

    def __init__(self, tf, recipe: dict[str, Any]):
        self.tf, self.size = tf, int(recipe["input_size"])
        self.u8 = recipe.get("uint8_batches") is True
        self.pad = int(recipe.get("pad_crop") or 0)
        # uint8 images skip erasing here (the device does it), so their timm part may be the identity
        self.identity = _geometry_is_identity({**recipe, "re_prob": 0.0} if self.u8 else recipe)
        self.mean = np.asarray(recipe["mean"], dtype=np.float32)
        self.std = np.asarray(recipe["std"], dtype=np.float32)
        # the pad is black: 0 before normalisation, -mean/std after it (in float32, as Normalize has it)
        black = [0.0, 0.0, 0.0] if self.u8 else (-self.mean / self.std).tolist()
        self.padcrop = PadCrop(self.pad, black) if self.pad else None
        self.uses_numpy = bool(recipe["auto_augment"])
        self.uses_torch = not self.identity
        # what `ready`'s form depends on: caches of it are kept per key
        self.ready_key = (self.size, self.pad, tuple(self.mean.tolist()), tuple(self.std.tolist()), self.u8)

    def _padded(self, image: np.ndarray) -> np.ndarray:
        """A uint8 (H, W, 3) image with `pad` black pixels on every side (itself when pad is 0)."""
        p, s = self.pad, self.size
        if not p:
            return image
        padded = np.zeros((s + 2 * p, s + 2 * p, 3), dtype=np.uint8)
        padded[p : p + s, p : p + s] = image
        return padded

    def _finish(self, image: np.ndarray) -> np.ndarray:
        """A uint8 (H, W, 3) image as the fast path outputs it: (C, H, W), ToTensor/Normalize's float32
        arithmetic done in numpy (uint8 as it is with uint8 batches)."""
        x = image if self.u8 else (image.astype(np.float32) / np.float32(255) - self.mean) / self.std
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def ready(self, image: np.ndarray) -> "Ready | None":
        """A decoded image in the fast path's form, kept across epochs: padded and finished, (C, H, W)
        float32 (uint8 with uint8 batches; None when the fast path does not apply). Cropping it gives
        `__call__`'s result."""
        if not (self.identity and image.shape == (self.size, self.size, 3)):
            return None
        out = self._finish(self._padded(image))
        out.setflags(write=False)
        return Ready(out)

    def __call__(self, image: "Image.Image | np.ndarray | Ready") -> torch.Tensor:
        """A PIL image, a uint8 (H, W, 3) array (a decoded image from the cache), or `ready`'s form."""
        if isinstance(image, Ready):
            x = image.array
            if self.pad:
                p, s = self.pad, self.size
                a, b = random.randint(0, 2 * p), random.randint(0, 2 * p)
                x = x[:, a : a + s, b : b + s]
            return torch.from_numpy(np.array(x, dtype=x.dtype, order="C"))
        if isinstance(image, np.ndarray):
            fast = self.identity and image.shape == (self.size, self.size, 3)
            if not fast:
                image = Image.fromarray(image)
        else:
            fast = self.identity and image.size == (self.size, self.size) and image.mode == "RGB"
        if fast:
            arr = np.asarray(image)
            if self.pad:
                p, s = self.pad, self.size
                a, b = random.randint(0, 2 * p), random.randint(0, 2 * p)
                arr = self._padded(arr)[a : a + s, b : b + s]
            return torch.from_numpy(self._finish(arr))
        x = self.tf(image)
        if self.u8:  # timm's use_prefetcher form: a uint8 (C, H, W) tensor (numpy in older timm)
            x = torch.as_tensor(np.asarray(x, dtype=np.uint8))
        return self.padcrop(x) if self.padcrop is not None else x

    def __repr__(self) -> str:
        return f"TrainTransform(pad_crop={self.pad}, identity={self.identity}, {self.tf!r})"


class Ready:
    """A decoded image already padded and normalised for `TrainTransform`'s fast path."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray):
        self.array = array


class PadCrop(torch.nn.Module):
    """Random translation of a normalised (C, H, W) tensor by up to `pad` pixels, padding with `fill`
    (per channel): a random crop of the padded image, on the tensor (cheap at any size)."""

    def __init__(self, pad: int, fill: Sequence[float]):
        super().__init__()
        self.pad, self.fill = pad, torch.tensor(fill, dtype=torch.float32)[:, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, (c, h, w) = self.pad, x.shape
        out = self.fill.to(x.dtype).expand(c, h + 2 * p, w + 2 * p).clone()
        out[:, p : p + h, p : p + w] = x
        a, b = random.randint(0, 2 * p), random.randint(0, 2 * p)
        return out[:, a : a + h, b : b + w].contiguous()

    def extra_repr(self) -> str:
        return f"pad={self.pad}"


def eval_transform(recipe: dict[str, Any]):
    """PIL image to normalised float (3, S, S): resize to S / crop_pct, centre-crop S."""
    from timm.data import create_transform

    return create_transform(
        int(recipe["input_size"]),
        is_training=False,
        crop_pct=float(recipe["crop_pct"]),
        interpolation=recipe["interpolation"],
        mean=tuple(recipe["mean"]),
        std=tuple(recipe["std"]),
    )


def seeded_apply(tf, image: Image.Image, seed: int) -> torch.Tensor:
    """Apply a random transform with its randomness drawn from `seed`: python's `random` always,
    numpy's and torch's CPU generator when the transform says it uses them (`uses_numpy`,
    `uses_torch`; absent = yes). Torch's generator state is restored afterwards."""
    random.seed(seed)
    if getattr(tf, "uses_numpy", True):
        np.random.seed(seed % (2**32))
    if not getattr(tf, "uses_torch", True):
        return tf(image)
    # the CPU generator only: torch.manual_seed would also queue lazy CUDA seeding (milliseconds)
    gen = torch.default_generator
    state = gen.get_state()
    gen.manual_seed(seed)
    try:
        return tf(image)
    finally:
        gen.set_state(state)
