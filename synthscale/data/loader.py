"""Training and evaluation data: torch DataLoaders over WebDataset shards, decoded in the workers.

The training stream (`build_train_loader`) reads the shards of one or more *parts*, keeps each
part's first N images (every record's key is its global position, so the filter does not depend on
the worker count), shuffles shards and samples per (seed, epoch), and decodes and augments in the
loader's workers (`synthscale.data.transforms`: timm's `create_transform`). Each sample's augmentation
is seeded from (seed, epoch, part, position), so it is the same whichever worker draws it; for a fixed
worker count the batch order is fixed too. With uint8 batches (`uint8_batches`, on for CUDA) the workers
stop before ToTensor/Normalize and random erasing, which `transforms.DeviceNormalize` applies to the
batch on the device. Batches form inside each worker (a worker's last batch may be short), so the number
of batches of an epoch is counted as they come; the trainer schedules by images seen.

Parts are mixed at the sample level, never read one after the other: in `concat` mode each stream
(a rank's worker) reads its share of every part through that part's own shuffle buffer, and each draw
takes the next image of a part chosen with probability proportional to the images that part has left
in this stream (`interleave`): a uniformly random interleaving, so every stretch of batches holds the
parts in about their overall proportion, from the first batch to the last.

Every stream reads a balanced share of every part: the part's shards, in one order for the epoch
(shuffled per (seed, epoch)), are one sequence of n samples, and stream s of S (ranks x workers;
torch.distributed initialised or not) reads the contiguous range [s*n//S, (s+1)*n//S) of it, so every
stream holds each part in its global share (to one sample) and every image comes once an epoch
(arrays: every S-th position of a permutation). Memory: one shuffle buffer per part, all alive at
once, in every worker.
"""

from __future__ import annotations

import functools
import io
import json
import os
import random
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from synthscale.data.shards import IMAGE_EXTS, image_ext, member_key, tar_members, tar_samples
from synthscale.preemption import ignore_stop_signals
from synthscale.data.transforms import eval_transform, seeded_apply, train_transform
from synthscale.seeds import mix_seed

# --------------------------------------------------------------------------------------------------
# raw samples: (image bytes or array, label, global index)
# --------------------------------------------------------------------------------------------------


def sample_index(sample: dict[str, Any]) -> int:
    """A WebDataset sample's global position: its key (prepare_data and generation write the position
    as the key), else its record's `index`."""
    key = sample["__key__"].rsplit("/", 1)[-1]
    if key.isdigit():
        return int(key)
    rec = sample["json"]
    return int((json.loads(rec) if isinstance(rec, (bytes, bytearray)) else rec)["index"])


def _wanted(name: str) -> bool:
    """Tar members the training stream reads: the image and the class (the record only when the key
    is no position)."""
    ext = name.rsplit(".", 1)[-1].lower()
    return ext in IMAGE_EXTS or ext == "cls" or (ext == "json" and not member_key(name).isdigit())


def first_index(shard: str | Path) -> int:
    """The global position of a shard's first sample (reads one tar header; remembered per file
    version)."""
    st = os.stat(shard)
    return _first_index(str(shard), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=100_000)
def _first_index(shard: str, _mtime: int, _size: int) -> int:
    for name, _ in tar_members(shard):
        return int(member_key(name))
    return 1 << 62


def shard_count(shard: str | Path) -> int:
    """The samples in a shard (images; counted from its tar headers, no image read; remembered per
    file version)."""
    st = os.stat(shard)
    return _shard_count(str(shard), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=100_000)
def _shard_count(shard: str, _mtime: int, _size: int) -> int:
    names = (name for name, _ in tar_members(shard))
    return len({member_key(n) for n in names if n.rsplit(".", 1)[-1].lower() in IMAGE_EXTS})


def nested_shards(shards: Sequence[str | Path], limit: int | None) -> list[str]:
    """The shards that can hold one of the first `limit` images (shards are in index order)."""
    urls = [str(s) for s in shards]
    if limit is None:
        return urls
    return [u for u in urls if first_index(u) < limit]


_DECODED: dict[bytes, np.ndarray] = {}
_DECODED_BYTES = [0]  # what the decode cache and the shard cache hold in this process
_SHARDS: dict[tuple[str, int, int], list[tuple[Any, int, int]]] = {}


