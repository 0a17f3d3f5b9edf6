"""Evaluation that streams: every classifier on every eval set, batch by batch through a DataLoader.

Logits never pile up: per-class sums of loss and correct predictions accumulate batch by batch
(`Accumulator`). An eval split that covers a subset of the classes (the manifest's split entry lists
its "classes", as ImageNet-R/-A do) has its logits restricted to those classes before loss and top-1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from synthscale.io import write_csv
from synthscale.data.loader import build_eval_loader
from synthscale.classifier.train import full_recipe, load_classifier


class Accumulator:
    """Per-class counts, summed losses and correct predictions, updated batch by batch."""

    def __init__(self, n_classes: int, classes: Sequence[int] | None = None):
        self.n_classes = n_classes
        self.classes = None if classes is None else torch.as_tensor(list(classes), dtype=torch.long)
        self.count = torch.zeros(n_classes, dtype=torch.float64)
        self.loss = torch.zeros(n_classes, dtype=torch.float64)
        self.correct = torch.zeros(n_classes, dtype=torch.float64)

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits, labels = logits.detach().double().cpu(), labels.long().cpu()
        if self.classes is not None:
            # ImageNet-R/-A protocol: only the covered classes compete; labels map to their column
            pos = torch.full((self.n_classes,), -1, dtype=torch.long)
            pos[self.classes] = torch.arange(len(self.classes))
            target = pos[labels]
            if (target < 0).any():
                bad = labels[target < 0][0].item()
                raise ValueError(f"label {bad} is not among the eval set's classes")
            logits = logits[:, self.classes]
            pred = self.classes[logits.argmax(1)]
        else:
            target = labels
            pred = logits.argmax(1)
        losses = F.cross_entropy(logits, target, reduction="none")
        self.count.index_add_(0, labels, torch.ones_like(losses))
        self.loss.index_add_(0, labels, losses)
        self.correct.index_add_(0, labels, (pred == labels).double())

    def compute(self) -> tuple[dict[str, float], pd.DataFrame]:
        count, n = self.count.numpy(), float(self.count.sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = np.where(count > 0, self.correct.numpy() / count, np.nan)
            loss = np.where(count > 0, self.loss.numpy() / count, np.nan)
        per_class = pd.DataFrame(
            {"class_index": np.arange(self.n_classes), "count": count.astype(int), "accuracy": acc, "loss": loss}
        )
        metrics = {
            "loss": float(self.loss.sum()) / n if n else float("nan"),
            "top1": float(self.correct.sum()) / n if n else float("nan"),
            "mean_class_acc": float(np.nanmean(acc)) if n else float("nan"),
            "n_eval": int(n),
        }
        return metrics, per_class


def evaluate_logits(
    logits: np.ndarray, labels: np.ndarray, n_classes: int, classes: Sequence[int] | None = None
) -> tuple[dict[str, float], pd.DataFrame]:
    """Cross-entropy, top-1 and mean per-class accuracy, plus a per-class table (acc, loss, count)."""
    acc = Accumulator(n_classes, classes)
    acc.update(torch.as_tensor(logits), torch.as_tensor(labels))
    return acc.compute()


@torch.no_grad()
def evaluate_model(
    model, loader, n_classes: int, classes: Sequence[int] | None = None, device: str = "cpu",
    desc: str | None = None,
) -> tuple[dict[str, float], pd.DataFrame]:
    """One model on one eval loader, accumulated batch by batch (under bf16 autocast on CUDA; the
    logits are read in float32)."""
    model.eval()
    acc = Accumulator(n_classes, classes)
    cuda = torch.device(device).type == "cuda"
    for x, y in tqdm(loader, desc=desc, disable=desc is None, leave=False):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            logits = model(x.to(device, non_blocking=True))
        acc.update(logits.float(), y)
    return acc.compute()


def eval_splits(manifest: str | os.PathLike, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each eval split's shard paths and class subset (None = every class) from the manifest."""
    from synthscale.data.real import read_manifest, split_shards

    m = read_manifest(manifest)
    return {
        name: {"shards": split_shards(manifest, name), "classes": m["splits"][name].get("classes")}
        for name in names
    }


def evaluate_models(
    model_paths: Sequence[str | os.PathLike],
    n_labels: Sequence[str],
    seeds: Sequence[int],
    manifest: str | os.PathLike,
    eval_sets: Sequence[str],
    metrics_path: str | os.PathLike,
    per_class_path: str | os.PathLike,
    recipe: dict[str, Any],
    batch_size: int = 256,
    device: str = "cpu",
    num_workers: int = 0,
) -> pd.DataFrame:
    """Evaluate the classifiers of one source (one per (N, seed)) on every eval set, streaming.

    Writes one metrics row per (n_label, seed, eval set) and per-class rows (accuracy, loss, count).
    """
    recipe = full_recipe(recipe)
    splits = eval_splits(manifest, eval_sets)
    rows, per_class = [], []
    for path, n_label, seed in zip(model_paths, n_labels, seeds):
        model, meta = load_classifier(path, device)
        if recipe["channels_last"] and torch.device(device).type == "cuda":  # as trained (CNNs: cuDNN NHWC)
            model = model.to(memory_format=torch.channels_last)
        for name, split in splits.items():
            loader = build_eval_loader(split["shards"], recipe, batch_size, num_workers)
            metrics, pc = evaluate_model(
                model, loader, meta["n_classes"], split["classes"], device, desc=f"{Path(path).parent} {name}"
            )
            rows.append({"n_label": n_label, "seed": int(seed), "eval_set": name, **metrics})
            per_class.append(pc.assign(n_label=n_label, seed=int(seed), eval_set=name))
    df = pd.DataFrame(rows)
    write_csv(metrics_path, df)
    write_csv(per_class_path, pd.concat(per_class, ignore_index=True))
    return df
