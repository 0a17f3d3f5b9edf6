"""CLIP training (Fan et al. 2023's CLIP arm): image-text shards for a (source, N), then open_clip_train.

A CPU job first writes the run's caption shards (`write_clip_pairs`, rule clip_pairs): N image-text pairs
of its source; the training job (`train_clip`, holding the GPUs) reads them.
- Captions, like for like: every pair, real or synthetic, is captioned by the same function,
  `pair_caption(i, label)`: a prompt of its class drawn from (seed, i) out of the pool of the class
  prompt strategies `clip.caption_strategies` (the stand-in for LAION alt-text). A synthetic image's
  own prompt and a real image's own caption stay in the pair's JSON record, never in its caption, so
  real and synthetic pairs of the same class sequence carry the same captions. With the default pool
  (classname + templates) CLIP's 80 zero-shot templates are IN the training captions of both; a pool
  without `templates` keeps them out of both. `clip.captions: own` instead captions every pair by its
  own text (a synthetic image's prompt, a real image's caption; an error where one lacks it): like
  for like only where the synthetic prompts are real captions, as in Fan et al.'s LAION setting.
- real: the first N real images; synthetic: the first N synthetic ones;
- mixed (synthetic + real) at N: N pairs in all (`n_pairs`, the axis every source shares), the
  first round(N * `clip.mix_real_fraction`) real images and the first N minus that synthetic ones,
  interleaved at the sample level: each pair is drawn from a part with probability proportional to
  what that part has left, seeded, so every stretch of the shards holds both in proportion. The
  synthetic part's captions come from their own draw stream (a part salt), so real image i and
  synthetic image i, of the same class, do not share one draw: the mix keeps the pool's variety.

Training is open_clip's own entry point, `open_clip_train.main.main(argv)`, with
`--dataset-type webdataset`, called in this process (one Python start-up per job) or as
`python -m synthscale.clip.train ARGS` (e.g. under torchrun for DDP). Three things are set up first:
- a custom model config (`clip.model_config`) is registered with `open_clip.add_model_config`;
- webdataset's end-of-shard marker, which open_clip_train 3.3 cannot read, is switched off;
- open_clip_train's sample shuffle buffer seeds its RNG from the clock and the PID
  (webdataset's `shuffle` without `rng`), so reruns would differ. It is replaced by the same buffer
  seeded from (seed, epoch, pass); it also reseeds torch (crop augmentation) from (seed, epoch) at
  each epoch's start, so CPU reruns with a pinned thread count, and resumed runs, are bit-identical.
Checkpoints `epoch_K.pt` are written every `save_frequency` epochs (0: only the last; a rerun of a
killed job resumes from the newest that loads: `drop_unreadable_checkpoints`). The last one, read with `torch.load(weights_only=True)`, becomes
`model.safetensors` plus `model_config.json` (the open_clip model name and config).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import random
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from synthscale.io import atomic_path, write_json
from synthscale.preemption import Preempted
from synthscale.clip.schedule import caption_shard_sizes, clip_epochs, clip_steps_per_epoch, clip_warmup_steps
from synthscale.data.shards import ShardWriter, image_ext, iter_samples

OPEN_CLIP_RUN = "run"  # open_clip_train's --name inside the job's work folder
CONFIG_DIR = "model_configs"


# --- captions ---------------------------------------------------------------------------------


def caption_pools(classes, strategies: Sequence[str]) -> list[list[str]]:
    """Per class (index order), every prompt of the given strategies: the real images' caption pool."""
    from synthscale.prompts.strategies import class_prompts

    pools: list[list[str]] = [[] for _ in range(len(classes))]
    for s in strategies:
        for c, prompts in enumerate(class_prompts(classes, s)):
            pools[c] += list(prompts)
    return pools