def shard_samples(
    url: str, budget_mb: float, skip: int = 0
) -> Iterator[tuple[Any, int, int]] | list[tuple[Any, int, int]]:
    """(image bytes, label, global index) of every sample of a shard, in order.

    Within `budget_mb` per process (the budget `decode_cached` also draws on) a shard's samples are
    kept after its first read, so later epochs of a small set skip the tar parsing; a shard that does
    not fit streams from disk, one sample at a time. Budget 0: always from disk. `skip`: start at the
    shard's sample `skip` (a stream's range can begin inside a shard)."""
    if budget_mb:
        st = os.stat(url)
        key = (url, st.st_mtime_ns, st.st_size)
        hit = _SHARDS.get(key)
        if hit is not None:
            return hit[skip:]
        if _DECODED_BYTES[0] + st.st_size <= budget_mb * 2**20:
            samples = list(read_shard(url))
            _SHARDS[key] = samples
            _DECODED_BYTES[0] += sum(len(raw) for raw, _, _ in samples)
            return samples[skip:]
    return read_shard(url, skip)


def read_shard(url: str | os.PathLike, skip: int = 0) -> Iterator[tuple[Any, int, int]]:
    """(image bytes, label, global index) of every sample of a shard from its sample `skip` on, in
    order, from disk."""
    for key, files in tar_samples(url, skip, _wanted):
        if "cls" not in files:
            raise ValueError(f"sample {key} in {url} lacks a .cls entry")
        yield files[image_ext(files, key, str(url))], int(files["cls"]), sample_index({"__key__": key, **files})


def decode_cached(raw: Any, budget_mb: float) -> np.ndarray | Image.Image:
    """`decode`, remembering decoded images (keyed by their encoded bytes) up to `budget_mb` per
    process: small sets trained for many epochs decode each image once. Budget 0: no cache."""
    if not budget_mb or isinstance(raw, np.ndarray):
        return decode(raw)
    hit = _DECODED.get(raw)
    if hit is not None:
        return hit
    arr = np.asarray(decode(raw))
    if _DECODED_BYTES[0] + arr.nbytes + len(raw) <= budget_mb * 2**20:
        arr.setflags(write=False)
        _DECODED[raw] = arr
        _DECODED_BYTES[0] += arr.nbytes + len(raw)
    return arr


_READY: dict[tuple, dict[bytes, Any]] = {}  # per transform (size, pad, mean, std): raw bytes -> Ready


def ready_cached(raw: Any, budget_mb: float, tf: Any) -> Any:
    """`decode_cached`, then, when the transform has a fast path for the image (`tf.ready`), its
    padded and normalised form, kept within the same budget: later epochs only crop it."""
    if not budget_mb or isinstance(raw, np.ndarray) or not hasattr(tf, "ready"):
        return decode_cached(raw, budget_mb)
    cache = _READY.setdefault(tf.ready_key, {})
    hit = cache.get(raw)
    if hit is not None:
        return hit
    image = decode_cached(raw, budget_mb)
    ready = tf.ready(np.asarray(image)) if getattr(tf, "identity", False) else None
    if ready is None:
        return image
    if _DECODED_BYTES[0] + ready.array.nbytes <= budget_mb * 2**20:
        cache[raw] = ready
        _DECODED_BYTES[0] += ready.array.nbytes
    return ready


def decode(raw: Any) -> Image.Image:
    """Image bytes (png/jpg/webp) or a uint8 array to an RGB PIL image (grey repeated to 3 channels)."""
    if isinstance(raw, np.ndarray):
        arr = raw[..., 0] if raw.ndim == 3 and raw.shape[2] == 1 else raw
        return Image.fromarray(arr).convert("RGB")
    with Image.open(io.BytesIO(raw)) as im:
        return im.convert("RGB")


def _worker() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info else (0, 1)


def _rank() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _buffer_shuffle(it: Iterator, size: int, rng: random.Random) -> Iterator:
    """Shuffle a stream through a buffer of `size` items (size 0: keep the order)."""
    if size <= 0:
        yield from it
        return
    buf: list = []
    for x in it:
        if len(buf) < size:
            buf.append(x)
            continue
        j = rng.randrange(size)
        yield buf[j]
        buf[j] = x
    rng.shuffle(buf)
    yield from buf


