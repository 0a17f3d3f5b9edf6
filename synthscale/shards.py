"""WebDataset tar shards: one sample per image, PNG plus a JSON record of its provenance.

Real splits and synthetic sets use the same layout, so every reader takes either.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from synthscale.io import atomic_path
from synthscale.plan import shard_name, shards_for  # noqa: F401  (re-exported)

# a fixed mtime keeps tar bytes identical across reruns
_MTIME = 0


def encode_png(image: np.ndarray) -> bytes:
    """uint8 (H, W, C) with C in {1, 3}: PNG bytes, written deterministically."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def decode_png(data: bytes, mode: str = "RGB") -> np.ndarray:
    """PNG bytes to uint8 (H, W, C); mode "L" gives C = 1, "RGB" gives C = 3."""
    with Image.open(io.BytesIO(data)) as im:
        arr = np.asarray(im.convert(mode))
    return arr[..., None] if arr.ndim == 2 else arr


def write_shard(
    path: str | os.PathLike, images: Sequence[np.ndarray], records: Sequence[dict[str, Any]]
) -> None:
    """Write images with their records to a tar shard, atomically and byte-reproducibly.

    Each record must hold `key` (unique, sortable) and `label` (the class index). WebDataset's
    `.png`, `.cls` and `.json` entries are written; the record goes whole into `.json`.
    """
    if len(images) != len(records):
        raise ValueError(f"{len(images)} images but {len(records)} records")
    with atomic_path(path) as tmp:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for image, rec in zip(images, records):
                key = str(rec["key"])
                _add(tar, f"{key}.png", encode_png(image))
                _add(tar, f"{key}.cls", str(int(rec["label"])).encode())
                _add(tar, f"{key}.json", json.dumps(rec, sort_keys=True).encode())


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = _MTIME
    info.mode = 0o644
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def iter_shards(
    paths: Iterable[str | os.PathLike], mode: str = "RGB", limit: int | None = None
) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    """Yield (image, record) in shard order, stopping after `limit` samples."""
    import webdataset as wds  # imports torch: only readers pay for it

    urls = [str(p) for p in paths]
    if not urls:
        return
    ds = wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode()
    n = 0
    for sample in ds:
        if limit is not None and n >= limit:
            return
        yield decode_png(_raw(sample, "png"), mode), sample["json"]
        n += 1


def _raw(sample: dict, ext: str) -> bytes:
    # `.decode()` without handlers leaves images as bytes
    data = sample[ext]
    return data if isinstance(data, bytes) else bytes(data)


def load_arrays(
    paths: Iterable[str | os.PathLike], mode: str = "RGB", limit: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """All images (N, H, W, C) uint8, labels (N,) and records of the first `limit` samples."""
    images, labels, records = [], [], []
    for image, rec in iter_shards(paths, mode, limit):
        images.append(image)
        labels.append(int(rec["label"]))
        records.append(rec)
    if limit is not None and len(images) < limit:
        raise ValueError(f"asked for {limit} images but the shards hold only {len(images)}")
    return np.stack(images), np.asarray(labels, dtype=np.int64), records


def shard_paths(folder: str | os.PathLike, n_shards: int) -> list[Path]:
    return [Path(folder) / shard_name(k) for k in range(n_shards)]
