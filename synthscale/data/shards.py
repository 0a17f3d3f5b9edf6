"""WebDataset tar shards: one sample per image: the image (PNG, JPEG or WebP), its class, its caption
and a JSON record of its provenance.

Real splits and synthetic sets use the same layout, so every reader takes either. Per sample `key`:
`{key}.png|jpg|webp` (the image), `{key}.cls` (class index), `{key}.json` (the whole record) and, when the
record has a `caption` or a `prompt`, `{key}.txt` (the caption CLIP training reads).

Every shard of the project is written here (`write_shard`, `ShardWriter`: ustar, members in that order,
mtime 0, so the bytes depend on the samples alone) and read here: `tar_members` parses the tar, and
`tar_samples` groups its members into samples, resuming inside a shard with `skip`; the readers of
the stages (`iter_shards`, `load_arrays`, the loaders' `read_shard`, the `wds_samples` stage of
webdataset pipelines) build on them.
"""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import json
import os
import tarfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from synthscale.io import atomic_path

# a fixed mtime keeps tar bytes identical across reruns
_MTIME = 0


SHARD_DIGITS = 6  # a shard's index in its file name, zero-padded


def shard_name(k: int) -> str:
    """The file name of a folder's k-th shard, the one spelling of it (Plan builds shard paths from it)."""
    return shard_pattern(f"{k:0{SHARD_DIGITS}d}")


def shard_pattern(digits: str) -> str:
    """A shard file name around its index given as text: `shard_name` with the digits spelled by the
    caller, e.g. a Snakemake wildcard followed by the block's last digits (Plan.block_outputs)."""
    return f"shard-{digits}.tar"


def shard_index(name: str) -> int | None:
    """The index k of `shard_name(k)`; None for a file name that is not a shard's."""
    head, tail = shard_pattern("|").split("|")
    digits = name[len(head) : -len(tail)] if name.startswith(head) and name.endswith(tail) else ""
    k = int(digits) if digits.isdigit() else None
    return k if k is not None and shard_name(k) == name else None  # only the canonical spelling


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


def image_mode(channels: int) -> str:
    """PIL's mode for images of `channels` channels (`dataset.channels`, a pipeline's): "L" (grey) for
    one, else "RGB"."""
    return "L" if channels == 1 else "RGB"


def decode_image(data: bytes, mode: str = "RGB") -> np.ndarray:
    """Image bytes (PNG, JPEG, WebP) to uint8 (H, W, C); mode "L" gives C = 1, "RGB" gives C = 3."""
    with Image.open(io.BytesIO(data)) as im:
        arr = np.asarray(im.convert(mode))
    return arr[..., None] if arr.ndim == 2 else arr


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
    with atomic_path(path) as tmp, _open_tar(tmp) as tar:
        for image, rec in zip(images, records):
            _add_sample(tar, _encoded(image, fmt, quality), rec, _ext(fmt))


class ShardWriter:
    """Write samples one at a time into numbered shards of `shard_size`, each shard atomic; a sequence
    of sizes gives shard i its own size (the last size holds for any shard after the list).

    Each sample goes into the open shard as it comes (the entries `write_shard` writes), so memory
    holds one sample however many pass. Images given as bytes are taken as already encoded in `fmt`
    (or in the `ext` given with them). Use as a context manager; `close()` finishes the last,
    partial shard, and an error inside the block leaves no partial shard. `names` lists the shards
    finished, `count` the samples written.
    """

    def __init__(
        self, folder: str | os.PathLike, shard_size: int | Sequence[int], fmt: str = "png", quality: int = 95
    ):
        sizes = [shard_size] if isinstance(shard_size, int) else [int(k) for k in shard_size]
        if not sizes or min(sizes) < 1:
            raise ValueError(f"shard sizes must be positive, got {shard_size}")
        self.folder, self.sizes, self.fmt, self.quality = Path(folder), sizes, fmt, quality
        self.names: list[str] = []
        self.count = 0
        self._in_shard = 0
        self._shard: contextlib.ExitStack | None = None
        self._tar: tarfile.TarFile | None = None

    def write(self, image: np.ndarray | bytes, record: dict[str, Any], ext: str | None = None) -> None:
        """Add one sample (record as `write_shard` takes it); `ext`: the image entry's extension for
        an already encoded image (default: the writer's format's)."""
        if self._tar is None:
            self._open()
        _add_sample(self._tar, _encoded(image, self.fmt, self.quality), record, ext or _ext(self.fmt))
        self.count += 1
        self._in_shard += 1
        if self._in_shard == self.sizes[min(len(self.names), len(self.sizes) - 1)]:
            self.close()

    def _open(self) -> None:
        self._shard = contextlib.ExitStack()
        tmp = self._shard.enter_context(atomic_path(self.folder / shard_name(len(self.names))))
        self._tar = self._shard.enter_context(_open_tar(tmp))

    def close(self) -> None:
        """Finish the open shard, if any: rename it into place and add it to `names`."""
        if self._shard is not None:
            self._shard.close()
            self.names.append(shard_name(len(self.names)))
            self._shard, self._tar, self._in_shard = None, None, 0

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self._shard is not None:  # a failed write leaves no partial last shard
            self._shard.__exit__(exc_type, exc, tb)  # the tar unfinished, its temporary file removed
            self._shard, self._tar = None, None


def _open_tar(path: Path) -> tarfile.TarFile:
    return tarfile.open(path, "w", format=tarfile.USTAR_FORMAT)


def _ext(fmt: str) -> str:
    """The image entry's extension for an image format (`jpeg` is written as `.jpg`)."""
    return EXT_OF.get(fmt, fmt)


