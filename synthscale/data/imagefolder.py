"""ImageFolder trees (`root/<class id>/**/*.jpg`, how ImageNet and its OOD sets come in) to shards,
streaming: memory stays bounded by about one shard however many images there are.

The class-interleaved order of the training split is computed on the file list; files are then
decoded (fully, so a truncated JPEG fails), resized (shorter side to the storage size, centre crop
optional) and encoded in worker processes, in that order, and written shard by shard, each shard
atomically. Unreadable files are skipped, counted and named in the log and the manifest; past
`dataset.max_bad_fraction` the job fails naming the first few. A skipped file's slot goes to the
next file of its class, so position i still holds class i mod C while classes last.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import shutil
import sys
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image

from synthscale.data.real import (
    class_subset,
    interleave_by_class,
    read_classes_table,
    shift_image,
    split_entry,
    write_prepared,
)
from synthscale.data.shards import ShardWriter, encode_image, image_mode

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".gif"}
CHUNK = 32  # files per worker task
SHOW_BAD = 5  # bad files named in an error


@dataclass(frozen=True)
class ImageSpec:
    """How an image is stored: shorter side `size` (square when `center_crop`), grey or RGB, codec."""

    size: int
    channels: int
    center_crop: bool
    fmt: str
    quality: int

    @classmethod
    def from_dataset(cls, ds: dict[str, Any]) -> "ImageSpec":
        """From the (schema-filled) `dataset` config: storage_size (null = image_size), encoding."""
        return cls(
            size=ds["storage_size"] or ds["image_size"],
            channels=ds["channels"],
            center_crop=ds["center_crop"],
            fmt=ds["encoding"]["format"],
            quality=ds["encoding"]["quality"],
        )


class TooManyBadFiles(RuntimeError):
    """More unreadable files than dataset.max_bad_fraction allows."""


@dataclass
class FileList:
    """The image files of one ImageFolder split: paths relative to `root`, and class indices."""

    root: Path
    files: list[str]
    labels: np.ndarray
    empty_classes: list[str]  # ids of scanned classes with no image (or no folder)


def scan_imagefolder(
    root: str | os.PathLike,
    class_ids: Sequence[str],
    indices: Sequence[int] | None = None,
    allow_empty: bool = False,
) -> FileList:
    """Every image under root/<class id>/ for the classes `indices` (None = all), sorted.

    A class whose folder is missing or holds no image is an error naming the class, unless
    `allow_empty` (eval sets), when it is listed in `empty_classes`.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    files: list[str] = []
    labels: list[int] = []
    empty: list[str] = []
    for ci in range(len(class_ids)) if indices is None else indices:
        cid = class_ids[ci]
        folder = root / cid
        found = sorted(_images_under(folder, root)) if folder.is_dir() else []
        if not found:
            if not allow_empty:
                what = "no folder" if not folder.is_dir() else "an empty folder"
                raise FileNotFoundError(f"image folder {root} has {what} for class {cid!r}")
            empty.append(cid)
        files += found
        labels += [ci] * len(found)
    if not files:
        raise FileNotFoundError(f"no images found under {root}")
    return FileList(root, files, np.asarray(labels, dtype=np.int64), empty)


def _images_under(folder: Path, root: Path) -> Iterator[str]:
    for dirpath, _, names in os.walk(folder):
        rel = os.path.relpath(dirpath, root)
        for n in names:
            if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS:
                yield os.path.join(rel, n)


def load_image(path: str | os.PathLike, spec: ImageSpec) -> np.ndarray:
    """Decode fully, resize the shorter side to spec.size (bicubic), centre-crop if asked: uint8 (H, W, C)."""
    with Image.open(path) as im:
        im.load()  # decode every byte now: a truncated file fails here
        im = im.convert(image_mode(spec.channels))
    w, h = im.size
    s = spec.size / min(w, h)
    im = im.resize((max(spec.size, round(w * s)), max(spec.size, round(h * s))), Image.BICUBIC)
    if spec.center_crop:
        w, h = im.size
        left, top = (w - spec.size) // 2, (h - spec.size) // 2
        im = im.crop((left, top, left + spec.size, top + spec.size))
    arr = np.asarray(im)
    return arr[..., None] if arr.ndim == 2 else arr


Task = tuple[str, int, int]  # (path, label, position for the shift's seed)
Result = tuple[int, "bytes | None", str]  # (label, encoded image or None, error)


