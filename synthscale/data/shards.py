"""WebDataset tar shards: one sample per image: the image (PNG, JPEG or WebP), its class, its caption
and a JSON record of its provenance.

Real splits and synthetic sets use the same layout, so every reader takes either. Per sample `key`:
`{key}.png|jpg|webp` (the image), `{key}.cls` (class index), `{key}.json` (the whole record) and, when the
record has a `caption` or a `prompt`, `{key}.txt` (the caption CLIP training reads).
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
from synthscale.study.plan import shard_name

# a fixed mtime keeps tar bytes identical across reruns
_MTIME = 0


IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")
FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
EXT_OF = {"png": "png", "jpeg": "jpg", "webp": "webp"}


def encode_image(image: np.ndarray, fmt: str = "png", quality: int = 95) -> bytes:
    """uint8 (H, W, C) with C in {1, 3}: PNG (lossless), JPEG or WebP bytes, written deterministically."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown image format {fmt!r}; choose from {sorted(FORMATS)}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    buf = io.BytesIO()
    im = Image.fromarray(image)
    if fmt == "png":
        im.save(buf, format="PNG", optimize=False, compress_level=6)
    else:
        im.save(buf, format=FORMATS[fmt], quality=int(quality))
    return buf.getvalue()


def encode_png(image: np.ndarray) -> bytes:
    return encode_image(image, "png")


def decode_image(data: bytes, mode: str = "RGB") -> np.ndarray:
    """Image bytes (PNG, JPEG, WebP) to uint8 (H, W, C); mode "L" gives C = 1, "RGB" gives C = 3."""
    with Image.open(io.BytesIO(data)) as im:
        arr = np.asarray(im.convert(mode))
    return arr[..., None] if arr.ndim == 2 else arr


decode_png = decode_image


def write_shard(
    path: str | os.PathLike,
    images: Sequence[np.ndarray | bytes],
    records: Sequence[dict[str, Any]],
    fmt: str = "png",
    quality: int = 95,
) -> None:
    """Write images with their records to a tar shard, atomically and byte-reproducibly.

    Each record must hold `key` (unique, sortable) and `label` (the class index). WebDataset's
    image (`.png`, `.jpg` or `.webp` by `fmt`), `.cls` and `.json` entries are written, plus `.txt`
    when the record has a `caption` (or else a `prompt`); the record goes whole into `.json`.
    An image given as bytes is taken as already encoded in `fmt`.
    """
    if len(images) != len(records):
        raise ValueError(f"{len(images)} images but {len(records)} records")
    ext = EXT_OF[fmt] if fmt in EXT_OF else fmt
    with atomic_path(path) as tmp:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for image, rec in zip(images, records):
                key = str(rec["key"])
                data = image if isinstance(image, bytes) else encode_image(image, fmt, quality)
                _add(tar, f"{key}.{ext}", data)
                _add(tar, f"{key}.cls", str(int(rec["label"])).encode())
                caption = rec.get("caption", rec.get("prompt"))
                if caption is not None:
                    _add(tar, f"{key}.txt", str(caption).encode())
                _add(tar, f"{key}.json", json.dumps(rec, sort_keys=True).encode())


class ShardWriter:
    """Write samples one at a time into numbered shards of `shard_size`, each shard atomic.

    Only the current shard's encoded images are held, so memory is bounded by one shard however
    many samples pass. Images given as bytes are taken as already encoded in `fmt`.
    Use as a context manager; `close()` flushes the last, partial shard. `names` lists the shards.
    """

    def __init__(self, folder: str | os.PathLike, shard_size: int, fmt: str = "png", quality: int = 95):
        if shard_size < 1:
            raise ValueError(f"shard_size must be positive, got {shard_size}")
        self.folder, self.shard_size, self.fmt, self.quality = Path(folder), shard_size, fmt, quality
        self.names: list[str] = []
        self.count = 0
        self._images: list[np.ndarray | bytes] = []
        self._records: list[dict[str, Any]] = []

    def write(self, image: np.ndarray | bytes, record: dict[str, Any]) -> None:
        self._images.append(image)
        self._records.append(record)
        self.count += 1
        if len(self._images) == self.shard_size:
            self._flush()

    def _flush(self) -> None:
        if not self._images:
            return
        name = shard_name(len(self.names))
        write_shard(self.folder / name, self._images, self._records, self.fmt, self.quality)
        self.names.append(name)
        self._images, self._records = [], []

    def close(self) -> None:
        self._flush()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:  # a failed write leaves no partial last shard
            self.close()


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
        ext = next(e for e in IMAGE_EXTS if e in sample)
        yield decode_image(_raw(sample, ext), mode), sample["json"]
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