def pair_caption(i: int, label: int, pools: Sequence[Sequence[str]], seed: int, part: int = 0) -> str:
    """The caption of image i of a part, real or synthetic: a prompt of its class drawn from (seed, i).

    `part` > 0 salts the draw: a run's later parts (a mixed run's synthetic one) draw from their own
    stream, so real image i and synthetic image i (same class) do not repeat one caption draw."""
    pool = pools[label]
    entropy = [int(seed), 7919, int(i)] + ([int(part)] if part else [])
    word = np.random.SeedSequence(entropy).generate_state(1)[0]
    return pool[int(word) % len(pool)]


def iter_captioned(
    paths: Sequence[str | os.PathLike],
    n: int | None,
    kind: str,
    pools: Sequence[Sequence[str]] | None = None,
    seed: int = 0,
    captions: str = "pool",
    part: int = 0,
) -> Iterator[tuple[str, bytes, int, str, dict[str, Any]]]:
    """(image extension, image bytes, label, caption, record) of the first n samples of shards.

    The caption is `pair_caption(i, label, pools, seed, part)` for either `kind` ("real" or "synthetic"); the
    sample's own text (a synthetic prompt, a real caption) is kept in the record as `own_text`.
    captions="own": the caption is that own text (a real record's `prompt` never counts as one).
    """
    count = 0
    for i, (key, s) in enumerate(iter_samples(paths)):
        if n is not None and count >= n:
            return
        ext = image_ext(s, key, f"{paths}")
        rec = json.loads(s["json"]) if "json" in s else {}
        label = int(s["cls"]) if "cls" in s else int(rec["label"])
        if kind not in ("real", "synthetic"):
            raise ValueError(f"unknown part kind {kind!r}")
        own = s["txt"].decode() if "txt" in s else rec.get("caption", rec.get("prompt" if kind == "synthetic" else ""))
        if captions == "own":
            if not own:
                raise ValueError(f"config key clip.captions: own, but {kind} sample {key} "
                                 f"in {paths} has no {'prompt' if kind == 'synthetic' else 'caption'}")
            text = own
        elif captions == "pool":
            if pools is None:
                raise ValueError("CLIP pairs need caption pools (clip.caption_strategies)")
            text = pair_caption(i, label, pools, seed, part)
        else:
            raise ValueError(f"config key clip.captions: unknown {captions!r}; choose pool or own")
        if own:
            rec = {**rec, "own_text": own}
        yield ext, s[ext], label, text, rec
        count += 1
    if n is not None and count < n:
        raise ValueError(f"asked for {n} images but the shards {list(map(str, paths))} hold {count}")


