"""Real data: sklearn's digits (the offline default), and what every real dataset shares.

ImageFolder trees (how ImageNet comes in) stream through synthscale.data.imagefolder.

A prepared dataset is a folder with `classes.csv` (index, id, name, description, hypernym; read
back by `read_classes`),
one folder of tar shards per split, and `splits.json`, the manifest that lists them.
The training split is written class-interleaved (image i has class i mod C while classes last),
so its first N images are a class-balanced subset and real N nests like synthetic N.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from synthscale.io import write_csv, write_json
from synthscale.data.shards import ShardWriter

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
    Vectorised (a few int64 arrays of len(labels)), so it serves ImageNet-sized file lists.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes, pos = np.unique(labels, return_inverse=True)
    by_class = np.argsort(pos, kind="stable")  # members of each class, in index order
    bounds = np.cumsum(np.bincount(pos, minlength=len(classes)))[:-1]
    rank = np.empty(len(labels), dtype=np.int64)
    for members in np.split(by_class, bounds):
        rank[rng.permutation(members)] = np.arange(len(members))
    # round r emits, in class order, the r-th shuffled member of every class that has one
    return np.lexsort((pos, rank)).astype(np.int64)


def shift_image(image: np.ndarray, shift: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """One image (H, W, C) under a shift: none, a seeded rotation by +-[degrees/2, degrees] or a
    thickening (grey-level dilation of odd `size`). Draws from `rng` only for a rotation."""
    kind = shift["kind"]
    if kind == "none":
        return image
    pil = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
    if kind == "rotate":
        angle = rng.uniform(shift["degrees"] / 2, shift["degrees"]) * rng.choice([-1, 1])
        return np.asarray(pil.rotate(angle, resample=Image.BILINEAR)).reshape(image.shape)
    if kind == "thicken":
        return np.asarray(pil.filter(ImageFilter.MaxFilter(shift["size"]))).reshape(image.shape)
    raise ValueError(f"unknown shift {kind!r}; choose none, rotate or thicken")


def rotate(images: np.ndarray, degrees: float, seed: int) -> np.ndarray:
    """Rotate each image by a seeded angle drawn from +-[degrees/2, degrees]."""
    rng = np.random.default_rng(seed)
    return np.stack([shift_image(im, {"kind": "rotate", "degrees": degrees}, rng) for im in images])


def thicken(images: np.ndarray, size: int) -> np.ndarray:
    """Thicker strokes: a grey-level dilation (max filter) of odd `size`."""
    rng = np.random.default_rng(0)
    return np.stack([shift_image(im, {"kind": "thicken", "size": size}, rng) for im in images])


def shift_each(images: Iterable[np.ndarray], shift: dict[str, Any], seed: int) -> Iterator[np.ndarray]:
    """`apply_shift` one image at a time (a stream): the same images, in the same order, as
    `apply_shift` on their stack, without holding them."""
    kind = shift["kind"]
    if kind == "none":
        yield from images
        return
    if kind == "rotate":
        rng, one = np.random.default_rng(seed), {"kind": "rotate", "degrees": shift["degrees"]}
    elif kind == "thicken":
        rng, one = np.random.default_rng(0), {"kind": "thicken", "size": shift["size"]}
    else:
        raise ValueError(f"unknown shift {kind!r}; choose none, rotate or thicken")
    for image in images:
        yield shift_image(image, one, rng)


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
    fmt: str = "png",
    quality: int = 95,
) -> list[str]:
    """Write a split as numbered shards through the streaming writer; return the shard file names."""
    with ShardWriter(folder, shard_size, fmt, quality) as writer:
        for i in range(len(images)):
            writer.write(images[i], {"key": f"{i:08d}", "label": int(labels[i]), **(extra(i) if extra else {})})
    return writer.names


def split_entry(
    name: str,
    shards: Sequence[str],
    per_class: Sequence[int] | np.ndarray,
    classes: Sequence[int] | None = None,
    bad_files: Sequence[str] = (),
    **extra: Any,
) -> dict[str, Any]:
    """A split's manifest entry: shards, count, per-class counts, its class subset, bad files."""
    per_class = np.asarray(per_class, dtype=np.int64)
    entry: dict[str, Any] = {
        "shards": [f"{name}/{s}" for s in shards],
        "count": int(per_class.sum()),
        "per_class": per_class.tolist(),
        "n_bad": len(bad_files),
        "bad_files": list(bad_files),
        **extra,
    }
    if classes is not None:
        entry["classes"] = sorted(int(c) for c in classes)
    return entry


