"""Classifier training: a timm model from the registry, one loop top to bottom, fed by a DataLoader.

Data order and augmentation come from (seed, epoch) and (seed, epoch, image) alone (synthscale.data.loader),
and dropout/drop-path/mixup from (seed, step, rank) (`step_seed`), never from a running random state,
so a run stopped at any step (SIGTERM: SLURM's warning before its time limit; or a periodic
checkpoint, every `checkpoint_minutes`, and a kill) and resumed from its checkpoint reaches
bit-identical weights for a pinned thread count, worker count and world size (a checkpoint records the
last two and a resume under others is refused: `_same_batch_order`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from synthscale.io import atomic_path, write_csv
from synthscale.lr_schedule import lr_factor
from synthscale.data.loader import TrainLoader, epoch_size
from synthscale.data.transforms import DeviceNormalize, uint8_batches
from synthscale.distributed import (
    all_sum, all_sum_device, barrier, ddp_wrap, dist_on, rank_main, rank_seed, rank_world, run_torchrun,
    run_training,
)
from synthscale.preemption import (
    CheckpointClock, Preempted, StopSignals, Stopping, check_resumed_workers, check_resumed_world, resume_checkpoint,
    save_checkpoint,
)
from synthscale.classifier.recipes import resolve_recipe


SYNC_EVERY = 100  # steps between reads of the device-side loss sums within an epoch (and at its end)


def create_classifier(arch: str, n_classes: int, model_kwargs: dict[str, Any] | None = None):
    kwargs = dict(model_kwargs or {})
    if "channels" in kwargs:
        kwargs["channels"] = tuple(kwargs["channels"])
    return timm.create_model(arch, pretrained=False, num_classes=n_classes, in_chans=3, **kwargs)


def to_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, C) to float (N, 3, H, W) in [-1, 1]; grey images are repeated to 3 channels."""
    x = torch.as_tensor(images)
    if x.ndim == 3:
        x = x[..., None]
    x = x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    return x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x


def save_classifier(model, path: str | os.PathLike, meta: dict[str, Any]) -> None:
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"synthscale": json.dumps(meta, sort_keys=True)})


def load_classifier(path: str | os.PathLike, device: str = "cpu"):
    """A classifier saved by `save_classifier`: the safetensors metadata names its timm arch."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["synthscale"])
    model = create_classifier(meta["arch"], meta["n_classes"], meta.get("model_kwargs"))
    model.load_state_dict(load_file(str(path)))
    return model.to(device).eval(), meta


def plan_steps(n: int, recipe: dict[str, Any]) -> tuple[int, int]:
    """(global steps per epoch, epochs): `epochs` passes, stretched so small sets get `min_steps`."""
    spe = math.ceil(n / recipe["batch_size"])
    epochs = max(recipe["epochs"], math.ceil(recipe["min_steps"] / spe))
    return spe, epochs


def make_optimizer(model, recipe: dict[str, Any]) -> torch.optim.Optimizer:
    """The recipe's optimizer. AdamW and LAMB decay only the weight matrices and kernels, as DeiT and
    timm's training script do: 1-D parameters (norms, biases) and the model's `no_weight_decay()`
    names (a ViT's position embedding and class token) get none (timm's `param_groups_weight_decay`).
    SGD decays every parameter (the Goyal et al. ResNet-50 recipe)."""
    name, lr, wd = recipe["optimizer"], recipe["lr"], recipe["weight_decay"]
    if name in ("adamw", "lamb"):
        from timm.optim import Lamb, param_groups_weight_decay

        skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
        groups = param_groups_weight_decay(model, wd, no_weight_decay_list=skip)
        if name == "adamw":
            return torch.optim.AdamW(groups, lr=lr, weight_decay=wd)
        return Lamb(groups, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=recipe["momentum"], weight_decay=wd)
    raise ValueError(f"unknown optimizer {name!r}")


def full_recipe(recipe: dict[str, Any], parts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A recipe with every key: its named row under it; input_size from in-memory images if unset."""
    out = resolve_recipe(recipe)
    if out["input_size"] is None:
        arrays = [p for p in parts or [] if "arrays" in p]
        if not arrays:
            raise ValueError("recipe has no input_size (set train.input_size or dataset.image_size)")
        out["input_size"] = int(np.asarray(arrays[0]["arrays"][0]).shape[1])
    return out


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """The seed of one step's dropout, drop-path and mixup/cutmix draws on one rank.

    Rank 0 (and so every single-device run) keeps (seed * 1000003 + step) mod 2^31; another rank
    mixes its rank in, so ranks draw different mixup lambdas, cutmix boxes and drop-path masks
    (with one seed for all, every rank would mix its batch with the same lambda and box)."""
    return rank_seed((seed * 1_000_003 + step) % (2**31), rank, 59)