def write_caption_shards(
    out_dir: str | os.PathLike,
    parts: Sequence[tuple[str, Sequence[str | os.PathLike], int | None]],
    pools: Sequence[Sequence[str]] | None,
    seed: int,
    shard_size: int | Sequence[int] = 1000,
    captions: str = "pool",
) -> tuple[list[Path], int]:
    """Write the image-text shards of one CLIP run; parts are (kind, shards, first n); `shard_size`:
    pairs a shard, or each shard's own (`caption_shard_sizes`).

    Two or more parts interleave at the sample level: each pair comes from a part with probability
    proportional to what it has left, drawn from `seed`. Streams sample by sample (bounded memory);
    returns (shard paths, number of samples).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with ShardWriter(out_dir, shard_size) as writer:
        for kind, ext, data, label, text, rec in interleave_parts(parts, pools, seed, captions):
            key = f"{writer.count:09d}"
            meta = {"key": key, "label": label, "caption": text, "origin": kind, "record": rec}
            writer.write(data, meta, ext)
    return [out_dir / name for name in writer.names], writer.count


def interleave_parts(
    parts: Sequence[tuple[str, Sequence[str | os.PathLike], int | None]],
    pools: Sequence[Sequence[str]] | None,
    seed: int,
    captions: str = "pool",
) -> Iterator[tuple[str, str, bytes, int, str, dict[str, Any]]]:
    """(kind, ext, bytes, label, caption, record) of every part's first n samples, mixed at the sample
    level: each draw picks a part with probability proportional to its samples left (seeded).
    Part j's captions draw from stream j (`pair_caption`'s `part`), its position in `parts` before
    empty parts are dropped, so a part keeps its stream, and its captions nest, at every N."""
    parts = [(j, *p) for j, p in enumerate(parts) if p[2] is None or p[2] > 0]
    if len(parts) == 1:
        j, kind, paths, n = parts[0]
        for sample in iter_captioned(paths, n, kind, pools, seed, captions, j):
            yield (kind, *sample)
        return
    if any(n is None for _, _, _, n in parts):
        raise ValueError("parts that interleave need their sizes")
    streams = [iter_captioned(paths, n, kind, pools, seed, captions, j) for j, kind, paths, n in parts]
    left = np.array([n for _, _, _, n in parts], dtype=np.int64)
    rng = np.random.default_rng([int(seed), 104729])
    while left.sum() > 0:
        j = int(rng.choice(len(parts), p=left / left.sum()))
        left[j] -= 1
        yield (parts[j][1], *next(streams[j]))
    for it in streams:  # let each stream check that its shards held n samples
        for _ in it:
            pass


# --- models -------------------------------------------------------------------------------------


def register_model(name: str, model_config: dict[str, Any] | str | None, folder: str | os.PathLike) -> None:
    """Make `name` known to open_clip: a registry name as is, or a custom config (dict or JSON path)."""
    import open_clip

    if model_config is None:
        if name not in open_clip.list_models():
            raise ValueError(f"{name!r} is not an open_clip model name and no model_config is given")
        return
    cfg = json.loads(Path(model_config).read_text()) if isinstance(model_config, str) else model_config
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(cfg, indent=1, sort_keys=True))
    open_clip.add_model_config(path)


def model_config_of(name: str) -> dict[str, Any]:
    import open_clip

    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ValueError(f"open_clip has no model config named {name!r}")
    return cfg


# --- open_clip_train -------------------------------------------------------------------------------


class _Epoch:
    """The SharedEpoch that open_clip_train created last (the train loader's): its epoch seeds shuffles."""

    current = None


class SeededShuffle:
    """webdataset's sample shuffle buffer, seeded from (seed, epoch, pass) instead of clock and PID."""

    def __init__(self, seed: int, bufsize: int = 1000, initial: int = 100):
        self.seed, self.bufsize, self.initial = int(seed), bufsize, initial
        self.epoch = _Epoch.current
        self.passes: dict[int, int] = {}

    def __call__(self, src):
        from webdataset.filters import _shuffle

        import torch

        e = int(self.epoch.get_value()) if self.epoch is not None else 0
        p = self.passes[e] = self.passes.get(e, -1) + 1
        if p == 0 and torch.utils.data.get_worker_info() is None:
            # augmentation draws from torch's global RNG, which a resumed run does not restore:
            # reseed it from (seed, epoch) so a resumed epoch crops as the uninterrupted one does
            torch.manual_seed(int.from_bytes(f"{self.seed}-{e}".encode(), "little") % (2**63))
        rng = random.Random(f"synthscale-{self.seed}-{e}-{p}")
        return _shuffle(src, self.bufsize, self.initial, rng=rng)


def _patch_open_clip_train(seed: int) -> None:
    import open_clip_train.data as ocd

    if getattr(ocd, "_synthscale_patched", None) == seed:
        return
    base = getattr(ocd, "_synthscale_shared_epoch", ocd.SharedEpoch)

    class RecordedEpoch(base):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            _Epoch.current = self

    class WdsProxy:
        """open_clip_train.data's `wds`, with `shuffle` seeded."""

        def __init__(self, wds):
            self._wds = wds

        def __getattr__(self, name):
            return getattr(self._wds, name)

        def shuffle(self, bufsize=1000, initial=100, **_):
            return SeededShuffle(seed, bufsize, initial)

    ocd._synthscale_shared_epoch = base
    # webdataset >= 0.2.96 ends each shard with an empty `{}` sample that open_clip_train's
    # group_by_keys_nothrow cannot read (KeyError 'fname'; open_clip#935, webdataset#384): the fix
    # given there is eof_value=None. Keys are unique across a run's shards, so no samples mix.
    from webdataset.tariterators import tar_file_expander

    ocd.tar_file_expander = functools.partial(tar_file_expander, eof_value=None)
    ocd.SharedEpoch = RecordedEpoch
    real_wds = getattr(ocd.wds, "_wds", ocd.wds)
    ocd.wds = WdsProxy(real_wds)
    ocd._synthscale_patched = seed


def open_clip_argv(
    shards: Sequence[str | os.PathLike],
    n_samples: int,
    recipe: dict[str, Any],
    seed: int,
    logs: str | os.PathLike,
    device: str,
) -> list[str]:
    """open_clip_train's command line for one run (webdataset, no zero-shot, resumable)."""
    argv = [
        "--dataset-type", "webdataset",
        "--train-data", "::".join(str(Path(p).resolve()) for p in shards),
        "--train-num-samples", str(int(n_samples)),
        "--model", recipe["model"],
        "--seed", str(int(seed)),
        "--epochs", str(int(recipe["epochs"])),
        "--batch-size", str(int(recipe["batch_size"])),
        "--lr", str(recipe["lr"]),
        "--wd", str(recipe["wd"]),
        "--warmup", str(int(recipe["warmup"])),
        "--workers", str(int(recipe["workers"])),
        "--precision", recipe["precision"],
        "--device", device,
        "--logs", str(Path(logs).resolve()),
        "--name", OPEN_CLIP_RUN,
        "--save-frequency", str(int(recipe["save_frequency"])),
        "--delete-previous-checkpoint",
        "--resume", "latest",
        "--zeroshot-frequency", "0",
        "--log-every-n-steps", str(int(recipe["log_every_n_steps"])),
        "--report-to", "",
    ]  # fmt: skip
    return argv + [str(a) for a in recipe.get("extra_args", [])]


def run_open_clip_train(argv: Sequence[str], seed: int, config_dir: str | os.PathLike | None = None) -> None:
    """open_clip_train.main.main(argv), with custom configs registered and the shuffle seeded."""
    import open_clip
    from open_clip_train.main import main

    if config_dir is not None and Path(config_dir).is_dir():
        open_clip.add_model_config(Path(config_dir))
    _patch_open_clip_train(seed)
    rc = main(list(argv))
    if rc not in (None, 0):
        raise RuntimeError(f"open_clip_train exited with {rc}")


def drop_unreadable_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """open_clip_train writes `epoch_K.pt` in place (torch.save, no temporary file): a job killed during
    the save leaves a truncated newest checkpoint, which `--resume latest` picks (the newest `*.pt` by
    natural order, its get_latest_checkpoint) and fails on, at every retry. Remove the newest if it is
    truncated, saying so on stderr, so the resume takes the one before (open_clip deletes that one only
    after the new save); returns the removed files. Truncated means not a whole zip archive (torch.save's
    format ends with the zip's central directory, written last): only one save can be under way, so at
    most one file goes, and a file that is whole but fails to load, or a read error, is left for the
    resume to report rather than deleted."""
    import zipfile

    natural = lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name.lower())]  # noqa: E731
    found = sorted(Path(folder).glob("*.pt"), key=natural)
    if not found or zipfile.is_zipfile(found[-1]):
        return []
    newest = found[-1]
    print(f"warning: removing the truncated checkpoint {newest} (not a whole zip archive: a save was cut "
          f"short); the run resumes from the one before it, if any", file=sys.stderr, flush=True)
    newest.unlink()
    return [newest]


