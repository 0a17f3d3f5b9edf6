"""Quality of a synthetic set: recognizability, diversity, FID/KID/IS, as in both papers.

Fan et al. (2023) explain how synthetic sets scale through two per-class properties measured by a
real-data classifier, the judge (synthscale.quality.judge):
- recognizability: F1 of the judge's predictions against the classes the images were generated for,
  per class, then the macro average;
- diversity: the spread of the judge's penultimate features within a class, then the class average.
Azizi et al. (2023) add FID and the Inception Score; CAS comes from the evaluate stage.

Everything streams: images are read shard by shard in batches, pushed through the judge (and
Inception when FID uses it) once, and every metric accumulates per batch:
- recognizability keeps one predicted class per image;
- diversity keeps per-class sums and sums of squares of the features (C x D numbers);
- FID, KID and IS are torchmetrics metrics, updated per batch with `feature=Precomputed` (an identity
  module, so they take the features already computed); FID keeps only its moment sums.
Only the reference set's FID features (float32, at most `quality.n_images` of them) are kept, in its
cached `.npz`, so each synthetic set's FID/KID needs no second pass over the real images.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from synthscale.io import atomic_path, write_csv, write_json
from synthscale.data.real import manifest_classes, read_classes
from synthscale.quality.judge import Judge, JudgeFiles, extract, extract_inception, load_inception, load_judge
from synthscale.classifier.train import resize_images


class Precomputed(nn.Module):
    """An identity `feature=` module: torchmetrics' `update` receives features, not images."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


# --------------------------------------------------------------------------------------------------
# streaming accumulators
# --------------------------------------------------------------------------------------------------


class Diversity:
    """Per-class diversity (mean over dimensions of the per-dimension population std of features),
    accumulated batch by batch from per-class sums; L2-normalised features by default."""

    def __init__(self, n_classes: int, l2: bool = True):
        self.n_classes, self.l2 = n_classes, l2
        self.count = np.zeros(n_classes)
        self.s1: np.ndarray | None = None
        self.s2: np.ndarray | None = None

    def update(self, features: np.ndarray, labels: np.ndarray) -> None:
        x = np.asarray(features, dtype=np.float64)
        if self.l2:
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.finfo(np.float64).tiny)
        if self.s1 is None:
            self.s1 = np.zeros((self.n_classes, x.shape[1]))
            self.s2 = np.zeros((self.n_classes, x.shape[1]))
        labels = np.asarray(labels)
        np.add.at(self.count, labels, 1)
        np.add.at(self.s1, labels, x)
        np.add.at(self.s2, labels, x * x)

    def compute(self) -> tuple[float, np.ndarray]:
        per_class = np.full(self.n_classes, np.nan)
        if self.s1 is not None:
            have = self.count > 0
            mean = self.s1[have] / self.count[have, None]
            var = np.maximum(self.s2[have] / self.count[have, None] - mean**2, 0.0)
            per_class[have] = np.sqrt(var).mean(1)
        present = ~np.isnan(per_class)
        return (float(per_class[present].mean()) if present.any() else float("nan")), per_class


def diversity(features: np.ndarray, labels: np.ndarray, n_classes: int, l2: bool = True) -> tuple[float, np.ndarray]:
    """Diversity of one array of features (a single update of `Diversity`)."""
    d = Diversity(n_classes, l2)
    d.update(features, labels)
    return d.compute()


def recognizability(
    logits_or_pred: np.ndarray, labels: np.ndarray, n_classes: int
) -> tuple[dict[str, float], pd.DataFrame]:
    """Per-class precision, recall and F1 of the judge's top-1 against the intended classes.

    Takes logits (N, C) or predicted classes (N,). Classes never predicted nor present score 0
    (sklearn's zero_division=0): a generator that never draws a class recognizably is penalised.
    """
    from sklearn.metrics import precision_recall_fscore_support

    a = np.asarray(logits_or_pred)
    pred = a.argmax(1) if a.ndim == 2 else a
    p, r, f, support = precision_recall_fscore_support(labels, pred, labels=np.arange(n_classes), zero_division=0)
    per_class = pd.DataFrame(
        {"class_index": np.arange(n_classes), "precision": p, "recall": r, "f1": f, "support": support.astype(int)}
    )
    summary = {
        "macro_f1": float(f.mean()),
        "macro_precision": float(p.mean()),
        "macro_recall": float(r.mean()),
        "accuracy": float((pred == labels).mean()),
    }
    return summary, per_class


def _t(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float32))