def _encoded(image: np.ndarray | bytes, fmt: str, quality: int) -> bytes:
    return image if isinstance(image, bytes) else encode_image(image, fmt, quality)


def _add_sample(tar: tarfile.TarFile, data: bytes, rec: dict[str, Any], ext: str) -> None:
    """One sample's entries, in this order: the image, `.cls`, `.txt` (when the record has a caption
    or a prompt) and `.json` (the whole record)."""
    key = str(rec["key"])
    _add(tar, f"{key}.{ext}", data)
    _add(tar, f"{key}.cls", str(int(rec["label"])).encode())
    caption = rec.get("caption", rec.get("prompt"))
    if caption is not None:
        _add(tar, f"{key}.txt", str(caption).encode())
    _add(tar, f"{key}.json", json.dumps(rec, sort_keys=True).encode())


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """One member: mode 0644, mtime 0 and no owner names, so the tar's bytes depend on data alone."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = _MTIME
    info.mode = 0o644
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


# --------------------------------------------------------------------------------------------------
# reading: one lean tar reader under every reader of the project
# --------------------------------------------------------------------------------------------------

_NUL = b"\0" * 512


def tar_members(path: str | os.PathLike) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """(name, read) of every regular file of a ustar tar, in order; `read()` gives the member's bytes
    while it is the current one. Members not read are passed over by their headers (one 512-byte
    header each). GNU long names are followed; pax headers (this module never writes them) and a
    member cut short by the file's end are errors."""
    longname, at = None, 0
    with open(path, "rb", buffering=1 << 20) as f:
        end = os.fstat(f.fileno()).st_size
        while True:
            hdr = f.read(512)
            if not hdr or hdr == _NUL:
                return
            # a header cut short counts as a member that runs past the end
            size = int(hdr[124:136].split(b"\0", 1)[0].strip() or b"0", 8) if len(hdr) == 512 else end
            at, typ = at + 512, hdr[156:157]
            if at + size > end:
                raise ValueError(f"{path}: a tar member runs past the end of the file (truncated shard?)")
            if typ == b"L":
                longname = f.read(size).split(b"\0", 1)[0].decode()
            elif typ in (b"x", b"g"):
                raise ValueError(f"{path}: pax tar headers are not supported; write shards as ustar")
            else:
                name, longname = longname or _ustar_name(hdr), None
                if typ in (b"0", b"\0"):
                    yield name, functools.partial(_read_at, f, at, size)
            at += (size + 511) & ~511
            f.seek(at)


def _ustar_name(hdr: bytes) -> str:
    """A ustar header's member name: its prefix field, when set, joined to its name field."""
    name = hdr[:100].split(b"\0", 1)[0].decode()
    prefix = hdr[345:500].split(b"\0", 1)[0]
    return f"{prefix.decode()}/{name}" if prefix else name


def _read_at(f: BinaryIO, offset: int, size: int) -> bytes:
    f.seek(offset)
    return f.read(size)


def member_key(name: str) -> str:
    """The sample key of a tar member: its basename up to the first dot (`a/00000007.json` -> `00000007`)."""
    return name.rsplit("/", 1)[-1].split(".", 1)[0]


def tar_samples(
    path: str | os.PathLike, skip: int = 0, wanted: Callable[[str], bool] | None = None
) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {ext: bytes}) of every sample of a shard, in order, one sample in memory at a time.

    Members are grouped by `member_key` as WebDataset groups a flat shard; `ext` is the rest of the
    basename after the key, lowercased. `skip`: the first `skip` samples are passed over by their
    headers (their bytes are not read), so a reader resumes inside a shard. `wanted(name)`: read only
    the members it accepts (default all); a sample left with none is not yielded."""
    key, files, seen = None, {}, 0  # seen: keys met so far; the current key's number is seen - 1
    for name, read in tar_members(path):
        k, _, ext = name.rsplit("/", 1)[-1].partition(".")  # k is member_key(name)
        if k != key:
            if files:
                yield key, files
            key, files, seen = k, {}, seen + 1
        if seen > skip and (wanted is None or wanted(name)):
            files[ext.lower()] = read()
    if files:
        yield key, files


def iter_samples(paths: Iterable[str | os.PathLike]) -> Iterator[tuple[str, dict[str, bytes]]]:
    """`tar_samples` of each shard in turn: (key, {ext: bytes}) of every sample, in shard order."""
    for path in paths:
        yield from tar_samples(path)


def wds_samples(src: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """A webdataset pipeline stage in place of `wds.tarfile_to_samples()`: shard items (`{"url": path}`)
    in, WebDataset samples (`{"__key__", "__url__", ext: bytes}`) out, read by `tar_samples`."""
    for item in src:
        for key, files in tar_samples(item["url"]):
            yield {"__key__": key, "__url__": item["url"], **files}


def image_ext(files: dict[str, Any], key: str, where: str = "") -> str:
    """The extension of a sample's image entry: the first of `IMAGE_EXTS` it has; an error naming the
    sample (and `where` it is) when it has none."""
    ext = next((e for e in IMAGE_EXTS if e in files), None)
    if ext is None:
        raise ValueError(f"sample {key}{' in ' + where if where else ''} has no image ({', '.join(IMAGE_EXTS)})")
    return ext


def iter_shards(
    paths: Iterable[str | os.PathLike], mode: str = "RGB", limit: int | None = None
) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    """(image decoded to `mode`, record) of the first `limit` samples (None: all), in shard order."""
    for key, files in itertools.islice(iter_samples(paths), limit):
        yield decode_image(files[image_ext(files, key)], mode), json.loads(files["json"])


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