def enable_fast_cuda_math() -> None:
    """cuDNN autotuning and TF32 matmuls/convolutions (CUDA runs only: kernel choice then depends on
    timing, so GPU runs are not bit-reproducible; CPU runs are untouched)."""
    torch.backends.cudnn.benchmark = True
    # TF32 matmuls; cuDNN convolutions use TF32 by default. (Setting only the per-backend
    # `fp32_precision` of torch >= 2.9 makes torch.get_float32_matmul_precision(), which inductor
    # reads, raise on a "mix of the legacy and new APIs": this call keeps both views consistent.)
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True


@dataclass
class TrainRun:
    """One classifier run as its steps see it: the recipe, the step plan, the model (`net`: the same
    model under DDP and torch.compile), the optimizer, the device-side batch finishing, and what
    stops or checkpoints it. Built by `_setup_run` and `_parallel_net`; the loop's position (epoch,
    batches, step, images seen, log) is `state`, apart, since a checkpoint saves it as JSON."""

    recipe: dict[str, Any]
    seed: int
    device: str
    rank: int
    world: int
    micro: int  # images per micro-batch on one rank
    accum: int  # micro-batches per step on one rank
    n: int  # images per epoch
    epochs: int
    total: int  # steps
    total_images: int
    warmup: float  # images of linear warm-up
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    base_lrs: list[float]
    finish: DeviceNormalize | None
    net: Any = None
    ddp: bool = False
    mixup: Any = None
    amp: Any = None
    stopping: Stopping | None = None

    @property
    def dev_type(self) -> str:
        return torch.device(self.device).type


