"""CLIP training (Fan et al. 2023's CLIP arm): open_clip_train on a run's caption shards (`pairs.py`).

Training is open_clip's own entry point, `open_clip_train.main.main(argv)`, with
`--dataset-type webdataset`, called in this process (one Python start-up per job) or as
`python -m synthscale.clip.train ARGS` (e.g. under torchrun for DDP). Three things are set up first:
- a custom model config (`clip.model_config`) is registered with `open_clip.add_model_config`;
- webdataset's end-of-shard marker, which open_clip_train 3.3 cannot read, is switched off;
- open_clip_train's sample shuffle buffer seeds its RNG from the clock and the PID
  (webdataset's `shuffle` without `rng`), so reruns would differ. It is replaced by the same buffer
  seeded from (seed, epoch, pass); it also reseeds torch (crop augmentation) from (seed, epoch) at
  each epoch's start, so CPU reruns with a pinned thread count, and resumed runs, are bit-identical with
  `clip.workers: 0` (loader workers take their seeds from the main RNG when they start, not per epoch)
  (a DDP rank other than 0 mixes its rank in: ranks crop apart).
Checkpoints `epoch_K.pt` are written every `save_frequency` epochs (0: only the last; a rerun of a
killed job resumes from the newest that loads: `drop_unreadable_checkpoints`). The last one, read with `torch.load(weights_only=True)`, becomes
`model.safetensors` plus `model_config.json` (the open_clip model name and config), at the paths the rule
takes from Plan.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

from synthscale.io import atomic_path, write_json
from synthscale.preemption import Preempted
from synthscale.clip.schedule import (
    clip_epochs,
    clip_loaders,
    clip_steps_per_epoch,
    clip_warmup_steps,
    min_loader_share,
)
from synthscale.clip.pairs import clip_pair_sizes, clip_pairs_made_from, read_clip_pairs, read_pairs_index

OPEN_CLIP_RUN = "run"  # open_clip_train's --name inside the job's work folder
CONFIG_DIR = "model_configs"


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
            # reseed it from (seed, epoch) so a resumed epoch crops as the uninterrupted one does;
            # a DDP rank other than 0 mixes its rank in (rank 0 keeps the one-process seed), so the
            # ranks do not crop their k-th images alike (open_clip seeds each rank apart, then this reseeds)
            from synthscale.distributed import rank_seed, rank_world

            base = _seed_key(f"{self.seed}-{e}")
            torch.manual_seed(rank_seed(base, rank_world()[0], 71))
        rng = random.Random(f"synthscale-{self.seed}-{e}-{p}")
        return _shuffle(src, self.bufsize, self.initial, rng=rng)


def _seed_key(text: str) -> int:
    """A torch seed below 2**63 from a text, different for different texts: the text's bytes as a
    little-endian number where they fit in 8 bytes (ASCII's top bit is 0, so that is below 2**63:
    the seeds the default study's CLIPs were trained with), else a SHA-256 of them (keeping only the
    low 63 bits of the number gave every epoch of a seed of 7 or more digits one seed)."""
    data = text.encode()
    if len(data) <= 8:
        return int.from_bytes(data, "little") % (2**63)
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little") % (2**63)


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


def save_clip(
    state: dict[str, Any],
    model_path: str | os.PathLike,
    config: dict[str, Any],
    config_path: str | os.PathLike,
) -> None:
    """The weights at `model_path` and the config ({"model": name, "config": ...}) at `config_path`
    (the rule's, from Plan.clip_model_config)."""
    from safetensors.torch import save_file

    model_path = Path(model_path)
    write_json(config_path, config)
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


def open_clip_run(
    pairs: str | os.PathLike, recipe: dict[str, Any], seed: int, work: Path, device: str, nproc: int,
    index: dict[str, Any] | None = None,
) -> tuple[list[str], dict[str, Any], int]:
    """(open_clip_train's arguments, the run's stamp for `_start_over_if_changed`, epochs) of a run on
    the pairs folder `pairs`, whose parsed index (`read_pairs_index`) is read here unless given."""
    index = read_pairs_index(pairs) if index is None else index
    shards, count, _ = read_clip_pairs(pairs, index)
    epochs = clip_epochs(count, recipe, nproc)
    warmup = clip_warmup_steps(count, recipe, nproc)
    argv = open_clip_argv(shards, count, {**recipe, "epochs": epochs, "warmup": warmup}, seed, work, device)
    run = {"argv": argv, "gpus": nproc, "model_config": recipe.get("model_config"), "pairs": clip_pairs_made_from(index)}
    return argv, run, epochs


def _check_loader_batches(sizes: list[int], count: int, recipe: dict[str, Any], nproc: int) -> None:
    """Every loader of the run (clip.workers x GPUs) can be dealt one batch from shards of `sizes`."""
    loaders = clip_loaders(recipe, nproc)
    share = min_loader_share(sizes, loaders)
    if share < recipe["batch_size"]:
        raise ValueError(
            f"config key clip.batch_size: {recipe['batch_size']} pairs a batch is more than the {share} pairs one "
            f"of the run's {loaders} loaders (clip.workers x GPUs) can be dealt from its {len(sizes)} shards of "
            f"{count} pairs"
        )


RUN_STAMP = "run.json"  # in the work folder: what its checkpoints were trained with


def _start_over_if_changed(work: Path, run: dict[str, Any]) -> None:
    """A work folder left by a killed job is resumed (`--resume latest`) only if its checkpoints were
    made by this run (the same open_clip_train arguments, GPU count, model config, and pairs made from
    the same inputs: `clip_pairs_made_from`); one made with other settings (a changed recipe, caption
    pool or shard size, `resources.clip.gpu` or `clip.workers`, where the old epochs
    would silently continue under the new arguments) is removed, with a note on stderr, and the run
    starts over. The stamp is written before training starts; a folder without one (from before
    stamps) is resumed as it always was."""
    stamp = work / RUN_STAMP
    if stamp.exists() and json.loads(stamp.read_text()) != run:
        print(f"synthscale: {work} holds a CLIP run made with other settings: starting over", file=sys.stderr)
        shutil.rmtree(work)
    if not stamp.exists():
        work.mkdir(parents=True, exist_ok=True)
        write_json(stamp, run)


def train_clip(
    pairs: str | os.PathLike,
    recipe: dict[str, Any],
    seed: int,
    model_path: str | os.PathLike,
    *,
    config_path: str | os.PathLike,
    work_dir: str | os.PathLike,
    log_path: str | os.PathLike,
    device: str = "cpu",
    gpus: int = 1,
    threads: int | None = None,
) -> dict[str, Any]:
    """Train with open_clip_train on a `write_clip_pairs` folder, save safetensors; return run info.

    `gpus` (resources.clip.gpu) > 1, or a `clip.launcher`, runs it on ranks (`launch_command`), each
    with its share of the job's `threads`; else in this process.
    The work folder (open_clip's logs and checkpoints) survives a kill, so a rerun resumes from the
    newest checkpoint (every `save_frequency` epochs); it is removed once the model is saved, and
    open_clip's log is kept at `log_path`.
    Every path is the caller's: the rule's come from Plan (clip_model, clip_model_config,
    clip_work_dir, clip_train_log).
    """
    model_path = Path(model_path)
    work = Path(work_dir)
    log_path = Path(log_path)
    index = read_pairs_index(pairs)  # read once: the pairs job wrote it, and nothing changes it here
    _, count, part_counts = read_clip_pairs(pairs, index)
    nproc = max(1, int(gpus))
    _check_loader_batches(clip_pair_sizes(index) or [count], count, recipe, nproc)
    argv, run, epochs = open_clip_run(pairs, recipe, seed, work, device, nproc, index)
    _start_over_if_changed(work, run)
    config_dir = work / CONFIG_DIR
    register_model(recipe["model"], recipe.get("model_config"), config_dir)
    drop_unreadable_checkpoints(work / OPEN_CLIP_RUN / "checkpoints")
    if recipe.get("launcher") or nproc > 1:
        launch(launch_command(recipe.get("launcher") or [], nproc, argv, config_dir), nproc, threads)
    else:
        run_open_clip_train(argv, seed, config_dir)
    state = read_open_clip_checkpoint(work / OPEN_CLIP_RUN / "checkpoints" / f"epoch_{epochs}.pt")  # the last
    info = {
        "model": recipe["model"], "config": model_config_of(recipe["model"]), "n_pairs": count,
        "parts": part_counts, "seed": seed, "epochs": epochs,
        "steps_per_epoch": clip_steps_per_epoch(count, recipe, nproc),
    }  # fmt: skip
    log = work / OPEN_CLIP_RUN / "out.log"
    if log.exists():
        with atomic_path(log_path) as tmp:
            shutil.copyfile(log, tmp)
    save_clip(state, model_path, info, config_path)
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