def class_subset(
    ev: dict[str, Any], class_ids: Sequence[str], root: str | os.PathLike | None = None
) -> list[int] | None:
    """The class indices an eval set covers (its `classes` ids), or None for all classes.

    `classes: folders` takes the class ids that have a sub-folder under `root` (ImageNet-R and -A ship
    200 of ImageNet's 1000 class folders)."""
    if ev.get("classes") is None:
        return None
    if ev["classes"] == "folders":
        if root is None or not Path(root).is_dir():
            raise ValueError(f"eval set {ev['name']!r}: classes: folders needs its image folder, got {root!r}")
        present = {d.name for d in Path(root).iterdir() if d.is_dir()}
        subset = [i for i, cid in enumerate(class_ids) if str(cid) in present]
        if not subset:
            raise ValueError(f"eval set {ev['name']!r}: no class folder of the class table under {root}")
        return subset
    index = {cid: i for i, cid in enumerate(class_ids)}
    unknown = [c for c in ev["classes"] if str(c) not in index]
    if unknown:
        raise ValueError(f"eval set {ev['name']!r}: class id(s) {unknown} are not in the class table")
    return sorted(index[str(c)] for c in ev["classes"])


def prepare_digits(
    out_dir: str | os.PathLike,
    image_size: int,
    test_fraction: float,
    eval_sets: Sequence[dict[str, Any]],
    shard_size: int,
    seed: int,
    fmt: str = "png",
    quality: int = 95,
    *,
    manifest_path: str | os.PathLike,
    classes_path: str | os.PathLike,
) -> dict[str, Any]:
    """Prepare sklearn's digits: class table, interleaved train split, test and shifted test sets.

    An eval set with `classes` keeps only the test images of those classes. The split shards go
    under `out_dir`; the manifest and class table where `write_prepared` puts them.
    """
    images, labels = load_digits_images(image_size)
    train_idx, test_idx = stratified_split(labels, test_fraction, seed)
    train_idx = train_idx[interleave_by_class(labels[train_idx], seed)]
    classes = digits_classes()
    out_dir = Path(out_dir)
    manifest: dict[str, Any] = {"classes": len(classes), "splits": {}}
    splits = [("train", images[train_idx], labels[train_idx], None)]
    test_images, test_labels = images[test_idx], labels[test_idx]
    for k, ev in enumerate(eval_sets):
        shift = ev.get("shift", {"kind": "none"})
        subset = class_subset(ev, classes["id"].tolist())
        ims = apply_shift(test_images, shift, seed + 1 + k)
        keep = np.isin(test_labels, subset) if subset is not None else np.ones(len(test_labels), bool)
        splits.append((ev["name"], ims[keep], test_labels[keep], subset))
    for name, ims, labs, subset in splits:
        shards = write_split(out_dir / name, ims, labs, shard_size, fmt=fmt, quality=quality)
        per_class = np.bincount(labs, minlength=len(classes))
        manifest["splits"][name] = split_entry(name, shards, per_class, subset)
    write_prepared(out_dir, classes, manifest, manifest_path, classes_path)
    return manifest


def write_prepared(
    out_dir: str | os.PathLike,
    classes: pd.DataFrame,
    manifest: dict[str, Any],
    manifest_path: str | os.PathLike,
    classes_path: str | os.PathLike,
) -> None:
    """Write a prepared dataset's class table and manifest at the paths its rule gives (Plan.classes,
    Plan.manifest). The manifest lists its shards relative to its own folder (`split_shards`), so it
    must lie in `out_dir`, where the shards were written."""
    out_dir = Path(out_dir)
    manifest_path = Path(manifest_path)
    if manifest_path.parent.resolve() != out_dir.resolve():
        raise ValueError(f"manifest {manifest_path} must lie in {out_dir}: it lists the shards relative to its folder")
    write_csv(classes_path, classes)
    write_json(manifest_path, manifest)


