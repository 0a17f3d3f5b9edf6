"""Classifier training: a timm model from the registry, one loop top to bottom, fed by a DataLoader.

Data order and augmentation come from (seed, epoch) and (seed, epoch, image) alone (synthscale.data.loader),
and dropout/drop-path/mixup from (seed, step, rank) (`step_seed`), never from a running random state,
so a run stopped at any step (SIGTERM: SLURM's warning before its time limit; or a periodic
checkpoint, every `checkpoint_minutes`, and a kill) and resumed from its checkpoint reaches
bit-identical weights for a pinned thread count and worker count.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
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
from synthscale.data.loader import DeviceNormalize, TrainLoader, epoch_size, uint8_batches
from synthscale.distributed import all_sum, all_sum_device, barrier, dist_on, rank_main, rank_seed, rank_world, run_torchrun
from synthscale.preemption import CheckpointClock, Preempted, StopSignals, resume_checkpoint, save_checkpoint
from synthscale.study.recipes import resolve_recipe


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
    `stop_after_steps` simulates a stop in tests.

    The loss and accuracy sums stay on the device and are read (and checked for inf/NaN) at the
    sync points only: every `SYNC_EVERY` steps, each epoch's end and each checkpoint.
    """
    recipe = full_recipe(recipe, parts)
    # uint8 batches (auto: on CUDA) are normalised, and randomly erased, here on the device
    recipe["uint8_batches"] = uint8_batches(recipe, device)
    finish = DeviceNormalize(recipe, device) if recipe["uint8_batches"] else None
    rank, world = rank_world()
    micro = recipe["micro_batch_size"] or max(1, recipe["batch_size"] // world)
    accum = max(1, recipe["batch_size"] // (micro * world))
    n = epoch_size(parts, mix)
    spe, epochs = plan_steps(n, recipe)
    total, total_images = spe * epochs, n * epochs
    warmup = recipe["warmup_frac"] * total_images

    dev_type = torch.device(device).type
    if dev_type == "cuda":
        enable_fast_cuda_math()
    torch.manual_seed(seed)
    model = create_classifier(recipe["arch"], n_classes, recipe.get("model_kwargs")).to(device)
    if recipe["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, recipe)
    base_lrs = [g["lr"] for g in opt.param_groups]
    state = {"epoch": 0, "batches": 0, "step": 0, "seen": 0, "log": [], "running": [0.0, 0.0, 0.0]}
    ckpt = Path(checkpoint_path) if checkpoint_path else None
    saved = resume_checkpoint(ckpt, device, clean=rank == 0)
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        state = json.loads(saved["state"])
        if rank > 0:  # rank 0 saved the epoch's sums over every rank
            state["running"] = [0.0, 0.0, 0.0]
    # this rank's (loss sum, correct, images) of the epoch so far, on the device
    running = torch.tensor(state["running"], dtype=torch.float64, device=device)

    net = model
    ddp = dist_on()  # DDP whenever a process group is up, even with one rank (the GPU suite's NCCL check)
    if ddp:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[torch.device(device).index] if device.startswith("cuda") else None
        )
        if rank == 0:
            print(f"DDP: {world} rank(s), process group backend {torch.distributed.get_backend()}", flush=True)
    if recipe["compile"]:
        mode = recipe["compile"] if isinstance(recipe["compile"], str) else None
        net = torch.compile(net, mode=mode)
    mixup = None
    if recipe["mixup"] > 0 or recipe["cutmix"] > 0:
        from timm.data import Mixup

        mixup = Mixup(
            mixup_alpha=recipe["mixup"],
            cutmix_alpha=recipe["cutmix"],
            label_smoothing=recipe["label_smoothing"],
            num_classes=n_classes,
        )
    amp = torch.autocast(dev_type, dtype=torch.bfloat16, enabled=bool(recipe["amp"]))

    stop = StopSignals(enabled=bool(ckpt))
    meta = {
        "arch": recipe["arch"],
        "model_kwargs": recipe.get("model_kwargs", {}),
        "n_classes": n_classes,
        "n_train": n,
        "seed": seed,
        "recipe": recipe["recipe"],
        "input_size": recipe["input_size"],
        "mean": recipe["mean"],
        "std": recipe["std"],
    }
    desc = f"train {recipe['arch']} n={n}"
    bar = tqdm(total=total, initial=state["step"], desc=desc, disable=not progress or rank > 0)
    t0 = time.time()
    clock = CheckpointClock(recipe.get("checkpoint_minutes"))
    # one DataLoader for every epoch: its workers start once and keep their decoded images
    loader = TrainLoader(parts, recipe, seed, mix=mix, batch_size=micro)
    try:
        net.train()
        while state["epoch"] < epochs:
            epoch = state["epoch"]
            it = loader.epoch(epoch)
            for _ in range(state["batches"]):  # resume mid-epoch: skip the batches already done
                next(it, None)
            while True:
                batches = [b for b in (next(it, None) for _ in range(accum)) if b is not None]
                local = sum(len(b[1]) for b in batches)
                empty, seen_now, _ = all_sum([float(not batches), float(local), 0.0])
                if empty:  # an epoch ends when any rank runs out (ranks must step together)
                    break
                factor = lr_factor(state["seen"], total_images, warmup, recipe["batch_size"])
                for g, lr in zip(opt.param_groups, base_lrs):
                    g["lr"] = lr * factor
                s_seed = step_seed(seed, state["step"], rank)
                torch.default_generator.manual_seed(s_seed)  # dropout, drop-path
                if dev_type == "cuda":
                    torch.cuda.manual_seed(s_seed)
                np.random.seed(s_seed)  # timm Mixup draws from numpy
                if finish is not None and finish.erase is not None:
                    random.seed(s_seed)  # timm RandomErasing draws its boxes from python's random
                opt.zero_grad(set_to_none=True)
                loss_sum = torch.zeros((), dtype=torch.float64, device=device)
                correct = torch.zeros((), dtype=torch.float64, device=device)
                for j, (xb, yb) in enumerate(batches):
                    xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                    if finish is not None:
                        xb = finish(xb)
                    if recipe["channels_last"]:
                        xb = xb.contiguous(memory_format=torch.channels_last)
                    target = yb
                    if mixup is not None and len(yb) % 2 == 0:
                        xb, target = mixup(xb, yb)
                    sync = not ddp or j == len(batches) - 1
                    ctx = net.no_sync() if not sync and hasattr(net, "no_sync") else contextlib.nullcontext()
                    with ctx:
                        with amp, batchnorm_frozen_if_single(model, len(yb)):
                            logits = net(xb)
                        logits = logits.float()
                        if target.ndim == 2:
                            loss = torch.sum(-target * F.log_softmax(logits, -1), -1).mean()
                        else:
                            loss = F.cross_entropy(logits, target, label_smoothing=recipe["label_smoothing"])
                        (loss * len(yb) / local).backward()
                    # no .item(): the sums stay on the device (no host sync per micro-batch)
                    loss_sum += loss.detach().double() * len(yb)
                    correct += (logits.argmax(1) == yb).sum().double()
                opt.step()
                state["step"] += 1
                state["batches"] += len(batches)
                state["seen"] += int(seen_now)
                running[0] += loss_sum  # (a python number added on the device: no host-to-device copy)
                running[1] += correct
                running[2] += local
                bar.update(1)
                if state["step"] % SYNC_EVERY == 0:  # a sync point between epochs: check, show the loss
                    sums = _finite_sums(running, state, total, recipe, dev_type)
                    bar.set_postfix(loss=f"{sums[0] / max(sums[2], 1):.4g}", refresh=False)
                if not ckpt:
                    continue
                stopping = stop.stopping(state["step"], stop_after_steps)
                due = rank == 0 and clock.due()
                stop_all, due_all = all_sum([float(stopping), float(due)])
                if stop_all or due_all:
                    # every rank's epoch sums, checked, in the checkpoint (rank 0 writes it)
                    sums = _finite_sums(running, state, total, recipe, dev_type)
                    if rank == 0:
                        save_checkpoint(ckpt, checkpoint_state(model, opt, {**state, "running": sums}))
                    clock.saved()
                if stop_all:
                    raise Preempted(f"stopped at step {state['step']}/{total}; checkpoint {ckpt}")
            ep_loss, ep_correct, ep_seen = _finite_sums(running, state, total, recipe, dev_type)
            if not ep_seen:
                raise ValueError(
                    f"epoch {epoch + 1} trained on no image: a rank got no shard of the parts "
                    f"({world} ranks); write more, smaller shards than ranks"
                )
            state["log"].append(
                {
                    "epoch": epoch + 1,
                    "step": state["step"],
                    "train_loss": ep_loss / max(ep_seen, 1),
                    "train_acc": ep_correct / max(ep_seen, 1),
                    "lr": opt.param_groups[0]["lr"],
                    "seconds": round(time.time() - t0, 3),
                }
            )
            state.update(epoch=epoch + 1, batches=0, running=[0.0, 0.0, 0.0])
            running.zero_()
    finally:
        loader.close()
        bar.close()
        stop.restore()
    model.eval()
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise FloatingPointError(
            f"training left non-finite weights in {bad[:3]} ({len(bad)} tensors); " + _divergence_hint(recipe, dev_type)
        )
    log = pd.DataFrame(state["log"])
    if rank == 0:
        write_csv(log_path, log)
        save_classifier(model, model_path, meta)
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


def train_classifier(
    images: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    recipe: dict[str, Any],
    seed: int,
    model_path: str | os.PathLike,
    log_path: str | os.PathLike,
    checkpoint_path: str | os.PathLike | None = None,
    device: str = "cpu",
    progress: bool = True,
    stop_after_steps: int | None = None,
) -> pd.DataFrame:
    """`train_model` on in-memory uint8 images (N, H, W, C): the same loader, transform and loop."""
    parts = [{"arrays": (images, np.asarray(labels)), "limit": None}]
    return train_model(
        parts, n_classes, recipe, seed, model_path, log_path, checkpoint_path, device, progress,
        stop_after_steps,
    )


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


# --------------------------------------------------------------------------------------------------
# multi-GPU: torchrun runs this module, one process per GPU
# --------------------------------------------------------------------------------------------------


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