def part_stream(
    part: dict[str, Any], seed: int, epoch: int, shuffle: bool, buffer: int, split: bool = True,
    cache_mb: float = 0,
) -> Iterator[tuple[Any, int, int]]:
    """This worker's (raw image, label, index) of one part for one epoch.

    A part is {"shards": [paths], "limit": N or None} or, in memory, {"arrays": (images, labels),
    "limit": N or None}. With `split`, samples are divided over the streams (ranks x workers) in
    balanced ranges (`_my_range`; arrays: every S-th position).
    `cache_mb`: shards kept in memory across epochs within this budget (`shard_samples`).
    `stream_size` counts what it yields.
    """
    wid, nw = _worker()
    rank, world = _rank()
    limit = part.get("limit")
    if "arrays" in part:
        images, labels = part["arrays"]
        n = len(labels) if limit is None else min(limit, len(labels))
        order = np.arange(n)
        if shuffle:
            order = np.random.default_rng(mix_seed(seed, epoch, 17)).permutation(n)
        if split:
            order = order[rank * nw + wid :: world * nw]
        for i in order:
            yield images[i], int(labels[i]), int(i)
        return

    # one stream per (rank, worker): numbered globally, so 2 ranks x 1 worker = 1 rank x 2 workers
    rng = random.Random(mix_seed(seed, epoch, rank * nw + wid, 31))
    pieces = _my_range(part, split, seed if shuffle else None, epoch)

    def raw() -> Iterator[tuple[Any, int, int]]:
        for url, skip, take in pieces:
            got = 0
            for sample in shard_samples(url, cache_mb, skip):
                if got == take or (limit is not None and sample[2] >= limit):
                    break  # a shard holds consecutive positions: the rest is past N too
                got += 1
                yield sample

    yield from _buffer_shuffle(raw(), buffer if shuffle else 0, rng)


def shard_lengths(urls: Sequence[str], limit: int | None) -> list[int]:
    """Each shard's sample count in the part, cut at the first `limit` positions. The keys are global
    positions and shards come in index order, so a shard's count is where the next one starts minus
    where it starts (one tar header a shard, `first_index`); the last shard's is `limit` minus its
    start, or its header count (`shard_count`). Shards whose keys are no positions: header counts.
    A count may exceed what a shard holds (a gap in the positions), never fall short of it."""
    if not urls:
        return []
    try:
        starts = [first_index(u) for u in urls]
    except ValueError:  # keys that are no positions
        starts = None
    if starts is None or any(b <= a for a, b in zip(starts, starts[1:])):
        counts = [shard_count(u) for u in urls]
        if starts is None or limit is None:
            return counts
        return [max(0, min(n, int(limit) - a)) for n, a in zip(counts, starts)]
    ends = starts[1:] + [int(limit) if limit is not None else starts[-1] + shard_count(urls[-1])]
    if limit is not None:
        ends = [min(e, int(limit)) for e in ends]
    return [max(0, e - a) for a, e in zip(starts, ends)]


def _lengths(part: dict[str, Any]) -> tuple[list[str], list[int]]:
    urls = [str(u) for u in (part.get("_urls") or nested_shards(part["shards"], part.get("limit")))]
    lengths = part.get("_lengths")
    if lengths is None or len(lengths) != len(urls):
        lengths = shard_lengths(urls, part.get("limit"))
    return urls, list(lengths)


def _stream_bounds(n: int, split: bool) -> tuple[int, int]:
    """This stream's range [lo, hi) of a part's n sample positions: stream s of S (ranks x workers,
    numbered globally) gets [s*n//S, (s+1)*n//S), so every stream's share is within one sample of n/S."""
    if not split:
        return 0, n
    wid, nw = _worker()
    rank, world = _rank()
    s, streams = rank * nw + wid, world * nw
    return s * n // streams, (s + 1) * n // streams


def _my_range(part: dict[str, Any], split: bool, seed: int | None, epoch: int) -> list[tuple[str, int, int]]:
    """(shard, first sample, samples) this stream reads of a shard part: the part's shards in one order
    (shuffled per (seed, epoch) unless seed is None; the same in every stream) are one sequence of n
    samples, of which this stream takes its contiguous range (`_stream_bounds`): a balanced share of
    every part in every stream, and together every sample exactly once."""
    urls, lengths = _lengths(part)
    order = list(range(len(urls)))
    if seed is not None:
        random.Random(mix_seed(seed, epoch, 29)).shuffle(order)
    lo, hi = _stream_bounds(sum(lengths), split)
    out, at = [], 0
    for j in order:
        a, b = max(lo, at), min(hi, at + lengths[j])
        if a < b:
            out.append((urls[j], a - at, b - a))
        at += lengths[j]
    return out