def read_classes(path: str | os.PathLike) -> pd.DataFrame:
    """A prepared dataset's class table (its `classes.csv`, as `write_prepared` writes it; Plan.classes),
    the one reader of it: CLASS_COLUMNS, `index` an integer and every other column text as written (no
    NA conversion: an empty hypernym stays "", a class named "NA" or "null" keeps its name), rows in
    class-index order, numbered 0..C-1.

    Not a user's class table (`dataset.classes_csv`, which may lack columns): that is
    `read_classes_table`'s, which `prepare_data` reads once to write this one."""
    text = {c: str for c in CLASS_COLUMNS if c != "index"}
    df = pd.read_csv(path, dtype={"index": "int64", **text}, keep_default_na=False)
    return df.sort_values("index", kind="stable").reset_index(drop=True)


def class_names(path: str | os.PathLike) -> list[str]:
    """The class names of a prepared class table (`read_classes`), in class-index order."""
    return read_classes(path)["name"].tolist()


def read_classes_table(path: str | os.PathLike) -> pd.DataFrame:
    """A user's class table (`dataset.classes_csv`): `id` required; `name`, `description` and
    `hypernym` optional; returned with CLASS_COLUMNS, as `write_prepared` writes it. A prepared
    dataset's own `classes.csv` is read by `read_classes`.

    Where every id is a WordNet noun id (ImageNet's `n01440764`), missing names, descriptions
    (WordNet glosses) and hypernyms come from WordNet, offline (synthscale.data.wordnet); otherwise
    `name` is required. Where every id is one of ImageNet-1k's, missing names are open_clip's curated
    ImageNet names (OpenAI's, as Fan et al. use them; `wordnet.imagenet1k_names`), not the first
    WordNet lemma, which repeats ("crane", "maillot") and misleads. Two classes with the same name are
    an error that names them: give them distinct names in the table's `name` column.
    """
    from synthscale.data import wordnet

    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "id" not in df.columns:
        raise ValueError(f"class table {path} lacks column(s) ['id']")
    if df["id"].duplicated().any():
        raise ValueError(f"class table {path}: id {df['id'][df['id'].duplicated()].iloc[0]!r} appears twice")
    for col in ("name", "description", "hypernym"):
        if col not in df.columns:
            df[col] = ""
    wnids = len(df) > 0 and all(wordnet.is_wnid(i) for i in df["id"])
    if not wnids and (df["name"] == "").any():
        raise ValueError(
            f"class table {path} lacks column(s) ['name'] (or a name for class "
            f"{df['id'][df['name'] == ''].iloc[0]!r}); only WordNet ids (n01440764) may omit names"
        )
    if wnids:
        curated = wordnet.imagenet1k_names()
        in1k = all(i in curated for i in df["id"])
        for i, wnid in enumerate(df["id"]):
            if in1k and not df.at[i, "name"]:
                df.at[i, "name"] = curated[wnid]
            missing = [c for c in ("name", "description", "hypernym") if not df.at[i, c]]
            if missing:
                row = wordnet.class_row(wnid)
                for c in missing:
                    df.at[i, c] = row[c]
    dup = df["name"][df["name"].duplicated(keep=False)]
    if len(dup):
        which = {n: df["id"][df["name"] == n].tolist() for n in dict.fromkeys(dup)}
        raise ValueError(
            f"class table {path}: classes share a name, which prompts and the zero-shot classifier cannot "
            f"tell apart: {which}; give them distinct names in the table's `name` column"
        )
    df = df.reset_index(drop=True)
    df.insert(0, "index", np.arange(len(df)))
    return df[CLASS_COLUMNS]


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def manifest_classes(path: str | os.PathLike) -> int:
    """The class count of a prepared dataset, from its manifest."""
    return int(read_manifest(path)["classes"])


def split_count(path: str | os.PathLike, split: str) -> int:
    """The image count of one split of a prepared dataset, from its manifest."""
    return int(read_manifest(path)["splits"][split]["count"])


def split_shards(manifest_path: str | os.PathLike, split: str) -> list[Path]:
    """The shard paths of one split, from its manifest."""
    manifest = read_manifest(manifest_path)
    if split not in manifest["splits"]:
        raise KeyError(f"no split {split!r} in {manifest_path}; have {sorted(manifest['splits'])}")
    base = Path(manifest_path).parent
    return [base / s for s in manifest["splits"][split]["shards"]]
