"""Classifier training and evaluation: a timm model from the registry, one loop top to bottom.

Data order and augmentation come from (seed, epoch) and (seed, step) alone, never from a running
random state, so a run stopped at any step (SIGTERM: SLURM's warning before its time limit) and
resumed from its checkpoint reaches bit-identical weights for a pinned thread count.
"""

from __future__ import annotations

import json
import math
import os
import signal
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


class Preempted(RuntimeError):
    """Training stopped on a signal after saving its checkpoint; rerun to resume."""


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


def pad_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to `pad` pixels (zero padding, then a crop of the original size)."""
    if pad == 0:
        return x
    n, _, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad), value=-1.0)
    offs = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen)
    return torch.stack([xp[i, :, a : a + h, b : b + w] for i, (a, b) in enumerate(offs.tolist())])


def plan_steps(n: int, recipe: dict[str, Any]) -> tuple[int, int]:
    """(steps per epoch, epochs): `epochs` passes, stretched so small sets get `min_steps` updates."""
    spe = math.ceil(n / recipe["batch_size"])
    epochs = max(recipe["epochs"], math.ceil(recipe["min_steps"] / spe))
    return spe, epochs


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
    """Train `recipe["arch"]` on uint8 images; write safetensors weights and a per-epoch CSV log.

    With `checkpoint_path`, a SIGTERM or SIGINT saves a checkpoint after the current step and raises
    `Preempted`; a later call resumes from it. `stop_after_steps` simulates that stop in tests.
    """
    torch.manual_seed(seed)
    model = create_classifier(recipe["arch"], n_classes, recipe.get("model_kwargs")).to(device)
    x_all, y_all = to_input(images), torch.as_tensor(labels, dtype=torch.long)
    n = len(y_all)
    spe, epochs = plan_steps(n, recipe)
    total = spe * epochs
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    warmup = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / total))
    )
    step, log_rows = 0, []
    running = [0.0, 0.0, 0.0]  # this epoch's summed loss, correct count and images seen
    ckpt = Path(checkpoint_path) if checkpoint_path else None
    if ckpt and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step, log_rows = int(state["step"]), json.loads(state["log"])
        running = json.loads(state["running"])

    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signum

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)} if ckpt else {}
    meta = {
        "arch": recipe["arch"],
        "model_kwargs": recipe.get("model_kwargs", {}),
        "n_classes": n_classes,
        "n_train": n,
        "seed": seed,
    }
    bar = tqdm(total=total, initial=step, desc=f"train {recipe['arch']} n={n}", disable=not progress)
    try:
        model.train()
        ep_loss, ep_correct, ep_seen = running
        t0 = time.time()
        while step < total:
            epoch, i = divmod(step, spe)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
            idx = perm[i * recipe["batch_size"] : (i + 1) * recipe["batch_size"]]
            aug = torch.Generator().manual_seed(seed * 1_000_003 + step)
            xb = pad_crop(x_all[idx], recipe.get("pad_crop", 0), aug).to(device)
            yb = y_all[idx].to(device)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb, label_smoothing=recipe.get("label_smoothing", 0.0))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            bar.update(1)
            ep_loss += loss.item() * len(yb)
            ep_correct += float((logits.argmax(1) == yb).sum())
            ep_seen += len(yb)
            if step % spe == 0:
                log_rows.append(
                    {
                        "epoch": epoch + 1,
                        "step": step,
                        "train_loss": ep_loss / ep_seen,
                        "train_acc": ep_correct / ep_seen,
                        "lr": sched.get_last_lr()[0],
                        "seconds": round(time.time() - t0, 3),
                    }
                )
                ep_loss = ep_correct = ep_seen = 0.0
            stopping = stop["signal"] is not None or stop_after_steps == step
            if ckpt and stopping and step < total:
                _save_checkpoint(ckpt, model, opt, sched, step, log_rows, [ep_loss, ep_correct, ep_seen])
                raise Preempted(f"stopped at step {step}/{total}; checkpoint {ckpt}")
    finally:
        bar.close()
        for s, h in old.items():
            signal.signal(s, h)
    model.eval()
    log = pd.DataFrame(log_rows)
    write_csv(log_path, log)
    save_classifier(model, model_path, meta)
    if ckpt and ckpt.exists():
        ckpt.unlink()
    return log


def _save_checkpoint(
    path: Path, model, opt, sched, step: int, log_rows: list, running: list[float]
) -> None:
    with atomic_path(path) as tmp:
        torch.save(
            {
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                "sched": sched.state_dict(),
                "step": step,
                "log": json.dumps(log_rows),
                "running": json.dumps(running),
            },
            tmp,
        )


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


def evaluate_logits(
    logits: np.ndarray, labels: np.ndarray, n_classes: int
) -> tuple[dict[str, float], pd.DataFrame]:
    """Cross-entropy, top-1 and mean per-class accuracy, plus a per-class table (acc, loss, count)."""
    lt = torch.as_tensor(logits, dtype=torch.float64)
    yt = torch.as_tensor(labels, dtype=torch.long)
    losses = F.cross_entropy(lt, yt, reduction="none").numpy()
    correct = (logits.argmax(1) == labels).astype(float)
    rows = []
    for c in range(n_classes):
        m = labels == c
        rows.append(
            {
                "class_index": c,
                "count": int(m.sum()),
                "accuracy": float(correct[m].mean()) if m.any() else float("nan"),
                "loss": float(losses[m].mean()) if m.any() else float("nan"),
            }
        )
    per_class = pd.DataFrame(rows)
    metrics = {
        "loss": float(losses.mean()),
        "top1": float(correct.mean()),
        "mean_class_acc": float(per_class["accuracy"].mean()),
        "n_eval": int(len(labels)),
    }
    return metrics, per_class


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


def load_training_set(
    source: str,
    n: str,
    manifest: str | os.PathLike,
    shards: list[str] | list[Path],
    image_size: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Images, labels and class count for a (source, n) run: the first N images of its shards."""
    from synthscale.data import read_manifest, split_shards
    from synthscale.shards import load_arrays

    n_classes = int(read_manifest(manifest)["classes"])
    limit = None if n == "all" else int(n)
    if source == "real":
        shards = split_shards(manifest, "train")
    images, labels, _ = load_arrays(shards, mode="RGB", limit=limit)
    return resize_images(images, image_size), labels, n_classes


def evaluate_models(
    model_paths: list[str] | list[Path],
    n_labels: list[str],
    manifest: str | os.PathLike,
    eval_sets: list[str],
    metrics_path: str | os.PathLike,
    per_class_path: str | os.PathLike,
    batch_size: int = 256,
    device: str = "cpu",
) -> pd.DataFrame:
    """Evaluate the classifiers of one source (one per N) on every eval set.

    Writes one metrics row per (n_label, eval set) and per-class rows (accuracy, loss, count).
    """
    from synthscale.data import split_shards
    from synthscale.shards import load_arrays

    sets = {name: load_arrays(split_shards(manifest, name), mode="RGB")[:2] for name in eval_sets}
    rows, per_class = [], []
    for path, n_label in zip(model_paths, n_labels):
        model, meta = load_classifier(path, device)
        for name, (images, labels) in sets.items():
            logits, _ = predict(model, images, batch_size, device)
            metrics, pc = evaluate_logits(logits, labels, meta["n_classes"])
            rows.append({"n_label": n_label, "eval_set": name, **metrics})
            per_class.append(pc.assign(n_label=n_label, eval_set=name))
    df = pd.DataFrame(rows)
    write_csv(metrics_path, df)
    write_csv(per_class_path, pd.concat(per_class, ignore_index=True))
    return df