def read_open_clip_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The model weights of an open_clip_train checkpoint (torch.load with weights_only=True)."""
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    sd = ckpt.get("state_dict", ckpt)
    if next(iter(sd)).startswith("module."):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def save_clip(state: dict[str, Any], model_path: str | os.PathLike, config: dict[str, Any]) -> None:
    """`model.safetensors` and, beside it, `model_config.json` ({"model": name, "config": ...})."""
    from safetensors.torch import save_file

    model_path = Path(model_path)
    write_json(model_path.with_name("model_config.json"), config)
    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    with atomic_path(model_path) as tmp:
        save_file(tensors, str(tmp), metadata={"synthscale": json.dumps(config, sort_keys=True)})


def load_clip(model_path: str | os.PathLike, device: str = "cpu"):
    """(model, preprocess_val, tokenizer) of a CLIP saved by `save_clip` (its config travels with it)."""
    import open_clip
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(model_path), framework="pt") as f:
        meta = json.loads(f.metadata()["synthscale"])
    name = meta["model"]
    if open_clip.get_model_config(name) != meta["config"]:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:  # the registry reads the file at once
            register_model(name, meta["config"], folder)
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None, device="cpu")
    model.load_state_dict(load_file(str(model_path)))
    return model.to(device).eval(), preprocess, open_clip.get_tokenizer(name)


# the keys of `clip` that change a trained CLIP (evaluation and selection keys do not)
TRAIN_KEYS = (
    "model", "model_config", "captions", "caption_strategies", "epochs", "min_steps", "batch_size", "lr", "wd",
    "warmup", "workers", "precision", "shard_size", "log_every_n_steps", "save_frequency",
    "extra_args", "launcher",
)  # fmt: skip


def clip_recipe(clip_cfg: dict[str, Any]) -> dict[str, Any]:
    """The training recipe of a CLIP run: the config's `clip` keys that change the weights."""
    return {k: clip_cfg[k] for k in TRAIN_KEYS}