def train_model(
    parts: list[dict[str, Any]],
    n_classes: int,
    recipe: dict[str, Any],
    seed: int,
    model_path: str | os.PathLike,
    log_path: str | os.PathLike,
    checkpoint_path: str | os.PathLike | None = None,
    device: str = "cpu",
    progress: bool = True,
    stop_after_steps: int | None = None,
    mix: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Train `recipe["arch"]` on the parts' images streamed through the DataLoader (see
    `synthscale.data.loader.build_train_loader` for parts and mix); write safetensors weights and a
    per-epoch CSV log.

    Steps follow the global batch (`batch_size`): each step takes `batch_size / (micro * devices)`
    micro-batches (gradient accumulation). The learning rate follows the images seen (warm-up, then
    cosine), since a worker's last batch of an epoch may be short. Under DDP (torch.distributed
    initialised, e.g. by torchrun) every rank trains its node's shards and rank 0 writes the files.

    With `checkpoint_path`, a SIGTERM or SIGINT saves a checkpoint after the current step and raises
    `Preempted`; a later call resumes from it (starting the epoch's loader again and skipping the
    batches already done). Loader workers ignore both signals (SLURM signals every process of the
    job), so the main process outlives them and saves. `recipe["checkpoint_minutes"]` (0 or absent:
    off) also saves one every that many minutes, for a job killed without warning.
    `stop_after_steps` simulates a stop in tests. A checkpoint records the world size and the loader's
    worker count, which fix the batch order: a resume under another `resources.train.gpu` or
    `num_workers` is refused (`_same_batch_order`).

    The loss and accuracy sums stay on the device and are read (and checked for inf/NaN) at the
    sync points only: every `SYNC_EVERY` steps, each epoch's end and each checkpoint.
    """
    recipe = full_recipe(recipe, parts)
    # uint8 batches (auto: on CUDA) are normalised, and randomly erased, here on the device
    recipe["uint8_batches"] = uint8_batches(recipe, device)
    run = _setup_run(parts, n_classes, recipe, seed, device, mix)
    ckpt = Path(checkpoint_path) if checkpoint_path else None
    state, running = _resume_run(run, ckpt)
    _parallel_net(run, n_classes)
    stop = StopSignals(enabled=bool(ckpt))
    desc = f"train {recipe['arch']} n={run.n}"
    bar = tqdm(total=run.total, initial=state["step"], desc=desc, disable=not progress or run.rank > 0)
    t0 = time.time()
    run.stopping = Stopping(ckpt, stop, CheckpointClock(recipe.get("checkpoint_minutes")), stop_after_steps)
    # one DataLoader for every epoch: its workers start once and keep their decoded images
    loader = TrainLoader(parts, recipe, seed, mix=mix, batch_size=run.micro)
    try:
        _same_batch_order(run, parts, state, loader.loader.num_workers, ckpt)
        run.net.train()
        while state["epoch"] < run.epochs:
            train_one_epoch(run, loader.epoch(state["epoch"]), state, running, bar)
            _end_epoch(run, state, running, t0)
    finally:
        loader.close()
        bar.close()
        stop.restore()
    return _save_run(run, state, n_classes, model_path, log_path)


def _setup_run(
    parts: list[dict[str, Any]], n_classes: int, recipe: dict[str, Any], seed: int, device: str,
    mix: dict[str, Any] | None,
) -> TrainRun:
    """The step plan (micro-batch, accumulation, epochs, warm-up) on this rank, and a fresh model
    (from `seed`) and its optimizer."""
    finish = DeviceNormalize(recipe, device) if recipe["uint8_batches"] else None
    rank, world = rank_world()
    micro = micro_size(recipe, world)
    accum = max(1, recipe["batch_size"] // (micro * world))
    n = epoch_size(parts, mix)
    spe, epochs = plan_steps(n, recipe)
    total, total_images = spe * epochs, n * epochs
    warmup = recipe["warmup_frac"] * total_images

    if torch.device(device).type == "cuda":
        enable_fast_cuda_math()
    torch.manual_seed(seed)
    model = create_classifier(recipe["arch"], n_classes, recipe.get("model_kwargs")).to(device)
    if recipe["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, recipe)
    base_lrs = [g["lr"] for g in opt.param_groups]
    return TrainRun(recipe, seed, device, rank, world, micro, accum, n, epochs, total, total_images, warmup,
                    model, opt, base_lrs, finish)


def _resume_run(run: TrainRun, ckpt: Path | None) -> tuple[dict[str, Any], torch.Tensor]:
    """The loop's position, fresh or from the checkpoint (whose model and optimizer state are loaded
    here), and this rank's (loss sum, correct, images) of the epoch so far, on the device."""
    state = {"epoch": 0, "batches": 0, "step": 0, "seen": 0, "log": [], "running": [0.0, 0.0, 0.0]}
    saved = resume_checkpoint(ckpt, run.device, clean=run.rank == 0)
    if saved is not None:
        run.model.load_state_dict(saved["model"])
        run.opt.load_state_dict(saved["opt"])
        state = json.loads(saved["state"])
        if run.rank > 0:  # rank 0 saved the epoch's sums over every rank
            state["running"] = [0.0, 0.0, 0.0]
    return state, torch.tensor(state["running"], dtype=torch.float64, device=run.device)