def stream_size(part: dict[str, Any], split: bool = True) -> int:
    """How many samples `part_stream` yields in this worker: its share of the part's first N (arrays:
    every S-th position; shards: its range of the shards' counts, `_my_range`)."""
    limit = part.get("limit")
    if "arrays" in part:
        n = len(part["arrays"][1]) if limit is None else min(int(limit), len(part["arrays"][1]))
        if not split:
            return n
        wid, nw = _worker()
        rank, world = _rank()
        return len(range(rank * nw + wid, n, world * nw))
    lo, hi = _stream_bounds(sum(_lengths(part)[1]), split)
    return hi - lo


_END = object()


def interleave(
    streams: Sequence[Iterator], sizes: Sequence[int], rng: random.Random
) -> Iterator[tuple[int, Any]]:
    """(k, item): the items of every stream, each draw from stream k with probability proportional to
    what it has left (`sizes`: each stream's length). This gives every interleaving of the streams the
    same chance: any stretch holds them in about their overall proportion. Memory: one item.

    Sizes only steer the draws: a stream that ends early drops out, one that runs past its size is
    read out at the end, so every item still comes exactly once."""
    its = [iter(s) for s in streams]
    left = [max(0, int(n)) for n in sizes]
    total = sum(left)
    while total > 0:
        r = rng.randrange(total)
        k = 0
        while r >= left[k]:
            r -= left[k]
            k += 1
        item = next(its[k], _END)
        if item is _END:
            total -= left[k]
            left[k] = 0
            continue
        left[k] -= 1
        total -= 1
        yield k, item
    for k, it in enumerate(its):
        for item in it:
            yield k, item


# --------------------------------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------------------------------


class TrainStream(torch.utils.data.IterableDataset):
    """One epoch of augmented (image, label) samples over the parts (see `build_train_loader`)."""

    def __init__(
        self,
        parts: list[dict[str, Any]],
        recipe: dict[str, Any],
        seed: int,
        epoch: int,
        mix: dict[str, Any] | None = None,
        batch_size: int = 1,
        shuffle: bool = True,
    ):
        super().__init__()
        self.parts = [self._prepare(p) for p in parts]
        self.recipe, self.seed, self.epoch = recipe, int(seed), int(epoch)
        # the epoch as persistent workers see it: shared memory, set by `set_epoch` in the main
        # process before each epoch's iterator starts (workers read it when their stream begins)
        self._shared_epoch = torch.full((), int(epoch), dtype=torch.int64).share_memory_()
        self.mix = {"mode": "concat", **(mix or {})}
        if self.mix["mode"] not in ("concat", "prob"):
            raise ValueError(f"mix mode must be 'concat' or 'prob', got {self.mix['mode']!r}")
        if self.mix["mode"] == "prob" and len(self.parts) != 2:
            raise ValueError("mix mode 'prob' takes two parts: real first, synthetic second")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.tf = None

    def set_epoch(self, epoch: int) -> None:
        """The epoch of the next iteration, in this process and in persistent workers."""
        self.epoch = int(epoch)
        self._shared_epoch.fill_(int(epoch))

    @staticmethod
    def _prepare(part: dict[str, Any]) -> dict[str, Any]:
        if "arrays" in part:
            return dict(part)
        urls = nested_shards(part["shards"], part.get("limit"))
        # counted once here, before the workers start (they inherit the counts)
        return {**part, "_urls": urls, "_lengths": shard_lengths(urls, part.get("limit"))}

    def _samples(self) -> Iterator[tuple[Any, int, int, int]]:
        buf = int(self.recipe.get("shuffle_buffer", 0))
        mb = self.recipe.get("decode_cache_mb", 0)
        wid, nw = _worker()
        rank, _ = _rank()
        if self.mix["mode"] == "concat":
            # a mixture: each draw from a part with probability proportional to what it has left here
            streams = [part_stream(p, mix_seed(self.seed, k), self.epoch, self.shuffle, buf, cache_mb=mb)
                       for k, p in enumerate(self.parts)]
            if len(streams) == 1:  # nothing to mix (no shard counts to read)
                for raw, y, i in streams[0]:
                    yield raw, y, 0, i
                return
            sizes = [stream_size(p) for p in self.parts]
            rng = random.Random(mix_seed(self.seed, self.epoch, rank * nw + wid, 37))
            for k, (raw, y, i) in interleave(streams, sizes, rng):
                yield raw, y, k, i
            return
        # "prob": each slot of the real stream is taken from the synthetic part with probability p
        prob = float(self.mix.get("synthetic_prob", 0.5))
        per_batch = self.mix.get("per", "sample") == "batch"
        rng = random.Random(mix_seed(self.seed, self.epoch, rank * nw + wid, 41))
        synth = self._cycle(self.parts[1], buf)
        pick = False
        for slot, (raw, y, i) in enumerate(
            part_stream(self.parts[0], mix_seed(self.seed, 0), self.epoch, self.shuffle, buf, cache_mb=mb)
        ):
            if not per_batch or slot % self.batch_size == 0:
                pick = rng.random() < prob
            if pick:
                s = next(synth, None)
                if s is not None:
                    yield s
                    continue
            yield raw, y, 0, i

    def _cycle(self, part: dict[str, Any], buf: int) -> Iterator[tuple[Any, int, int, int]]:
        """This stream's balanced share of the synthetic part, read again (reshuffled, a new share) when
        it runs out; the whole part when the share is empty (fewer images than streams)."""
        rounds = 0
        split = stream_size(part) > 0  # from the counts: no image read
        while True:
            got = False
            ep = self.epoch * 1_000 + rounds
            mb = self.recipe.get("decode_cache_mb", 0)
            for raw, y, i in part_stream(part, mix_seed(self.seed, 1), ep, self.shuffle, buf, split, mb):
                got = True
                yield raw, y, 1, i
            if not got:
                return
            rounds += 1

    def __iter__(self):
        self.epoch = int(self._shared_epoch)  # a persistent worker's copy learns the epoch here
        if self.tf is None:
            self.tf = train_transform(self.recipe)
        for raw, y, k, i in self._samples():
            image = ready_cached(raw, self.recipe.get("decode_cache_mb", 0), self.tf)
            x = seeded_apply(self.tf, image, mix_seed(self.seed, self.epoch, k, i, 53))
            yield x, y