def new_fid(dim: int):
    from torchmetrics.image.fid import FrechetInceptionDistance

    return FrechetInceptionDistance(feature=Precomputed(dim))


def new_kid(dim: int, subsets: int, subset_size: int):
    from torchmetrics.image.kid import KernelInceptionDistance

    return KernelInceptionDistance(feature=Precomputed(dim), subsets=subsets, subset_size=subset_size)


def fid_from_features(real: np.ndarray, fake: np.ndarray, batch: int = 1024) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (torchmetrics; float64 moment
    sums, fed in float32 batches)."""
    metric = new_fid(real.shape[1])
    for s in range(0, len(real), batch):
        metric.update(_t(real[s : s + batch]), real=True)
    for s in range(0, len(fake), batch):
        metric.update(_t(fake[s : s + batch]), real=False)
    return float(metric.compute())


def _kid_compute(metric, n_real: int, n_fake: int, subset_size: int, seed: int) -> tuple[float, float, int]:
    size = int(min(subset_size, n_real, n_fake))
    if size < 2:
        return float("nan"), float("nan"), size
    metric.subset_size = size
    torch.manual_seed(seed)  # torchmetrics draws subsets from torch's global RNG
    mean, std = metric.compute()
    return float(mean), float(std), size


def kid_from_features(
    real: np.ndarray, fake: np.ndarray, subsets: int, subset_size: int, seed: int
) -> tuple[float, float, int]:
    """KID mean and std over random subsets; subset_size is clamped to the smaller set's size.
    Returns the subset size used."""
    metric = new_kid(real.shape[1], subsets, max(2, subset_size))
    metric.update(_t(real), real=True)
    metric.update(_t(fake), real=False)
    return _kid_compute(metric, len(real), len(fake), subset_size, seed)


def _is_compute(metric, n: int, splits: int, seed: int) -> tuple[float, float]:
    metric.splits = max(1, min(splits, n))
    torch.manual_seed(seed)
    mean, std = metric.compute()
    return float(mean), float(0.0 if torch.isnan(std) else std)


def inception_score_from_logits(logits: np.ndarray, splits: int, seed: int) -> tuple[float, float]:
    """IS = exp(E KL(p(y|x) || p(y))), mean and std over splits (clamped to the number of images)."""
    from torchmetrics.image.inception import InceptionScore

    metric = InceptionScore(feature=Precomputed(logits.shape[1]), splits=1)
    metric.update(torch.as_tensor(np.asarray(logits), dtype=torch.float64))
    return _is_compute(metric, len(logits), splits, seed)


class SetMetrics:
    """Every quality metric of one set, accumulated batch by batch.

    `reference` (when given) holds the real set's FID features: they enter FID and KID once, at the
    start. `keep_fid` keeps this set's own FID features and labels (float32), for the reference
    set's cached `.npz`.
    """

    def __init__(self, n_classes: int, qcfg: dict[str, Any], seed: int,
                 reference: "Reference | None" = None, keep_fid: bool = False):
        from torchmetrics.image.inception import InceptionScore

        self.n_classes, self.qcfg, self.seed = n_classes, qcfg, seed
        self.reference, self.keep_fid = reference, keep_fid
        self.preds: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.diversity = Diversity(n_classes, qcfg["diversity_l2"])
        self.inception = InceptionScore(feature=Precomputed(1), splits=1)
        self.fid = self.kid = None
        self.kept: list[np.ndarray] = []
        self.kept_logits: list[np.ndarray] = []

    def _start_fid(self, dim: int) -> None:
        self.fid = new_fid(dim)
        self.kid = new_kid(dim, self.qcfg["kid_subsets"], max(2, self.qcfg["kid_subset_size"]))
        feats = self.reference.fid_features
        if feats.shape[1] != dim:
            raise ValueError(
                f"the reference has {feats.shape[1]}-d FID features but this set has {dim}: rebuild "
                "the reference with the same quality.features"
            )
        for s in range(0, len(feats), 1024):
            self.fid.update(_t(feats[s : s + 1024]), real=True)
            self.kid.update(_t(feats[s : s + 1024]), real=True)

    def update(self, logits: np.ndarray, features: np.ndarray, labels: np.ndarray,
               fid_features: np.ndarray, fid_logits: np.ndarray) -> None:
        labels = np.asarray(labels)
        self.preds.append(np.asarray(logits).argmax(1))
        self.labels.append(labels)
        self.diversity.update(features, labels)
        self.inception.update(torch.as_tensor(np.asarray(fid_logits), dtype=torch.float32))
        if self.reference is not None:
            if self.fid is None:
                self._start_fid(fid_features.shape[1])
            self.fid.update(_t(fid_features), real=False)
            self.kid.update(_t(fid_features), real=False)
        if self.keep_fid:
            self.kept.append(np.asarray(fid_features, dtype=np.float32))
            self.kept_logits.append(np.asarray(fid_logits, dtype=np.float32))

    def compute(self) -> tuple[dict[str, Any], pd.DataFrame]:
        if not self.preds:
            raise ValueError("no images were measured")
        labels = np.concatenate(self.labels)
        rec, per_class = recognizability(np.concatenate(self.preds), labels, self.n_classes)
        div, div_pc = self.diversity.compute()
        per_class["diversity"] = div_pc
        is_mean, is_std = _is_compute(self.inception, len(labels), self.qcfg["is_splits"], self.seed)
        metrics: dict[str, Any] = {
            "n_images": int(len(labels)),
            "recognizability": rec["macro_f1"],
            **{f"recognizability_{k}": v for k, v in rec.items() if k != "macro_f1"},
            "diversity": div,
            "inception_score": is_mean,
            "inception_score_std": is_std,
            "features": self.qcfg["features"],
        }
        if self.reference is not None:
            n_ref = len(self.reference.labels)
            kid, kid_std, size = _kid_compute(self.kid, n_ref, len(labels), self.qcfg["kid_subset_size"], self.seed)
            metrics |= {"fid": float(self.fid.compute()), "kid": kid, "kid_std": kid_std,
                        "kid_subset_size": size, "n_reference": int(n_ref)}
        return metrics, per_class

    def reference_outputs(self) -> "Reference":
        return Reference(np.concatenate(self.kept), np.concatenate(self.kept_logits), np.concatenate(self.labels))


class Reference:
    """The real reference set's cached FID features (float32), FID logits and labels."""

    def __init__(self, fid_features: np.ndarray, fid_logits: np.ndarray, labels: np.ndarray):
        self.fid_features, self.fid_logits, self.labels = fid_features, fid_logits, labels

    def save(self, path: str | os.PathLike) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, fid_features=self.fid_features, fid_logits=self.fid_logits, labels=self.labels)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Reference":
        with np.load(path, allow_pickle=False) as z:
            return cls(z["fid_features"], z["fid_logits"], z["labels"])