def micro_size(recipe: dict[str, Any], world: int) -> int:
    """Images a micro-batch on each of `world` ranks: `micro_batch_size`, else the batch's share."""
    return recipe["micro_batch_size"] or max(1, recipe["batch_size"] // world)


def _same_batch_order(run: TrainRun, parts: list[dict[str, Any]], state: dict[str, Any], workers: int,
                      ckpt: Path | None) -> None:
    """Record the world size and the loader's worker count in the loop's position (so in every
    checkpoint) and refuse a resume from a checkpoint that other counts wrote
    (`preemption.check_resumed_count`): a resume skips the batches it counted as trained on, and both
    counts decide which images those were. Each rank reads its own share of every epoch (stream s of
    ranks x workers, synthscale.data.loader), so other ranks skip other images, except where
    `_order_ignores_world`. Each worker reads its own share of its rank's, the loader takes their
    batches in turn, and a worker's last batch may be short; no worker and one worker read one stream,
    in the same order (`same_loader_stream`). The world size is checked first: it also changes the
    effective worker count (at most one a full batch of the rank's share)."""
    check_resumed_world(
        state.get("world_size"), run.world, key="resources.train.gpu", ckpt=ckpt,
        same=lambda saved, now: saved == now or _order_ignores_world(parts, run.recipe, saved, now),
    )
    check_resumed_workers(
        state.get("num_workers"), workers, key="train.num_workers", ckpt=ckpt,
        note=f" (train.num_workers {run.recipe.get('num_workers', 0)}, at most one a full batch)",
    )
    state.update(world_size=run.world, num_workers=int(workers))


def _order_ignores_world(parts: list[dict[str, Any]], recipe: dict[str, Any], saved: int, now: int) -> bool:
    """Whether every step of an epoch trains on the same images under `saved` and `now` ranks (with
    the same loader workers a rank, which `_same_batch_order` checks next): with one in-memory part
    (arrays), stream s = r x w + k (rank r, its worker k of w) of W x w reads every (W x w)-th position
    of the epoch's permutation from s, so the ranks' t-th micro-batches together hold the positions
    k + w x [b W m, (b + 1) W m) (k = t mod w, b = t // w, m: `micro_size`) whatever W, when W x m is
    the same; the steps (the same micro-batches a rank) and what a resume skips are then the same too.
    Shards are read in contiguous ranges a stream, in a shuffle buffer a stream, so another world size
    changes every batch."""
    return (len(parts) == 1 and "arrays" in parts[0]
            and saved * micro_size(recipe, saved) == now * micro_size(recipe, now))


def _parallel_net(run: TrainRun, n_classes: int) -> None:
    """The model as the steps call it (`run.net`: DDP, torch.compile), mixup/cutmix and autocast."""
    recipe = run.recipe
    net = run.model
    run.ddp = dist_on()  # DDP whenever a process group is up, even with one rank (the GPU suite's NCCL check)
    if run.ddp:
        net = ddp_wrap(run.model, run.device)
    if recipe["compile"]:
        mode = recipe["compile"] if isinstance(recipe["compile"], str) else None
        net = torch.compile(net, mode=mode)
    run.net = net
    if recipe["mixup"] > 0 or recipe["cutmix"] > 0:
        from timm.data import Mixup

        run.mixup = Mixup(
            mixup_alpha=recipe["mixup"],
            cutmix_alpha=recipe["cutmix"],
            label_smoothing=recipe["label_smoothing"],
            num_classes=n_classes,
        )
    run.amp = torch.autocast(run.dev_type, dtype=torch.bfloat16, enabled=bool(recipe["amp"]))


def train_one_epoch(
    run: TrainRun, it, state: dict[str, Any], running: torch.Tensor, bar
) -> None:
    """The rest of the epoch `state["epoch"]` from the loader's iterator `it`: step after step, each
    on `accum` micro-batches of every rank, until any rank runs out; a sync point every `SYNC_EVERY`
    steps; with a checkpoint path, each step's stop-or-save flags, acted on with the next step's
    collective (one CPU all-reduce a step in all)."""
    for _ in range(state["batches"]):  # resume mid-epoch: skip the batches already done
        next(it, None)
    flags = [0.0, 0.0]  # after the previous step: stop (a signal or the test's stop), save (the clock)
    while True:
        batches = [b for b in (next(it, None) for _ in range(run.accum)) if b is not None]
        local = sum(len(b[1]) for b in batches)
        # the loop's one collective a step (CPU values; none in one process): whether any rank ran
        # out (an epoch ends on every rank then: ranks must step together), the images of this step
        # over every rank, and the previous step's flags, so every rank stops or saves after the
        # same step (any rank told to stop; rank 0's clock for periodic checkpoints)
        empty, seen_now, stop_all, due_all = all_sum([float(not batches), float(local), *flags])
        if stop_all or due_all:
            _stop_or_save(run, state, running, stop_all)
            flags = [0.0, 0.0]
        if empty:
            break
        loss_sum, correct = train_step(run, batches, local, state)
        state["step"] += 1
        state["batches"] += len(batches)
        state["seen"] += int(seen_now)
        running[0] += loss_sum  # (a python number added on the device: no host-to-device copy)
        running[1] += correct
        running[2] += local
        bar.update(1)
        if state["step"] % SYNC_EVERY == 0:  # a sync point between epochs: check, show the loss
            sums = _finite_sums(running, state, run.total, run.recipe, run.dev_type)
            bar.set_postfix(loss=f"{sums[0] / max(sums[2], 1):.4g}", refresh=False)
        if run.stopping.ckpt:  # acted on by every rank with the next step's collective (above)
            flags = run.stopping.flags(state["step"], run.rank)


def train_step(
    run: TrainRun, batches: list, local: int, state: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on this rank's micro-batches (`local` images): the learning rate of the
    images seen, the step's seeds, a forward and backward pass per micro-batch (DDP reduces the
    gradients at the last). Returns the step's loss sum and correct count, on the device."""
    factor = lr_factor(state["seen"], run.total_images, run.warmup, run.recipe["batch_size"])
    for g, lr in zip(run.opt.param_groups, run.base_lrs):
        g["lr"] = lr * factor
    s_seed = step_seed(run.seed, state["step"], run.rank)
    torch.default_generator.manual_seed(s_seed)  # dropout, drop-path
    if run.dev_type == "cuda":
        torch.cuda.manual_seed(s_seed)
    np.random.seed(s_seed)  # timm Mixup draws from numpy
    if run.finish is not None and run.finish.erase is not None:
        random.seed(s_seed)  # timm RandomErasing draws its boxes from python's random
    run.opt.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), dtype=torch.float64, device=run.device)
    correct = torch.zeros((), dtype=torch.float64, device=run.device)
    for j, (xb, yb) in enumerate(batches):
        sync = not run.ddp or j == len(batches) - 1
        batch_loss, batch_correct = _micro_batch(run, xb, yb, local, sync)
        # no .item(): the sums stay on the device (no host sync per micro-batch)
        loss_sum += batch_loss
        correct += batch_correct
    run.opt.step()
    return loss_sum, correct