class EvalStream(torch.utils.data.IterableDataset):
    """(image, label) of an eval split in shard order through the eval transform; split by worker."""

    def __init__(self, shards: Sequence[str | Path], recipe: dict[str, Any]):
        super().__init__()
        self.part = {"shards": [str(s) for s in shards], "limit": None}
        self.recipe = recipe

    def __iter__(self):
        tf = eval_transform(self.recipe)
        for raw, y, _ in part_stream(self.part, 0, 0, shuffle=False, buffer=0):
            yield tf(decode(raw)), y


def _loader(
    ds, batch_size: int, recipe: dict[str, Any], workers: int, persistent: bool = False
) -> torch.utils.data.DataLoader:
    kw: dict[str, Any] = {}
    if workers > 0:
        kw = {
            "prefetch_factor": int(recipe.get("prefetch_factor", 2)),
            "persistent_workers": persistent,
            "multiprocessing_context": "fork" if _can_fork() else None,
            "worker_init_fn": ignore_stop_signals,
        }
    return torch.utils.data.DataLoader(
        ds,
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=bool(recipe.get("pin_memory", False)) and torch.cuda.is_available(),
        **kw,
    )


def _can_fork() -> bool:
    import multiprocessing as mp

    return "fork" in mp.get_all_start_methods()


def part_size(part: dict[str, Any], manifest_counts: dict[str, int] | None = None) -> int:
    """Images in a part: its limit, else the count of its shards (read from the shards if needed)."""
    if "arrays" in part:
        n = len(part["arrays"][1])
        return n if part.get("limit") is None else min(n, int(part["limit"]))
    if part.get("count") is not None:
        n = int(part["count"])
        return n if part.get("limit") is None else min(n, int(part["limit"]))
    if part.get("limit") is not None:
        return int(part["limit"])
    return sum(name.endswith(".cls") for s in part["shards"] for name, _ in tar_members(s))


def epoch_size(parts: list[dict[str, Any]], mix: dict[str, Any] | None = None) -> int:
    """Images per epoch: all parts' images (concat) or the real part's (prob)."""
    if (mix or {}).get("mode", "concat") == "prob":
        return part_size(parts[0])
    return sum(part_size(p) for p in parts)