def mix_split(n_pairs: int, real_fraction: float) -> tuple[int, int]:
    """(real, synthetic) pairs of a synthetic + real run of n_pairs pairs in all."""
    n_real = int(round(n_pairs * real_fraction))
    return n_real, n_pairs - n_real


def clip_parts(
    kind: str,
    n: int,
    real_shards: Sequence[str | os.PathLike],
    synthetic_shards: Sequence[str | os.PathLike],
    mix_real_fraction: float = 0.5,
) -> list[tuple[str, Sequence[str | os.PathLike], int]]:
    """What a (source kind, N) run trains on: (kind, shards, first n) parts; N pairs in all."""
    if kind == "real":
        return [("real", real_shards, n)]
    if kind == "synthetic":
        return [("synthetic", synthetic_shards, n)]
    if kind == "mixed":
        n_real, n_syn = mix_split(n, mix_real_fraction)
        return [("real", real_shards, n_real), ("synthetic", synthetic_shards, n_syn)]
    raise ValueError(f"unknown CLIP source kind {kind!r}")


ENTRY = "synthscale.clip.train"  # `python -m ENTRY ARGS`: open_clip_train in one rank (see `main`)


def check_launcher(launcher: Sequence[str]) -> None:
    """A `clip.launcher` is a site's own command prefix; torchrun is not one: the job starts it itself
    from `resources.clip.gpu` (`launch_command`), with --standalone and one rank per GPU."""
    for word in launcher:
        if Path(word).name == "torchrun" or word == "torch.distributed.run":
            raise ValueError(
                f"{list(launcher)} starts torchrun, which the job starts itself (--standalone, one rank a GPU of "
                "resources.clip.gpu); leave it empty"
            )