def _micro_batch(
    run: TrainRun, xb: torch.Tensor, yb: torch.Tensor, local: int, sync: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward on one micro-batch, its loss weighted by its share of the rank's step;
    DDP's gradient all-reduce only where `sync`. Returns (loss sum, correct), on the device."""
    recipe, net = run.recipe, run.net
    xb, yb = xb.to(run.device, non_blocking=True), yb.to(run.device, non_blocking=True)
    if run.finish is not None:
        xb = run.finish(xb)
    if recipe["channels_last"]:
        xb = xb.contiguous(memory_format=torch.channels_last)
    target = yb
    if run.mixup is not None and len(yb) % 2 == 0:
        xb, target = run.mixup(xb, yb)
    ctx = net.no_sync() if not sync and hasattr(net, "no_sync") else contextlib.nullcontext()
    with ctx:
        with run.amp, batchnorm_frozen_if_single(run.model, len(yb)):
            logits = net(xb)
        logits = logits.float()
        if target.ndim == 2:
            loss = torch.sum(-target * F.log_softmax(logits, -1), -1).mean()
        else:
            loss = F.cross_entropy(logits, target, label_smoothing=recipe["label_smoothing"])
        (loss * len(yb) / local).backward()
    return loss.detach().double() * len(yb), (logits.argmax(1) == yb).sum().double()


def _stop_or_save(run: TrainRun, state: dict[str, Any], running: torch.Tensor, stop_all: float) -> None:
    """After a step that some rank was told to stop after, or that rank 0's clock says to save after
    (the flags, summed in the next step's collective, agree on every rank): every rank's epoch sums,
    checked, go in the checkpoint, which rank 0 writes; on a stop, every rank then raises Preempted."""
    sums = _finite_sums(running, state, run.total, run.recipe, run.dev_type)
    if run.rank == 0:
        save_checkpoint(run.stopping.ckpt, checkpoint_state(run.model, run.opt, {**state, "running": sums}))
    run.stopping.clock.saved()
    if stop_all:
        barrier()  # no rank leaves (exit 75: the launcher tears the job down) before rank 0 has saved
        raise Preempted(f"stopped at step {state['step']}/{run.total}; checkpoint {run.stopping.ckpt}")


def _end_epoch(run: TrainRun, state: dict[str, Any], running: torch.Tensor, t0: float) -> None:
    """An epoch's end, a sync point: its row of the log (loss and accuracy over every rank), then the
    position moves to the next epoch's start."""
    epoch = state["epoch"]
    ep_loss, ep_correct, ep_seen = _finite_sums(running, state, run.total, run.recipe, run.dev_type)
    if not ep_seen:
        raise ValueError(
            f"epoch {epoch + 1} trained on no image: a rank got no shard of the parts "
            f"({run.world} ranks); write more, smaller shards than ranks"
        )
    state["log"].append(
        {
            "epoch": epoch + 1,
            "step": state["step"],
            "train_loss": ep_loss / max(ep_seen, 1),
            "train_acc": ep_correct / max(ep_seen, 1),
            "lr": run.opt.param_groups[0]["lr"],
            "seconds": round(time.time() - t0, 3),
        }
    )
    state.update(epoch=epoch + 1, batches=0, running=[0.0, 0.0, 0.0])
    running.zero_()


def _save_run(
    run: TrainRun, state: dict[str, Any], n_classes: int, model_path: str | os.PathLike,
    log_path: str | os.PathLike,
) -> pd.DataFrame:
    """The end of training: the weights checked finite, then rank 0 writes the log and the weights
    and removes the checkpoint, while the other ranks wait."""
    recipe, model = run.recipe, run.model
    model.eval()
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise FloatingPointError(
            f"training left non-finite weights in {bad[:3]} ({len(bad)} tensors); "
            + _divergence_hint(recipe, run.dev_type)
        )
    log = pd.DataFrame(state["log"])
    if run.rank == 0:
        meta = {
            "arch": recipe["arch"],
            "model_kwargs": recipe.get("model_kwargs", {}),
            "n_classes": n_classes,
            "n_train": run.n,
            "seed": run.seed,
            "recipe": recipe["recipe"],
            "input_size": recipe["input_size"],
            "mean": recipe["mean"],
            "std": recipe["std"],
        }
        write_csv(log_path, log)
        save_classifier(model, model_path, meta)
        ckpt = run.stopping.ckpt
        if ckpt and ckpt.exists():
            ckpt.unlink()
    barrier()  # every rank leaves once rank 0's files are complete
    return log


def _finite_sums(
    running: torch.Tensor, state: dict[str, Any], total: int, recipe: dict[str, Any], dev_type: str
) -> list[float]:
    """A sync point: the epoch's (loss sum, correct, images) over every rank, read from the device;
    an inf or NaN loss fails the job here, before anything is saved."""
    sums = all_sum_device(running).tolist()
    if not math.isfinite(sums[0]):
        raise FloatingPointError(
            f"training diverged: loss {sums[0] / max(sums[2], 1)} in epoch {state['epoch'] + 1} "
            f"(by step {state['step']}/{total}); " + _divergence_hint(recipe, dev_type)
        )
    return sums


def _divergence_hint(recipe: dict[str, Any], dev_type: str) -> str:
    """What to change when training diverges: nothing is saved, the job fails."""
    hint = f"nothing was saved; lower train.lr ({recipe['lr']})"
    if recipe["amp"] and dev_type == "cpu":
        hint += " or set train.amp: false (bf16 autocast is meant for GPUs; on a CPU it can leave NaNs)"
    return hint


def train_classifier(images: np.ndarray, labels: np.ndarray, n_classes: int, *args: Any, **options: Any) -> pd.DataFrame:
    """`train_model` on in-memory uint8 images (N, H, W, C): the same loader, transform and loop; the
    rest of the arguments are train_model's after its parts (recipe, seed, model_path, log_path, and
    checkpoint_path, device, progress, stop_after_steps)."""
    parts = [{"arrays": (images, np.asarray(labels)), "limit": None}]
    return train_model(parts, n_classes, *args, **options)


@contextlib.contextmanager
def batchnorm_frozen_if_single(model: torch.nn.Module, batch: int):
    """A batch of one image (the last, short batch of an epoch or of a loader worker, e.g. N = 65 at
    batch 64) cannot train BatchNorm on its own statistics: its layers run in eval mode for that
    batch (their running statistics normalise it, their affine weights still train)."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training]
    if batch > 1 or not bns:
        yield
        return
    for m in bns:
        m.eval()
    try:
        yield
    finally:
        for m in bns:
            m.train()


def checkpoint_state(model, opt, state: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint holds: the model's and optimizer's state and the loop's (as JSON)."""
    return {"model": model.state_dict(), "opt": opt.state_dict(), "state": json.dumps(state)}


def training_parts(
    parts: list[dict[str, Any]], manifest: str | os.PathLike
) -> tuple[list[dict[str, Any]], int]:
    """Loader parts and the class count of a run, from Plan.train_parts (real first, then synthetic):
    a `{"split": name, "limit": R}` part becomes that split's shards from the manifest."""
    from synthscale.data.real import read_manifest, split_shards

    m = read_manifest(manifest)
    out = []
    for part in parts:
        if "split" in part:
            split = m["splits"][part["split"]]
            if part["limit"] is not None and int(part["limit"]) > int(split["count"]):
                # the loader would train on fewer images than the run's name says
                raise ValueError(
                    f"the run asks for {part['limit']} real images (n_images or mix.real_n), but the "
                    f"{part['split']!r} split of {manifest} holds {split['count']}"
                )
            shards = [str(s) for s in split_shards(manifest, part["split"])]
            out.append({"shards": shards, "limit": part["limit"], "count": split["count"]})
        else:
            out.append({"shards": [str(s) for s in part["shards"]], "limit": part["limit"]})
    return out, int(m["classes"])


def run_mix(parts: list[dict[str, Any]], mix: dict[str, Any]) -> dict[str, Any] | None:
    """How a run's loader combines its parts (`mix`: mode, synthetic_prob): a run of real + synthetic
    parts mixes them; a run of one part has nothing to mix (None)."""
    return mix if len(parts) > 1 else None


# --------------------------------------------------------------------------------------------------
# multi-GPU: torchrun runs this module, one process per GPU
# --------------------------------------------------------------------------------------------------


def train_run(
    plan_parts: list[dict[str, Any]], manifest: str | os.PathLike, recipe: dict[str, Any], seed: int,
    model_path: str | os.PathLike, log_path: str | os.PathLike, checkpoint_path: str | os.PathLike,
    device: str, mix: dict[str, Any] | None, gpus: int, threads: int, spec_path: str | os.PathLike,
) -> None:
    """The rule train_classifier: `train_model` of one run (in this process, or with `gpus` > 1 on
    torchrun's ranks: `run_training`), its parts from Plan.train_parts (`training_parts`: real first,
    then synthetic) combined as the mix spec says (`run_mix`)."""
    parts, n_classes = training_parts(plan_parts, manifest)
    spec = dict(
        parts=parts,
        n_classes=n_classes,
        recipe=recipe,
        seed=seed,
        model_path=model_path,
        log_path=log_path,
        checkpoint_path=checkpoint_path,
        device=device,
        mix=run_mix(parts, mix),
    )
    run_training(train_model, run_distributed, spec, gpus, threads, spec_path)


def run_distributed(spec: dict[str, Any], nproc: int, spec_path: str | os.PathLike) -> None:
    """`train_model(**spec)` on `nproc` torchrun processes (DDP; synthscale.distributed.run_torchrun);
    raises Preempted on a stop that saved a checkpoint."""
    run_torchrun("synthscale.classifier.train", spec, nproc, spec_path)


def main(spec_path: str) -> int:
    """torchrun entry (or a plain process): `train_model(**spec)` in a rank (synthscale.distributed.rank_main)."""
    return rank_main(spec_path, train_model)


@torch.no_grad()
def predict(
    model, images: np.ndarray, batch_size: int = 256, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, C) and penultimate features (N, D) in one batched pass."""
    model.eval()
    logits, feats = [], []
    for s in range(0, len(images), batch_size):
        x = to_input(images[s : s + batch_size]).to(device)
        f = model.forward_head(model.forward_features(x), pre_logits=True)
        feats.append(f.float().cpu())
        logits.append(model.get_classifier()(f).float().cpu())
    return torch.cat(logits).numpy(), torch.cat(feats).numpy()


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Bring uint8 (N, H, W, C) images to size x size (synthetic sets may come at 512 px)."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    from PIL import Image

    out = []
    for im in images:
        pil = Image.fromarray(im.squeeze(-1) if im.shape[-1] == 1 else im)
        out.append(np.asarray(pil.resize((size, size), Image.BICUBIC)).reshape(size, size, -1))
    return np.stack(out)


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1]))