def useful_workers(parts: list[dict[str, Any]], workers: int, mix: dict[str, Any] | None = None,
                   batch_size: int = 1) -> int:
    """The loader workers worth starting: at most one per full batch of this rank's share of an epoch.
    Every stream reads a balanced range of samples (`_my_range`), not whole shards, so workers may
    outnumber shards (several read ranges of one tar; a range's start is found from the tar headers
    alone) and each still decodes and augments its own images: capping the workers at the shard
    count would idle CPU that a GPU rank needs (e.g. 32 shards on 8 ranks would feed 4 workers each,
    not 8). A worker without a full batch would only add a short batch. In-memory parts: no cap. At
    least one worker."""
    if workers <= 1 or any("arrays" in p for p in parts):
        return workers
    _, world = _rank()
    per_rank = epoch_size(parts, mix) // world
    return max(1, min(workers, per_rank // max(1, int(batch_size))))


def build_train_loader(
    parts: list[dict[str, Any]],
    recipe: dict[str, Any],
    seed: int,
    epoch: int,
    mix: dict[str, Any] | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    shuffle: bool = True,
    persistent: bool = False,
) -> torch.utils.data.DataLoader:
    """A DataLoader of augmented (x, y) batches for one epoch of training.

    parts: a list of {"shards": [tar paths], "limit": N or None, "count": images (optional)}: each
        part contributes its first N images (the records' keys are their global positions, so
        nested N holds whatever the worker count). In memory, {"arrays": (uint8 images (n, H, W, C),
        labels), "limit": N or None} also works (tests, the quality judge).
    recipe: a resolved recipe (synthscale.classifier.recipes): transform, shuffle buffer, workers, batch size.
    seed, epoch: the order and every sample's augmentation are functions of these (and the part and
        the image's position); for a fixed worker count the batches are identical run to run.
    mix: how parts combine; both modes mix at the sample level in every worker and on every rank.
        {"mode": "concat"} (default): one dataset, the union of the parts; each worker reads a
        balanced share of each part (its global share, to one sample, whatever the shard layout),
        shuffles it within that part's buffer (one buffer per part alive at once) and draws the next
        image from a part with probability proportional to the images that part has left in the
        worker (`interleave`), so the parts are spread evenly through the epoch. {"mode": "prob",
        "synthetic_prob": p, "per": "sample" | "batch"}: parts[0] is real, parts[1] synthetic; each
        slot of the real stream is replaced with probability p by the next synthetic image (drawn
        per sample, or once per batch of slots: DA-Fusion's scheme); each worker reads its balanced
        share of the synthetic part and, when that runs out, a new share of it, reshuffled.
    Epoch length (`epoch_size`): every image of every part (concat) or the real part's count (prob).
    batch_size: per device and pass (default recipe["micro_batch_size"] or recipe["batch_size"]).
    num_workers: default recipe["num_workers"], capped by `useful_workers`. A worker's last batch
        may be short.
    persistent: keep the workers across iterations (`TrainLoader` sets the epoch of each).
    """
    bs = batch_size or recipe.get("micro_batch_size") or recipe["batch_size"]
    workers = recipe.get("num_workers", 0) if num_workers is None else num_workers
    workers = useful_workers(parts, int(workers), mix, bs)
    ds = TrainStream(parts, recipe, seed, epoch, mix=mix, batch_size=bs, shuffle=shuffle)
    return _loader(ds, bs, recipe, int(workers), persistent=persistent)


class TrainLoader:
    """Every epoch of one training run from one DataLoader whose workers persist across epochs.

    `epoch(e)` gives epoch e's batches: the same batches, in the same order, as
    `build_train_loader(..., epoch=e)` (same worker count), but the workers start once, not once per
    epoch, and keep their decoded-image cache (`decode_cache_mb`): with a small set trained for
    many epochs, each worker decodes each of its images once. Arguments as `build_train_loader`'s.
    Call `close()` (or use it as a context manager) to stop the workers.
    """

    def __init__(
        self,
        parts: list[dict[str, Any]],
        recipe: dict[str, Any],
        seed: int,
        mix: dict[str, Any] | None = None,
        batch_size: int | None = None,
        num_workers: int | None = None,
        shuffle: bool = True,
    ):
        self.loader = build_train_loader(
            parts, recipe, seed, 0, mix=mix, batch_size=batch_size, num_workers=num_workers,
            shuffle=shuffle, persistent=True,
        )
        self.dataset: TrainStream = self.loader.dataset

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.dataset.set_epoch(epoch)
        return iter(self.loader)

    def close(self) -> None:
        it = getattr(self.loader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        self.loader._iterator = None

    def __enter__(self) -> "TrainLoader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def build_eval_loader(
    shards: Sequence[str | Path], recipe: dict[str, Any], batch_size: int, num_workers: int = 0
) -> torch.utils.data.DataLoader:
    """(x, y) batches of an eval split in the recipe's eval preprocessing."""
    return _loader(EvalStream(shards, recipe), batch_size, recipe, num_workers)