def launch_command(launcher: Sequence[str], nproc: int, argv: Sequence[str], config_dir: str | os.PathLike) -> list[str]:
    """The command that runs `python -m synthscale.clip.train --synthscale-config-dir DIR ARGS` on the job's
    ranks: `launcher PREFIX -m ...` when `clip.launcher` is set, else torchrun as the classifier's jobs
    start it (`synthscale.distributed.torchrun_command`: --standalone, so two jobs on one node do not
    meet at torchrun's fixed rendezvous port, and --nproc_per_node=nproc, one rank a GPU)."""
    entry = ["--synthscale-config-dir", str(config_dir), *argv]
    if launcher:
        return [*launcher, "-m", ENTRY, *entry]
    from synthscale.distributed import torchrun_command

    # "--" first: torchrun's own parser reads option-like words after the module too, and open_clip's
    # `--logs` is an ambiguous prefix of torchrun's `--logs-specs` (exit 2 before any rank starts)
    return torchrun_command(ENTRY, nproc, ["--", *entry])


def launch(cmd: Sequence[str], nproc: int = 1, threads: int | None = None) -> None:
    """Run a `launch_command` through synthscale.distributed's launcher, streaming its output to stderr.
    Each of its `nproc` ranks gets its share of the job's `threads` (default: torch's) as OMP_NUM_THREADS
    (`rank_threads`, as `run_torchrun` gives the classifier's ranks): torchrun sets 1 only where the
    variable is unset, and the job's setup sets it to all of the job's threads.
    A SIGTERM or SIGINT to this process (SLURM's warning before the time limit, or a preemption, where
    it reaches the job's main process only) is passed on to the launcher, as `run_torchrun` does
    (torchrun passes it on to its ranks), so the training stops with the job instead of running on
    unowned; this then raises `Preempted` (the job exits 75). open_clip_train saves no checkpoint on a
    signal: the rerun resumes from its newest epoch checkpoint (`--resume latest`, every
    `save_frequency` epochs)."""
    import torch

    from synthscale.distributed import launch as run_launcher, rank_env, rank_threads

    per_rank = rank_threads(threads or torch.get_num_threads(), nproc)
    env = rank_env(per_rank)
    rc, signalled = run_launcher(cmd, env=env, relay_output=True, forward_signals=True)
    if rc != 0 and signalled:
        raise Preempted(
            f"CLIP training stopped on a signal (launcher exit {rc}); a rerun resumes from its newest "
            f"epoch checkpoint"
        )
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited with {rc}")


PAIRS_INDEX = "pairs.json"


def write_clip_pairs(
    folder: str | os.PathLike,
    parts: Sequence[tuple[str, Sequence[str | os.PathLike], int | None]],
    classes,
    recipe: dict[str, Any],
    seed: int,
    loaders: int = 1,
) -> Path:
    """The image-text shards of one CLIP run in `folder` (a CPU job of its own, so the training job
    holds its GPUs for training only), with `pairs.json` (shards, pair count and what they were made
    from: parts, seed, caption pools, shard sizes) written last; returns the folder. The shards are
    sized for the run's `loaders` (`clip_loaders`, `caption_shard_sizes`) where every part's size is
    given, else they hold `shard_size` pairs each. A folder whose index records the same parts, seed,
    caption pools and shard sizes is kept; any other (a killed job's, or one made from other inputs)
    is written again."""
    folder = Path(folder)
    index = folder / PAIRS_INDEX
    pools = caption_pools(classes, recipe["caption_strategies"])
    made_from = {
        "parts": [[kind, [str(p) for p in shards], n] for kind, shards, n in parts],
        "seed": int(seed),
        "pools": hashlib.sha256(json.dumps(pools).encode()).hexdigest(),
        "captions": recipe.get("captions", "pool"),
        "shard_size": int(recipe["shard_size"]),
        "loaders": int(loaders),
    }
    if index.exists() and json.loads(index.read_text()).get("made_from") == made_from:
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    sizes: int | list[int] = int(recipe["shard_size"])
    if all(n is not None for _, _, n in parts):
        sizes = caption_shard_sizes(sum(n for _, _, n in parts), sizes, loaders)
    shards, count = write_caption_shards(folder, parts, pools, seed, sizes, made_from["captions"])
    write_json(index, {"shards": [p.name for p in shards], "count": count, "made_from": made_from})
    return folder


