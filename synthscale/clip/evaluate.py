"""Zero-shot evaluation of CLIPs as Fan et al.'s eval_imagenet_clip.py does it.

Class names x CLIP's 80 ImageNet templates (open_clip's OPENAI_IMAGENET_TEMPLATES), the normalised
text embeddings averaged per class (open_clip.build_zero_shot_classifier); logits =
logit_scale * normalised image features @ classifier; top-1 and the cross-entropy of those logits.
An eval set that covers a subset of the classes (the manifest's split lists its "classes", as
ImageNet-R/-A do) scores over that subset only, as the supervised arm does (synthscale.classifier.evaluate's
Accumulator: logits restricted to the covered classes before loss and top-1).
Eval images stream from the manifest's split shards through a DataLoader, batch by batch.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from synthscale.io import write_csv
from synthscale.data.real import class_names
from synthscale.data.shards import wds_samples


def templates(name: str = "openai_imagenet") -> list:
    """open_clip's template lists: `openai_imagenet` (the 80) or `simple_imagenet` (the 7)."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    table = {"openai_imagenet": OPENAI_IMAGENET_TEMPLATES, "simple_imagenet": SIMPLE_IMAGENET_TEMPLATES}
    if name not in table:
        raise ValueError(f"unknown template set {name!r}; choose from {sorted(table)}")
    return list(table[name])


@torch.no_grad()
def zero_shot_classifier(model, tokenizer, classnames: Sequence[str], template_set: str = "openai_imagenet",
                         device: str = "cpu") -> torch.Tensor:
    """(embed_dim, C): per class, the mean of its normalised template embeddings, normalised."""
    import open_clip

    return open_clip.build_zero_shot_classifier(
        model,
        tokenizer=tokenizer,
        classnames=list(classnames),
        templates=templates(template_set),
        num_classes_per_batch=10,
        device=device,
        use_tqdm=False,
    )


@torch.no_grad()
def zero_shot_logits(model, images: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """logit_scale * normalise(encode_image(images)) @ classifier (Fan et al.'s zero-shot logits)."""
    feats = F.normalize(model.encode_image(images), dim=-1)
    return model.logit_scale.exp() * feats @ classifier


def eval_loader(shards: Sequence[str | os.PathLike], preprocess, batch_size: int, workers: int = 0):
    """A DataLoader of (images, labels) batches over WebDataset shards, in shard order."""
    import webdataset as wds

    ds = wds.DataPipeline(
        wds.SimpleShardList([str(p) for p in shards]),
        wds.split_by_worker,
        wds_samples,
        wds.decode("pilrgb"),
        wds.to_tuple("png;jpg;jpeg;webp", "cls"),
        wds.map_tuple(preprocess, int),
        wds.batched(batch_size, partial=True),
    )
    return torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)


@torch.no_grad()
def evaluate_zero_shot(
    model, classifier: torch.Tensor, loader, device: str = "cpu", classes: Sequence[int] | None = None
) -> dict[str, float]:
    """Top-1 and mean cross-entropy of zero-shot logits, accumulated batch by batch; `classes` (the
    eval set's class subset, None = all) restricts the logits to those classes first."""
    from synthscale.classifier.evaluate import Accumulator

    acc = Accumulator(classifier.shape[1], classes)
    for images, labels in loader:
        acc.update(zero_shot_logits(model, images.to(device), classifier), torch.as_tensor(labels))
    metrics, _ = acc.compute()
    if metrics["n_eval"] == 0:
        raise ValueError("the evaluation set is empty")
    return {k: metrics[k] for k in ("loss", "top1", "n_eval")}


def evaluate_clip_models(
    model_paths: Sequence[str | os.PathLike],
    n_labels: Sequence[str],
    seeds: Sequence[int],
    manifest: str | os.PathLike,
    classes_csv: str | os.PathLike,
    eval_sets: Sequence[str],
    metrics_path: str | os.PathLike,
    template_set: str = "openai_imagenet",
    batch_size: int = 256,
    device: str = "cpu",
) -> pd.DataFrame:
    """Zero-shot metrics of one source's CLIPs (one per (N, seed)) on every eval set, each over its
    class subset: one row per (model, eval set)."""
    from synthscale.clip.train import load_clip
    from synthscale.classifier.evaluate import eval_splits

    names = class_names(classes_csv)
    splits = eval_splits(manifest, eval_sets)
    rows: list[dict[str, Any]] = []
    for path, n_label, seed in zip(model_paths, n_labels, seeds, strict=True):
        model, preprocess, tokenizer = load_clip(path, device)
        classifier = zero_shot_classifier(model, tokenizer, names, template_set, device)
        for name, split in splits.items():
            loader = eval_loader(split["shards"], preprocess, batch_size)
            metrics = evaluate_zero_shot(model, classifier, loader, device, split["classes"])
            n_cls = len(split["classes"]) if split["classes"] is not None else len(names)
            rows.append({"n_label": n_label, "seed": int(seed), "eval_set": name, **metrics, "n_classes": n_cls,
                         "logit_scale": float(model.logit_scale.exp().detach())})
    df = pd.DataFrame(rows)
    write_csv(metrics_path, df)
    return df


def chance(n_classes: int) -> dict[str, float]:
    """Top-1 and loss of a classifier that knows nothing (uniform logits)."""
    return {"top1": 1.0 / n_classes, "loss": float(np.log(n_classes))}

