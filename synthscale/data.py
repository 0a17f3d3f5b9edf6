"""Real data: sklearn's digits (the offline default) or an ImageFolder tree (how ImageNet comes in).

A prepared dataset is a folder with `classes.csv` (index, id, name, description, hypernym),
one folder of tar shards per split, and `splits.json`, the manifest that lists them.
The training split is written class-interleaved (image i has class i mod C while classes last),
so its first N images are a class-balanced subset and real N nests like synthetic N.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from synthscale.io import write_csv, write_json
from synthscale.shards import shard_name, write_shard

# WordNet glosses and hypernyms for the ten digits (sklearn's digits carry no class text)
DIGIT_CLASSES: list[dict[str, str]] = [
    {"name": "zero", "description": "a mathematical element that when added to another number yields the same number", "hypernym": "digit"},  # noqa: E501
    {"name": "one", "description": "the smallest whole number or a numeral representing this number", "hypernym": "digit"},  # noqa: E501
    {"name": "two", "description": "the cardinal number that is the sum of one and one", "hypernym": "digit"},  # noqa: E501
    {"name": "three", "description": "the cardinal number that is the sum of one and one and one", "hypernym": "digit"},  # noqa: E501
    {"name": "four", "description": "the cardinal number that is the sum of three and one", "hypernym": "digit"},  # noqa: E501
    {"name": "five", "description": "the cardinal number that is the sum of four and one", "hypernym": "digit"},  # noqa: E501
    {"name": "six", "description": "the cardinal number that is the sum of five and one", "hypernym": "digit"},  # noqa: E501
    {"name": "seven", "description": "the cardinal number that is the sum of six and one", "hypernym": "digit"},  # noqa: E501
    {"name": "eight", "description": "the cardinal number that is the sum of seven and one", "hypernym": "digit"},  # noqa: E501
    {"name": "nine", "description": "the cardinal number that is the sum of eight and one", "hypernym": "digit"},  # noqa: E501
]

CLASS_COLUMNS = ["index", "id", "name", "description", "hypernym"]
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}


def digits_classes() -> pd.DataFrame:
    rows = [{"index": i, "id": str(i), **c} for i, c in enumerate(DIGIT_CLASSES)]
    return pd.DataFrame(rows, columns=CLASS_COLUMNS)


def load_digits_images(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 1797 bundled 8x8 digits, as uint8 grey images (N, S, S, 1) upsampled to S."""
    from sklearn.datasets import load_digits

    d = load_digits()
    raw = np.clip(d.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    up = [
        np.asarray(Image.fromarray(im).resize((image_size, image_size), Image.BILINEAR))
        for im in raw
    ]
    return np.stack(up)[..., None], d.target.astype(np.int64)


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    train, test = train_test_split(
        idx, test_size=test_fraction, random_state=seed, stratify=labels
    )
    return np.sort(train), np.sort(test)


def interleave_by_class(labels: np.ndarray, seed: int) -> np.ndarray:
    """An order of indices where position i holds class i mod C for as long as every class lasts.

    Within a class the order is a seeded shuffle; the first N positions are class-balanced.
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    queues = [list(rng.permutation(np.flatnonzero(labels == c))) for c in classes]
    order: list[int] = []
    while any(queues):
        for q in queues:
            if q:
                order.append(int(q.pop(0)))
    return np.asarray(order, dtype=np.int64)


def rotate(images: np.ndarray, degrees: float, seed: int) -> np.ndarray:
    """Rotate each image by a seeded angle drawn from +-[degrees/2, degrees]."""
    rng = np.random.default_rng(seed)
    out = []
    for im in images:
        angle = rng.uniform(degrees / 2, degrees) * rng.choice([-1, 1])
        pil = Image.fromarray(im.squeeze(-1) if im.shape[-1] == 1 else im)
        out.append(np.asarray(pil.rotate(angle, resample=Image.BILINEAR)).reshape(im.shape))
    return np.stack(out)


def thicken(images: np.ndarray, size: int) -> np.ndarray:
    """Thicker strokes: a grey-level dilation (max filter) of odd `size`."""
    out = []
    for im in images:
        pil = Image.fromarray(im.squeeze(-1) if im.shape[-1] == 1 else im)
        out.append(np.asarray(pil.filter(ImageFilter.MaxFilter(size))).reshape(im.shape))
    return np.stack(out)


def apply_shift(images: np.ndarray, shift: dict[str, Any], seed: int) -> np.ndarray:
    kind = shift["kind"]
    if kind == "none":
        return images
    if kind == "rotate":
        return rotate(images, shift["degrees"], seed)
    if kind == "thicken":
        return thicken(images, shift["size"])
    raise ValueError(f"unknown shift {kind!r}; choose none, rotate or thicken")


def write_split(
    folder: str | os.PathLike,
    images: np.ndarray,
    labels: np.ndarray,
    shard_size: int,
    extra: Callable[[int], dict[str, Any]] | None = None,
) -> list[str]:
    """Write a split as numbered shards; return the shard file names."""
    folder = Path(folder)
    names = []
    for k, start in enumerate(range(0, len(images), shard_size)):
        stop = min(start + shard_size, len(images))
        recs = [
            {"key": f"{i:08d}", "label": int(labels[i]), **(extra(i) if extra else {})}
            for i in range(start, stop)
        ]
        write_shard(folder / shard_name(k), images[start:stop], recs)
        names.append(shard_name(k))
    return names


def prepare_digits(
    out_dir: str | os.PathLike,
    image_size: int,
    test_fraction: float,
    eval_sets: Sequence[dict[str, Any]],
    shard_size: int,
    seed: int,
) -> dict[str, Any]:
    """Prepare sklearn's digits: class table, interleaved train split, test and shifted test sets."""
    images, labels = load_digits_images(image_size)
    train_idx, test_idx = stratified_split(labels, test_fraction, seed)
    train_idx = train_idx[interleave_by_class(labels[train_idx], seed)]
    splits = {"train": (images[train_idx], labels[train_idx])}
    test_images, test_labels = images[test_idx], labels[test_idx]
    for k, ev in enumerate(eval_sets):
        shift = ev.get("shift", {"kind": "none"})
        splits[ev["name"]] = (apply_shift(test_images, shift, seed + 1 + k), test_labels)
    return _write_prepared(out_dir, digits_classes(), splits, shard_size)


def _write_prepared(
    out_dir: str | os.PathLike,
    classes: pd.DataFrame,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    shard_size: int,
) -> dict[str, Any]:
    out_dir = Path(out_dir)
    manifest: dict[str, Any] = {"classes": len(classes), "splits": {}}
    for name, (ims, labs) in splits.items():
        shards = write_split(out_dir / name, ims, labs, shard_size)
        manifest["splits"][name] = {
            "shards": [f"{name}/{s}" for s in shards],
            "count": int(len(ims)),
            "per_class": np.bincount(labs, minlength=len(classes)).tolist(),
        }
    write_csv(out_dir / "classes.csv", classes)
    write_json(out_dir / "splits.json", manifest)
    return manifest


def read_classes_table(path: str | os.PathLike) -> pd.DataFrame:
    """A user's class table: `id` and `name` required; description and hypernym optional."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"id", "name"} - set(df.columns)
    if missing:
        raise ValueError(f"class table {path} lacks column(s) {sorted(missing)}")
    for col in ("description", "hypernym"):
        if col not in df.columns:
            df[col] = ""
    df = df.reset_index(drop=True)
    df.insert(0, "index", np.arange(len(df)))
    return df[CLASS_COLUMNS]


def scan_imagefolder(root: str | os.PathLike, class_ids: Sequence[str]) -> list[tuple[Path, int]]:
    """(path, class index) for every image under root/<class id>/, sorted for determinism."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    items = []
    for ci, cid in enumerate(class_ids):
        folder = root / cid
        if not folder.is_dir():
            raise FileNotFoundError(f"image folder {root} has no folder for class {cid!r}")
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        items += [(p, ci) for p in files]
    if not items:
        raise FileNotFoundError(f"no images found under {root}")
    return items


def load_image(path: Path, image_size: int, channels: int) -> np.ndarray:
    """Resize the shorter side to image_size and centre-crop, as uint8 (S, S, C)."""
    with Image.open(path) as im:
        im = im.convert("L" if channels == 1 else "RGB")
        w, h = im.size
        s = image_size / min(w, h)
        im = im.resize((max(image_size, round(w * s)), max(image_size, round(h * s))), Image.BICUBIC)
        w, h = im.size
        left, top = (w - image_size) // 2, (h - image_size) // 2
        im = im.crop((left, top, left + image_size, top + image_size))
        return np.asarray(im).reshape(image_size, image_size, channels)


def prepare_imagefolder(
    out_dir: str | os.PathLike,
    ds: dict[str, Any],
    eval_sets: Sequence[dict[str, Any]],
    shard_size: int,
    seed: int,
) -> dict[str, Any]:
    """Prepare an ImageFolder dataset: train from `train_dir`, eval sets from their own folders."""
    classes = read_classes_table(ds["classes_csv"])
    ids = classes["id"].tolist()
    size, ch = ds["image_size"], ds["channels"]

    def load(root: str) -> tuple[np.ndarray, np.ndarray]:
        items = scan_imagefolder(root, ids)
        return (
            np.stack([load_image(p, size, ch) for p, _ in items]),
            np.asarray([c for _, c in items], dtype=np.int64),
        )

    train_images, train_labels = load(ds["train_dir"])
    order = interleave_by_class(train_labels, seed)
    splits = {"train": (train_images[order], train_labels[order])}
    for k, ev in enumerate(eval_sets):
        ims, labs = load(ev.get("root") or ds["test_dir"])
        splits[ev["name"]] = (apply_shift(ims, ev.get("shift", {"kind": "none"}), seed + 1 + k), labs)
    return _write_prepared(out_dir, classes, splits, shard_size)


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def split_shards(manifest_path: str | os.PathLike, split: str) -> list[Path]:
    """The shard paths of one split, from its manifest."""
    manifest = read_manifest(manifest_path)
    if split not in manifest["splits"]:
        raise KeyError(f"no split {split!r} in {manifest_path}; have {sorted(manifest['splits'])}")
    base = Path(manifest_path).parent
    return [base / s for s in manifest["splits"][split]["shards"]]