def read_clip_pairs(folder: str | os.PathLike) -> tuple[list[Path], int, dict[str, int | None]]:
    """(shard paths, pair count, pairs per part) of a `write_clip_pairs` folder."""
    folder = Path(folder)
    info = json.loads((folder / PAIRS_INDEX).read_text())
    part_counts = {kind: n for kind, _, n in info["made_from"]["parts"]}
    return [folder / name for name in info["shards"]], int(info["count"]), part_counts


def train_clip(
    pairs: str | os.PathLike,
    recipe: dict[str, Any],
    seed: int,
    model_path: str | os.PathLike,
    device: str = "cpu",
    work_dir: str | os.PathLike | None = None,
    gpus: int = 1,
    threads: int | None = None,
) -> dict[str, Any]:
    """Train with open_clip_train on a `write_clip_pairs` folder, save safetensors; return run info.

    `gpus` (resources.clip.gpu) > 1, or a `clip.launcher`, runs it on ranks (`launch_command`), each
    with its share of the job's `threads`; else in this process.
    The work folder (open_clip's logs and checkpoints) survives a kill, so a rerun resumes from the
    newest checkpoint (every `save_frequency` epochs); it is removed once the model is saved.
    """
    model_path = Path(model_path)
    work = Path(work_dir) if work_dir else model_path.with_name("work")
    shards, count, part_counts = read_clip_pairs(pairs)
    nproc = max(1, int(gpus))
    if count < recipe["batch_size"] * nproc:
        raise ValueError(
            f"config key clip.batch_size: {recipe['batch_size']} a GPU x {nproc} is more than the {count} training pairs"
        )
    config_dir = work / CONFIG_DIR
    register_model(recipe["model"], recipe.get("model_config"), config_dir)
    epochs = clip_epochs(count, recipe, nproc)
    warmup = clip_warmup_steps(count, recipe, nproc)
    argv = open_clip_argv(shards, count, {**recipe, "epochs": epochs, "warmup": warmup}, seed, work, device)
    drop_unreadable_checkpoints(work / OPEN_CLIP_RUN / "checkpoints")
    if recipe.get("launcher") or nproc > 1:
        launch(launch_command(recipe.get("launcher") or [], nproc, argv, config_dir), nproc, threads)
    else:
        run_open_clip_train(argv, seed, config_dir)
    ckpt = work / OPEN_CLIP_RUN / "checkpoints" / f"epoch_{epochs}.pt"  # always saved at the end
    state = read_open_clip_checkpoint(ckpt)
    info = {
        "model": recipe["model"],
        "config": model_config_of(recipe["model"]),
        "n_pairs": count,
        "parts": part_counts,
        "seed": seed,
        "epochs": epochs,
        "steps_per_epoch": clip_steps_per_epoch(count, recipe, nproc),
    }
    log = work / OPEN_CLIP_RUN / "out.log"
    if log.exists():
        with atomic_path(model_path.with_name("train.log")) as tmp:
            shutil.copyfile(log, tmp)
    save_clip(state, model_path, info)
    shutil.rmtree(work)
    return info


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m synthscale.clip.train --synthscale-config-dir DIR [open_clip_train args]` (e.g. torchrun)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # torchrun passes the separator of `launch_command` on
        argv = argv[1:]
    config_dir = None
    if "--synthscale-config-dir" in argv:
        i = argv.index("--synthscale-config-dir")
        config_dir = argv[i + 1]
        del argv[i : i + 2]
    seed = int(argv[argv.index("--seed") + 1]) if "--seed" in argv else 0
    run_open_clip_train(argv, seed, config_dir)


if __name__ == "__main__":
    main()