def _work(tasks: list[Task], spec: ImageSpec, shift: dict[str, Any], seed: int) -> list[Result]:
    out: list[Result] = []
    for path, label, pos in tasks:
        try:
            image = load_image(path, spec)
            if shift["kind"] != "none":
                image = shift_image(image, shift, np.random.default_rng([seed, pos]))
            out.append((label, encode_image(image, spec.fmt, spec.quality), ""))
        except Exception as err:  # noqa: BLE001  (any decoder error means a bad file)
            out.append((label, None, f"{type(err).__name__}: {err}"))
    return out


def _results(
    tasks: Iterator[Task], spec: ImageSpec, shift: dict[str, Any], seed: int, workers: int
) -> Iterator[Result]:
    """Results in task order; chunks run in `workers` processes with a bounded number in flight."""
    chunks = iter(lambda: list(itertools.islice(tasks, CHUNK)), [])
    if workers <= 1:
        for chunk in chunks:
            yield from _work(chunk, spec, shift, seed)
        return
    ctx = multiprocessing.get_context("fork" if sys.platform != "win32" else "spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        pending: deque[Future] = deque()
        for chunk in chunks:
            pending.append(pool.submit(_work, chunk, spec, shift, seed))
            if len(pending) >= 2 * workers:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()


class _BadFiles:
    """Counts and names unreadable files; raises once they pass the allowed fraction."""

    def __init__(self, n_files: int, max_fraction: float, split: str):
        self.n_files, self.max_fraction, self.split = n_files, max_fraction, split
        self.files: list[str] = []

    def add(self, path: str, error: str) -> None:
        self.files.append(path)
        log.warning("prepare %s: skipping unreadable image %s (%s)", self.split, path, error)
        if len(self.files) > self.max_fraction * self.n_files:
            shown = ", ".join(self.files[:SHOW_BAD])
            more = f" and {len(self.files) - SHOW_BAD} more" if len(self.files) > SHOW_BAD else ""
            raise TooManyBadFiles(
                f"split {self.split!r}: {len(self.files)} of {self.n_files} images are unreadable, "
                f"more than dataset.max_bad_fraction = {self.max_fraction}: {shown}{more}"
            )


def _interleave_good(results: Iterator[tuple[int, Any]], totals: np.ndarray) -> Iterator[tuple[int, Any]]:
    """Round-robin over classes while they last, from a class-interleaved stream with holes.

    `results` yields (label, image or None) in interleaved file order; a None (a bad file) leaves
    its class's slot to that class's next good image, buffered until it arrives.
    """
    queues = [deque() for _ in totals]
    seen = np.zeros(len(totals), dtype=np.int64)
    active = [c for c in range(len(totals)) if totals[c] > 0]
    while active:
        still = []
        for c in active:
            while not queues[c] and seen[c] < totals[c]:
                label, data = next(results)
                seen[label] += 1
                if data is not None:
                    queues[label].append(data)
            if queues[c]:
                yield c, queues[c].popleft()
            if queues[c] or seen[c] < totals[c]:
                still.append(c)
        active = still


def prepare_split(
    out_dir: str | os.PathLike,
    name: str,
    files: FileList,
    spec: ImageSpec,
    shard_size: int,
    *,
    interleave_seed: int | None = None,
    shift: dict[str, Any] | None = None,
    shift_seed: int = 0,
    max_bad_fraction: float = 0.0,
    workers: int = 1,
    n_classes: int | None = None,
) -> tuple[list[str], list[str], np.ndarray]:
    """Stream one split's files into shards under out_dir/name.

    Returns (shard names, bad files, images written per class).
    With `interleave_seed` the order is class-interleaved (the training split); else scan order.
    """
    from tqdm import tqdm

    shift = shift or {"kind": "none"}
    order = (
        interleave_by_class(files.labels, interleave_seed)
        if interleave_seed is not None
        else np.arange(len(files.files))
    )
    # made lazily: only the chunks in flight exist, not a task per file
    tasks = ((str(files.root / files.files[i]), int(files.labels[i]), int(i)) for i in order)
    bad = _BadFiles(len(order), max_bad_fraction, name)
    n_classes = n_classes or int(files.labels.max()) + 1
    bar = tqdm(total=len(order), desc=f"prepare {name}", unit="img", mininterval=5, file=sys.stderr)
    stream = _checked(files, order, _results(tasks, spec, shift, shift_seed, workers), bad, bar)
    good = (
        _interleave_good(stream, np.bincount(files.labels, minlength=n_classes))
        if interleave_seed is not None
        else ((label, data) for label, data in stream if data is not None)
    )
    names, per_class = _write_shards(Path(out_dir) / name, good, spec, shard_size, n_classes)
    bar.close()
    if bad.files:
        log.warning("prepare %s: skipped %d unreadable image(s) of %d", name, len(bad.files), len(order))
    return names, bad.files, per_class


def _checked(
    files: FileList, order: np.ndarray, results: Iterator[Result], bad: _BadFiles, bar
) -> Iterator[tuple[int, tuple[bytes, str] | None]]:
    """(label, (encoded image, its file) or None where the file is unreadable), in `order`; each
    result ticks `bar`, and each unreadable file goes to `bad`."""
    for i, (label, data, err) in zip(order, results):
        bar.update()
        if data is None:
            bad.add(str(files.root / files.files[i]), err)
        yield label, None if data is None else (data, files.files[i])


def _write_shards(
    folder: Path, good: Iterator[tuple[int, tuple[bytes, str]]], spec: ImageSpec, shard_size: int, n_classes: int
) -> tuple[list[str], np.ndarray]:
    """Write the (label, (encoded image, file)) stream as shards in a fresh `folder`.

    Returns (shard names, images written per class)."""
    per_class = np.zeros(n_classes, dtype=np.int64)
    shutil.rmtree(folder, ignore_errors=True)  # no stale shards of an earlier run
    with ShardWriter(folder, shard_size, spec.fmt, spec.quality) as writer:
        for label, (data, rel) in good:
            writer.write(data, {"key": f"{writer.count:08d}", "label": label, "file": rel})
            per_class[label] += 1
    return writer.names, per_class


def prepare_imagefolder(
    out_dir: str | os.PathLike,
    ds: dict[str, Any],
    eval_sets: Sequence[dict[str, Any]],
    shard_size: int,
    seed: int,
    workers: int = 1,
    *,
    manifest_path: str | os.PathLike,
    classes_path: str | os.PathLike,
) -> dict[str, Any]:
    """Prepare an ImageFolder dataset: train from `train_dir` (class-interleaved), eval sets from
    their own roots (or `test_dir`), each over all classes or its `classes` subset.

    `ds` is the schema-filled `dataset` config. The manifest's split entries carry `n_bad` and
    `bad_files`; eval sets also `empty_classes` (ids) and, with a subset, `classes` (indices). The
    split shards go under `out_dir`; the manifest and class table where `write_prepared` puts them.
    """
    classes = read_classes_table(ds["classes_csv"])
    ids = classes["id"].tolist()
    spec = ImageSpec.from_dataset(ds)
    out_dir = Path(out_dir)
    manifest: dict[str, Any] = {"classes": len(classes), "splits": {}}
    common = dict(max_bad_fraction=ds["max_bad_fraction"], workers=workers, n_classes=len(ids))

    train = scan_imagefolder(ds["train_dir"], ids)
    shards, bad, per_class = prepare_split(out_dir, "train", train, spec, shard_size, interleave_seed=seed, **common)
    never = [ids[c] for c in np.flatnonzero(per_class == 0)]
    if never:
        raise FileNotFoundError(f"training split: no readable image for class(es) {never}")
    manifest["splits"]["train"] = split_entry("train", shards, per_class, None, bad)

    for k, ev in enumerate(eval_sets):
        root = ev.get("root") or ds["test_dir"]
        subset = class_subset(ev, ids, root)
        files = scan_imagefolder(root, ids, subset, allow_empty=True)
        if files.empty_classes:
            log.warning("eval set %s: no images for class(es) %s", ev["name"], files.empty_classes)
        shards, bad, per_class = prepare_split(
            out_dir, ev["name"], files, spec, shard_size,
            shift=ev.get("shift"), shift_seed=seed + 1 + k, **common,
        )
        manifest["splits"][ev["name"]] = split_entry(
            ev["name"], shards, per_class, subset, bad, empty_classes=files.empty_classes
        )
    write_prepared(out_dir, classes, manifest, manifest_path, classes_path)
    return manifest