# --------------------------------------------------------------------------------------------------
# streaming a set through the judge
# --------------------------------------------------------------------------------------------------


def iter_batches(
    shards: Sequence[str | os.PathLike], image_size: int, batch_size: int, limit: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(images, labels) batches of the first `limit` images of shards, at the study's image size
    (synthetic sets may come at the generator's resolution; the judge sees the dataset's)."""
    from synthscale.data.shards import iter_shards

    images, labels, seen = [], [], 0
    for image, rec in iter_shards(shards, mode="RGB", limit=limit):
        images.append(image)
        labels.append(int(rec["label"]))
        seen += 1
        if len(images) == batch_size:
            yield resize_images(np.stack(images), image_size), np.asarray(labels)
            images, labels = [], []
    if images:
        yield resize_images(np.stack(images), image_size), np.asarray(labels)
    if limit is not None and seen < limit:
        raise ValueError(f"asked for {limit} images but the shards hold only {seen}")


def open_models(qcfg: dict[str, Any], judge_path: JudgeFiles, device: str) -> tuple[Judge, nn.Module | None]:
    """The judge, and Inception when `quality.features` asks for it (local weights only)."""
    inception = load_inception(qcfg.get("inception_weights"), device) if qcfg["features"] == "inception" else None
    return load_judge(qcfg["judge"], judge_path, device), inception


def run_stream(
    judge: Judge, inception: nn.Module | None, batches, acc: SetMetrics, qcfg: dict[str, Any],
    device: str = "cpu", total: int | None = None, desc: str = "quality",
) -> SetMetrics:
    """Push every batch through the judge (and Inception) once, into the accumulator."""
    bar = tqdm(total=total, desc=desc, unit="img")
    for images, labels in batches:
        logits, feats = extract(judge, images, len(images), device, qcfg["channels_last"])
        if inception is None:
            fid_logits, fid_feats = logits, feats
        else:
            fid_logits, fid_feats = extract_inception(inception, images, len(images), device)
        acc.update(logits, feats, labels, fid_feats, fid_logits)
        bar.update(len(images))
    bar.close()
    return acc


def measure_reference(
    qcfg: dict[str, Any],
    judge_path: JudgeFiles,
    manifest: str | os.PathLike,
    image_size: int,
    n_images: int,
    outputs: dict[str, str | os.PathLike],
    seed: int,
    device: str = "cpu",
    classes_csv: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The real reference set (`quality.reference_set`, its first `n_images`) through the judge once:
    its FID features are cached (`npz`) for every set's FID/KID, and its own quality (`json`,
    `per_class`) is the yardstick (its recognizability is the judge's own macro-F1 on it)."""
    from synthscale.data.real import read_manifest, split_shards

    man = read_manifest(manifest)
    n_classes = int(man["classes"])
    count = int(man["splits"][qcfg["reference_set"]]["count"])
    n = min(n_images, count)
    judge, inception = open_models(qcfg, judge_path, device)
    batches = iter_batches(split_shards(manifest, qcfg["reference_set"]), image_size, qcfg["batch_size"], n)
    acc = run_stream(judge, inception, batches, SetMetrics(n_classes, qcfg, seed, keep_fid=True), qcfg,
                     device, n, "reference")
    metrics, per_class = acc.compute()
    metrics["reference_set"] = qcfg["reference_set"]
    acc.reference_outputs().save(outputs["npz"])
    write_quality(outputs["json"], outputs["per_class"], metrics, per_class, classes_csv)
    return metrics


def set_fields(generator: str, guidance: float | str, strategy: str, filter: str | None = None) -> dict[str, Any]:
    """The synthetic set a quality JSON measures, as its first fields: generator, guidance (a number),
    strategy, and its filter only for a filtered set (rule filter_quality)."""
    fields: dict[str, Any] = {"generator": generator, "guidance": float(guidance), "strategy": strategy}
    return fields | ({"filter": filter} if filter else {})


def measure_set(
    qcfg: dict[str, Any],
    judge_path: JudgeFiles,
    shards: Sequence[str | os.PathLike],
    n_images: int,
    manifest: str | os.PathLike,
    image_size: int,
    reference_npz: str | os.PathLike,
    outputs: dict[str, str | os.PathLike],
    seed: int,
    device: str,
    classes_csv: str | os.PathLike,
    generator: str,
    guidance: float | str,
    strategy: str,
    filter: str | None = None,
) -> dict[str, Any]:
    """The rules quality and filter_quality: `measure_synthetic` of one set, its class count from the
    prepared dataset's manifest, its record led by `set_fields` (a filtered set's `filter` too)."""
    return measure_synthetic(
        qcfg, judge_path, shards, n_images, manifest_classes(manifest), image_size, reference_npz, outputs,
        seed=seed, device=device, classes_csv=classes_csv, extra=set_fields(generator, guidance, strategy, filter),
    )


def measure_synthetic(
    qcfg: dict[str, Any],
    judge_path: JudgeFiles,
    shards: Sequence[str | os.PathLike],
    n_images: int,
    n_classes: int,
    image_size: int,
    reference_npz: str | os.PathLike,
    outputs: dict[str, str | os.PathLike],
    seed: int,
    device: str = "cpu",
    classes_csv: str | os.PathLike | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every per-set metric of the first `n_images` of a synthetic set; writes JSON and per-class CSV."""
    judge, inception = open_models(qcfg, judge_path, device)
    acc = SetMetrics(n_classes, qcfg, seed, reference=Reference.load(reference_npz))
    batches = iter_batches(shards, image_size, qcfg["batch_size"], n_images)
    run_stream(judge, inception, batches, acc, qcfg, device, n_images)
    metrics, per_class = acc.compute()
    metrics = {**(extra or {}), **metrics}
    write_quality(outputs["json"], outputs["per_class"], metrics, per_class, classes_csv)
    return metrics


def write_quality(
    json_path: str | os.PathLike,
    per_class_path: str | os.PathLike,
    metrics: dict[str, Any],
    per_class: pd.DataFrame,
    classes_csv: str | os.PathLike | None = None,
) -> None:
    """The per-set JSON and per-class CSV (with class names when the class table is given)."""
    if classes_csv is not None:
        names = read_classes(classes_csv)[["index", "name"]]
        per_class = per_class.merge(names.rename(columns={"index": "class_index"}), how="left")
    write_json(json_path, _clean(metrics))
    write_csv(per_class_path, per_class)


def _clean(obj: Any) -> Any:
    """JSON without NaN (not valid JSON): NaN becomes null."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj

