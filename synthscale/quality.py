"""Quality of a synthetic set: recognizability, diversity, FID/KID/IS, and CAS, as in both papers.

Fan et al. (2023) explain how synthetic sets scale through two per-class properties measured by a
real-data classifier, the *judge*:
- recognizability: F1 of the judge's predictions against the classes the images were generated for,
  per class, then the macro average;
- diversity: the spread of the judge's penultimate features within a class, then the class average.
Azizi et al. (2023) add FID, Inception Score and CAS (real-test top-1 of a classifier trained only
on the synthetic set).

Design choices, and why:
- One batched, no-grad pass of the judge over a set yields logits and features (`extract`); every
  metric reuses those arrays, so a set is read and pushed through a network once. FID, KID and IS
  still come from torchmetrics: its metrics take `feature=` any module, and we hand them
  `Precomputed`, an identity module, so torchmetrics accumulates and scores the features we already
  have. `JudgeFeatures` wraps the judge as the image-in, features-out module torchmetrics expects,
  for callers that want torchmetrics to run the judge itself; a test checks both routes agree.
- Standard Inception features (for FID/KID/IS comparable with the literature) come only from a local
  weights file. A missing or unset path is an error that names the config key; nothing is downloaded.
- Diversity is the mean over feature dimensions of the per-dimension (population) standard deviation
  within a class, on L2-normalised features by default. Normalising keeps diversity from rising just
  because confident (high-guidance) images have larger feature norms; `l2=False` gives the raw version.
- No Snakemake import: rules pass paths and config values in; everything here is unit-tested.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from synthscale.io import atomic_path, write_csv, write_json
from synthscale.train import load_classifier, resize_images, to_input

# Per-class losses are fitted on log axes; a class the model gets perfectly right can have a loss
# that underflows to 0 in float64, which has no logarithm. Clip there: far below any loss that matters.
LOSS_FLOOR = 1e-12

# `quality` config defaults; the schema fills the same values, this copy serves tests and notebooks
QUALITY_DEFAULTS: dict[str, Any] = {
    "n_images": None,
    "batch_size": 256,
    "reference_set": "test",
    "judge": {"kind": "trained", "recipe": {}},
    "features": "judge",
    "inception_weights": None,
    "diversity_l2": True,
    "kid_subsets": 100,
    "kid_subset_size": 1000,
    "is_splits": 10,
    "channels_last": True,
}

# recipe keys of `train` that a judge recipe may override
RECIPE_KEYS = (
    "arch",
    "model_kwargs",
    "epochs",
    "min_steps",
    "batch_size",
    "lr",
    "weight_decay",
    "label_smoothing",
    "pad_crop",
)


# --------------------------------------------------------------------------------------------------
# paths and config helpers (the rules derive every target from these)
# --------------------------------------------------------------------------------------------------


def judge_model_path(results: str, dataset: str) -> str:
    """Where the workflow-trained judge lives: one per dataset, shared by every synthetic set."""
    return f"{results}/judge/{dataset}/model.safetensors"


def quality_json(results: str, generator: str, guidance: str, strategy: str) -> str:
    return f"{results}/quality/{generator}/g{guidance}/{strategy}.json"


def quality_per_class_csv(results: str, generator: str, guidance: str, strategy: str) -> str:
    return f"{results}/quality/{generator}/g{guidance}/{strategy}_per_class.csv"


def reference_paths(results: str, dataset: str) -> dict[str, str]:
    """The real reference set's cached judge outputs and FID features, and its own quality."""
    base = f"{results}/quality/real_{dataset}"
    return {"npz": f"{base}.npz", "json": f"{base}.json", "per_class": f"{base}_per_class.csv"}


def quality_n(cfg: dict[str, Any]) -> int:
    """Images per set to measure: `quality.n_images`, at most the study's largest N.

    Capped so that the quality rule reads only shards the study generates anyway (null = largest N).
    """
    largest = max(cfg["n_images"])
    n = cfg["quality"].get("n_images")
    return largest if n is None else min(int(n), largest)


def judge_recipe(cfg: dict[str, Any]) -> dict[str, Any]:
    """The trained judge's recipe: the `train` recipe with `quality.judge.recipe` laid over it."""
    base = {k: v for k, v in cfg["train"].items() if k in RECIPE_KEYS}
    return {**base, **cfg["quality"]["judge"].get("recipe", {})}


# --------------------------------------------------------------------------------------------------
# the judge
# --------------------------------------------------------------------------------------------------


@dataclass
class Judge:
    """A real-data classifier and the preprocessing its weights expect.

    `class_indices` maps dataset class c to the judge's output column class_indices[c] (a pretrained
    ImageNet judge scoring a 100-class subset); None means the columns are the dataset's classes.
    """

    model: nn.Module
    kind: str
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    input_size: int | None = None
    class_indices: list[int] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def preprocess(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 NHWC to the normalised float NCHW batch the judge was trained on.

        The workflow's judge was trained on `to_input` (mean = std = 0.5, native size), so the
        defaults reproduce it exactly; a timm judge gets its pretrained_cfg mean, std and size.
        """
        x = to_input(images)  # [-1, 1], i.e. (v - 0.5) / 0.5 on [0, 1]
        if self.input_size and x.shape[-1] != self.input_size:
            x = F.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear", antialias=True
            )
        if self.mean != (0.5, 0.5, 0.5) or self.std != (0.5, 0.5, 0.5):
            m = torch.tensor(self.mean).view(1, 3, 1, 1)
            s = torch.tensor(self.std).view(1, 3, 1, 1)
            x = ((x + 1.0) / 2.0 - m) / s
        return x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (restricted to the dataset's classes) and penultimate features of a batch."""
        f = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        logits = self.model.get_classifier()(f)
        if self.class_indices is not None:
            logits = logits[:, self.class_indices]
        return logits, f


def load_judge(spec: dict[str, Any], model_path: str | os.PathLike | None, device: str = "cpu") -> Judge:
    """The judge a config names: `kind: trained` reads the workflow's safetensors file;
    `kind: timm` builds a pretrained timm model by name.

    A timm judge with `weights` loads that local file (timm's `pretrained_cfg_overlay=dict(file=...)`)
    and a missing file is an error here, before timm could fall back to the Hub. Without `weights`,
    timm fetches the named weights the usual way (clusters with internet only).
    """
    kind = spec.get("kind", "trained")
    if kind == "trained":
        if model_path is None or not Path(model_path).exists():
            raise FileNotFoundError(f"trained judge weights {model_path!r} do not exist")
        model, meta = load_classifier(model_path, device)
        return Judge(model=model, kind="trained", meta=meta)
    if kind != "timm":
        raise ValueError(f"quality.judge.kind must be 'trained' or 'timm', got {kind!r}")
    import timm

    name = spec.get("name")
    if not name:
        raise ValueError("quality.judge.name: a timm model name is required when kind is 'timm'")
    model_kwargs = dict(spec.get("model_kwargs") or {})
    if "channels" in model_kwargs:
        model_kwargs["channels"] = tuple(model_kwargs["channels"])
    overlay: dict[str, Any] = {}
    weights = spec.get("weights")
    if weights:
        if not Path(weights).exists():
            raise FileNotFoundError(
                f"quality.judge.weights: {weights!r} does not exist (nothing is downloaded "
                "when a weights path is given)"
            )
        overlay["file"] = str(weights)
    if "num_classes" in model_kwargs:
        # timm drops a checkpoint's classifier when num_classes differs from the pretrained_cfg's
        overlay["num_classes"] = model_kwargs["num_classes"]
    model = timm.create_model(
        name, pretrained=True, pretrained_cfg_overlay=overlay or None, **model_kwargs
    ).to(device).eval()
    cfg = model.pretrained_cfg
    return Judge(
        model=model,
        kind="timm",
        mean=tuple(float(v) for v in cfg.get("mean", (0.5, 0.5, 0.5))),
        std=tuple(float(v) for v in cfg.get("std", (0.5, 0.5, 0.5))),
        input_size=int(cfg["input_size"][-1]) if cfg.get("input_size") else None,
        class_indices=spec.get("class_indices"),
        meta={"arch": name, "weights": weights},
    )


def trained_judge(model: nn.Module) -> Judge:
    """Wrap an in-memory classifier (tests, benchmarks) as a workflow-trained judge."""
    return Judge(model=model.eval(), kind="trained")


@torch.no_grad()
def extract(
    judge: Judge,
    images: np.ndarray,
    batch_size: int = 256,
    device: str = "cpu",
    channels_last: bool = False,
    progress: bool = False,
    desc: str = "judge",
) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, C) and features (N, D) of uint8 NHWC images in one batched no-grad pass.

    Matches `synthscale.train.predict` for a workflow-trained judge (a test checks it); unlike it,
    this also preprocesses for pretrained judges and can use channels_last (see the benchmark).
    """
    judge.model.eval()
    if channels_last:
        judge.model.to(memory_format=torch.channels_last)
    logits, feats = [], []
    for s in tqdm(range(0, len(images), batch_size), desc=desc, disable=not progress):
        x = judge.preprocess(images[s : s + batch_size]).to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        lg, f = judge.forward(x)
        logits.append(lg.float().cpu())
        feats.append(f.float().cpu())
    if not logits:
        raise ValueError("no images to extract features from")
    return torch.cat(logits).numpy(), torch.cat(feats).numpy()


class JudgeFeatures(nn.Module):
    """The judge as torchmetrics' `feature=` module: uint8 NCHW images in, features (or logits) out.

    torchmetrics hands custom modules the images exactly as given to `update`: uint8 in [0, 255],
    or floats in [0, 1] when the metric has `normalize=True`. Both are converted to the judge's input.
    """

    def __init__(self, judge: Judge, output: str = "features"):
        super().__init__()
        if output not in ("features", "logits"):
            raise ValueError(f"output must be 'features' or 'logits', got {output!r}")
        self.judge, self.output = judge, output
        self.add_module("model", judge.model)
        self.num_features = (
            judge.model.num_features if output == "features" else _n_logits(judge)
        )

    @torch.no_grad()
    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        if imgs.is_floating_point():
            imgs = (imgs.clamp(0, 1) * 255).round().to(torch.uint8)
        logits, feats = self.judge.forward(self.judge.preprocess(imgs.permute(0, 2, 3, 1)))
        return (feats if self.output == "features" else logits).float()


def _n_logits(judge: Judge) -> int:
    if judge.class_indices is not None:
        return len(judge.class_indices)
    return int(judge.model.num_classes)


# --------------------------------------------------------------------------------------------------
# standard Inception features, from a local file only
# --------------------------------------------------------------------------------------------------


def load_inception(weights_path: str | os.PathLike | None, device: str = "cpu") -> nn.Module:
    """FID's Inception-v3 (torch-fidelity's port, the one torchmetrics' NoTrainInceptionV3 wraps),
    from a local weights file. Unset or missing paths fail with the config key in the message, so
    torch-fidelity never reaches its download URL.

    The file is first opened with `torch.load(weights_only=True)`, which refuses anything but plain
    tensors (invariant 6), before torch-fidelity loads it.
    """
    if not weights_path:
        raise ValueError(
            "quality.inception_weights is not set: Inception features need a local weights file "
            "(torch-fidelity's pt_inception-2015-12-05 .pth); nothing is downloaded"
        )
    if not Path(weights_path).is_file():
        raise FileNotFoundError(
            f"quality.inception_weights: {str(weights_path)!r} does not exist; "
            "nothing is downloaded, give the path of a local Inception weights file"
        )
    try:
        torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling error means an unsafe or broken file
        raise ValueError(
            f"quality.inception_weights: {str(weights_path)!r} is not a plain tensor state dict "
            f"({err.__class__.__name__}: {err})"
        ) from err
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    model = FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(weights_path)
    )
    return model.to(device).eval()


@torch.no_grad()
def extract_inception(
    model: nn.Module, images: np.ndarray, batch_size: int = 64, device: str = "cpu", progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Inception's unbiased logits (N, 1008) and pool features (N, 2048) of uint8 NHWC images."""
    logits, feats = [], []
    for s in tqdm(range(0, len(images), batch_size), desc="inception", disable=not progress):
        x = torch.as_tensor(images[s : s + batch_size])
        if x.shape[-1] == 1:
            x = x.expand(-1, -1, -1, 3)
        f, lg = model(x.permute(0, 3, 1, 2).contiguous().to(device))
        feats.append(f.float().cpu())
        logits.append(lg.float().cpu())
    return torch.cat(logits).numpy(), torch.cat(feats).numpy()


# --------------------------------------------------------------------------------------------------
# metrics from (logits, features, labels)
# --------------------------------------------------------------------------------------------------


def recognizability(
    logits: np.ndarray, labels: np.ndarray, n_classes: int
) -> tuple[dict[str, float], pd.DataFrame]:
    """Per-class precision, recall and F1 of the judge's top-1 against the intended classes.

    Classes absent from both predictions and labels score 0 (sklearn's zero_division=0): a generator
    that never produces a recognizable image of a class should be penalised, not skipped.
    """
    from sklearn.metrics import precision_recall_fscore_support

    pred = np.asarray(logits).argmax(1)
    p, r, f, support = precision_recall_fscore_support(
        labels, pred, labels=np.arange(n_classes), zero_division=0
    )
    per_class = pd.DataFrame(
        {
            "class_index": np.arange(n_classes),
            "precision": p,
            "recall": r,
            "f1": f,
            "support": support.astype(int),
        }
    )
    summary = {
        "macro_f1": float(f.mean()),
        "macro_precision": float(p.mean()),
        "macro_recall": float(r.mean()),
        "accuracy": float((pred == labels).mean()),
    }
    return summary, per_class


def diversity(
    features: np.ndarray, labels: np.ndarray, n_classes: int, l2: bool = True
) -> tuple[float, np.ndarray]:
    """Per-class diversity (mean over dimensions of the per-dimension std of features) and its mean.

    Population std (ddof=0), so one image or identical images give exactly 0. Classes with no images
    are NaN and left out of the mean.
    """
    x = np.asarray(features, dtype=np.float64)
    if l2:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.finfo(np.float64).tiny)
    per_class = np.full(n_classes, np.nan)
    for c in range(n_classes):
        m = labels == c
        if m.any():
            per_class[c] = float(x[m].std(axis=0).mean())
    present = ~np.isnan(per_class)
    return (float(per_class[present].mean()) if present.any() else float("nan")), per_class


class Precomputed(nn.Module):
    """An identity `feature=` module: torchmetrics' `update` receives features, not images.

    This lets FID, KID and IS reuse the one pass `extract` already made.
    """

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (torchmetrics, float64)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=Precomputed(real.shape[1]))
    metric.update(torch.as_tensor(real, dtype=torch.float64), real=True)
    metric.update(torch.as_tensor(fake, dtype=torch.float64), real=False)
    return float(metric.compute())


def kid_from_features(
    real: np.ndarray, fake: np.ndarray, subsets: int, subset_size: int, seed: int
) -> tuple[float, float, int]:
    """KID mean and std over random subsets; subset_size is clamped to the smaller set's size.

    Returns the subset size used. Seeded, because torchmetrics draws subsets from torch's global RNG.
    """
    from torchmetrics.image.kid import KernelInceptionDistance

    size = int(min(subset_size, len(real), len(fake)))
    if size < 2:
        return float("nan"), float("nan"), size
    torch.manual_seed(seed)
    metric = KernelInceptionDistance(feature=Precomputed(real.shape[1]), subsets=subsets, subset_size=size)
    metric.update(torch.as_tensor(real, dtype=torch.float64), real=True)
    metric.update(torch.as_tensor(fake, dtype=torch.float64), real=False)
    mean, std = metric.compute()
    return float(mean), float(std), size


def inception_score_from_logits(logits: np.ndarray, splits: int, seed: int) -> tuple[float, float]:
    """IS = exp(E KL(p(y|x) || p(y))), mean and std over splits (clamped to the number of images)."""
    from torchmetrics.image.inception import InceptionScore

    torch.manual_seed(seed)
    metric = InceptionScore(feature=Precomputed(logits.shape[1]), splits=max(1, min(splits, len(logits))))
    metric.update(torch.as_tensor(logits, dtype=torch.float64))
    mean, std = metric.compute()
    return float(mean), float(0.0 if torch.isnan(std) else std)


@dataclass
class SetOutputs:
    """The one-pass outputs of a set: judge logits and features, and the FID feature space."""

    logits: np.ndarray
    features: np.ndarray
    labels: np.ndarray
    fid_features: np.ndarray
    fid_logits: np.ndarray

    def save(self, path: str | os.PathLike) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **self.__dict__)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SetOutputs":
        with np.load(path, allow_pickle=False) as z:
            return cls(**{k: z[k] for k in z.files})


def run_set(
    judge: Judge,
    images: np.ndarray,
    labels: np.ndarray,
    inception: nn.Module | None = None,
    batch_size: int = 256,
    device: str = "cpu",
    progress: bool = False,
    channels_last: bool = False,
) -> SetOutputs:
    """Push a set through the judge (and Inception when FID uses it) once."""
    logits, feats = extract(judge, images, batch_size, device, channels_last, progress)
    if inception is None:
        fid_logits, fid_feats = logits, feats
    else:
        fid_logits, fid_feats = extract_inception(inception, images, batch_size, device, progress)
    return SetOutputs(logits, feats, np.asarray(labels), fid_feats, fid_logits)


def measure(
    out: SetOutputs,
    n_classes: int,
    reference: SetOutputs | None,
    qcfg: dict[str, Any],
    seed: int,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Every metric of one set from its one-pass outputs; FID/KID against `reference` when given."""
    rec, per_class = recognizability(out.logits, out.labels, n_classes)
    div, div_pc = diversity(out.features, out.labels, n_classes, l2=qcfg["diversity_l2"])
    per_class["diversity"] = div_pc
    is_mean, is_std = inception_score_from_logits(out.fid_logits, qcfg["is_splits"], seed)
    metrics: dict[str, Any] = {
        "n_images": int(len(out.labels)),
        "recognizability": rec["macro_f1"],
        **{f"recognizability_{k}": v for k, v in rec.items() if k != "macro_f1"},
        "diversity": div,
        "inception_score": is_mean,
        "inception_score_std": is_std,
        "features": qcfg["features"],
    }
    if reference is not None:
        kid, kid_std, size = kid_from_features(
            reference.fid_features, out.fid_features, qcfg["kid_subsets"], qcfg["kid_subset_size"], seed
        )
        metrics |= {
            "fid": fid_from_features(reference.fid_features, out.fid_features),
            "kid": kid,
            "kid_std": kid_std,
            "kid_subset_size": size,
            "n_reference": int(len(reference.labels)),
        }
    return metrics, per_class


def load_set(
    shards: Sequence[str | os.PathLike], image_size: int, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The first `limit` images and labels of shards, at the study's image size.

    Synthetic sets may come at the generator's resolution (512 px); the judge and the real reference
    are at the dataset's, so every set is resized to it before any metric.
    """
    from synthscale.shards import load_arrays

    images, labels, _ = load_arrays(shards, mode="RGB", limit=limit)
    return resize_images(images, image_size), labels


def open_models(
    qcfg: dict[str, Any], judge_path: str | os.PathLike | None, device: str
) -> tuple[Judge, nn.Module | None]:
    """The judge, and Inception when `quality.features` asks for it (local weights only)."""
    inception = None
    if qcfg["features"] == "inception":
        inception = load_inception(qcfg.get("inception_weights"), device)
    return load_judge(qcfg["judge"], judge_path, device), inception


def measure_reference(
    qcfg: dict[str, Any],
    judge_path: str | os.PathLike | None,
    manifest: str | os.PathLike,
    image_size: int,
    outputs: dict[str, str | os.PathLike],
    seed: int,
    device: str = "cpu",
    classes_csv: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The real reference set (`quality.reference_set`) through the judge once: its outputs are
    cached (`npz`) for every set's FID/KID, and its own quality (`json`, `per_class`) is the yardstick:
    its recognizability is the judge's own test macro-F1.
    """
    from synthscale.data import read_manifest, split_shards

    n_classes = int(read_manifest(manifest)["classes"])
    judge, inception = open_models(qcfg, judge_path, device)
    images, labels = load_set(split_shards(manifest, qcfg["reference_set"]), image_size)
    out = run_set(
        judge, images, labels, inception, qcfg["batch_size"], device, True, qcfg["channels_last"]
    )
    metrics, per_class = measure(out, n_classes, None, qcfg, seed)
    metrics["reference_set"] = qcfg["reference_set"]
    out.save(outputs["npz"])
    write_quality(outputs["json"], outputs["per_class"], metrics, per_class, classes_csv)
    return metrics


def measure_synthetic(
    qcfg: dict[str, Any],
    judge_path: str | os.PathLike | None,
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
    images, labels = load_set(shards, image_size, n_images)
    out = run_set(
        judge, images, labels, inception, qcfg["batch_size"], device, True, qcfg["channels_last"]
    )
    reference = SetOutputs.load(reference_npz)
    if reference.fid_features.shape[1] != out.fid_features.shape[1]:
        raise ValueError(
            f"reference {reference_npz} has {reference.fid_features.shape[1]}-d FID features but this "
            f"set has {out.fid_features.shape[1]}: rebuild the reference with the same quality.features"
        )
    metrics, per_class = measure(out, n_classes, reference, qcfg, seed)
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
        names = pd.read_csv(classes_csv, dtype={"name": str})[["index", "name"]]
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


# --------------------------------------------------------------------------------------------------
# the study summary: quality table, CAS, per-class scaling slopes, findings
# --------------------------------------------------------------------------------------------------


def _at_n(df: pd.DataFrame, n_label: str | int | None) -> pd.DataFrame:
    """Rows of one model (training size n_label) from a per-source evaluation table."""
    if n_label is None or "n_label" not in df.columns:
        return df
    return df[df["n_label"].astype(str) == str(n_label)]


def read_top1(
    eval_csv: str | os.PathLike, eval_set: str = "test", n_label: str | int | None = None
) -> float:
    """Top-1 on one eval set from the evaluate stage's CSV (CAS when the model is synthetic-only)."""
    df = _at_n(pd.read_csv(eval_csv), n_label)
    row = df[df["eval_set"] == eval_set]
    if row.empty:
        raise KeyError(f"{eval_csv} has no row for eval set {eval_set!r} and N {n_label}")
    return float(row["top1"].iloc[0])


def per_class_slopes(per_class_csvs: dict[int, str | os.PathLike], eval_set: str = "test") -> pd.DataFrame:
    """Per-class scaling ability k in loss ~ B * N^-k: minus the slope of log loss on log N.

    Larger k means the class's test loss falls faster as images are added. NaN with fewer than 2 N.
    """
    from scipy.stats import linregress

    frames = []
    for n, path in per_class_csvs.items():
        df = _at_n(pd.read_csv(path), n)
        frames.append(df[df["eval_set"] == eval_set].assign(n=int(n)))
    if not frames:
        return pd.DataFrame(columns=["class_index", "slope", "slope_r2", "n_points"])
    allpc = pd.concat(frames, ignore_index=True)
    rows = []
    for c, g in allpc.groupby("class_index"):
        g = g.dropna(subset=["loss"]).sort_values("n")
        if g["n"].nunique() < 2:
            rows.append({"class_index": int(c), "slope": np.nan, "slope_r2": np.nan, "n_points": len(g)})
            continue
        fit = linregress(np.log(g["n"]), np.log(np.maximum(g["loss"], LOSS_FLOOR)))
        rows.append(
            {"class_index": int(c), "slope": -fit.slope, "slope_r2": fit.rvalue**2, "n_points": len(g)}
        )
    return pd.DataFrame(rows)


def quality_table(
    sets: Sequence[dict[str, Any]],
    cas: dict[tuple[str, float, str], float] | None = None,
) -> pd.DataFrame:
    """One tidy row per (generator, guidance, strategy): the per-set metrics plus CAS."""
    rows = []
    for s in sets:
        key = (s["generator"], float(s["guidance"]), s["strategy"])
        rows.append({**s, "guidance": key[1], "cas": (cas or {}).get(key, np.nan)})
    first = ["generator", "guidance", "strategy", "n_images", "recognizability", "diversity",
             "fid", "kid", "kid_std", "inception_score", "inception_score_std", "cas"]
    df = pd.DataFrame(rows)
    cols = [c for c in first if c in df.columns] + [c for c in df.columns if c not in first]
    return df[cols].sort_values(["generator", "strategy", "guidance"]).reset_index(drop=True)


def _spearman(x: Sequence[float], y: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return float("nan")
    return float(spearmanr(x[ok], y[ok]).statistic)


def _monotone(values: Sequence[float]) -> int:
    """+1 if every step up the guidance grid raises the value, -1 if every step lowers it, else 0."""
    d = np.diff(np.asarray(values, float))
    if len(d) == 0 or not np.isfinite(d).all():
        return 0
    return 1 if (d > 0).all() else -1 if (d < 0).all() else 0


def trends(df: pd.DataFrame) -> pd.DataFrame:
    """Per (generator, strategy): Spearman rho of each metric with guidance, whether it moves
    monotonically across the guidance grid (+1 up, -1 down, 0 neither), and where it peaks."""
    rows = []
    for (gen, strat), g in df.groupby(["generator", "strategy"]):
        g = g.sort_values("guidance")
        row = {"generator": gen, "strategy": strat, "n_guidance": g["guidance"].nunique()}
        for m in ("recognizability", "diversity", "fid", "cas"):
            if m in g:
                row[f"rho_{m}"] = _spearman(g["guidance"], g[m])
                row[f"trend_{m}"] = _monotone(g[m])
        if "recognizability" in g and g["recognizability"].notna().any():
            row["recognizability_peak"] = float(g.loc[g["recognizability"].idxmax(), "guidance"])
        rows.append(row)
    return pd.DataFrame(rows)


def findings(
    df: pd.DataFrame, per_class: pd.DataFrame | None = None, reference: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What the numbers say about the paper's trade-off, computed, never assumed.

    The trend "holds" for a (generator, strategy) line when, at every step up the guidance grid,
    diversity falls and recognizability rises. A line that rises and then falls does not count: with
    three guidance values a rank correlation would call that a rise.
    """
    t = trends(df)
    n_lines = len(t)
    div_falls = int((t["trend_diversity"] < 0).sum()) if n_lines else 0
    rec_rises = int((t["trend_recognizability"] > 0).sum()) if n_lines else 0
    both = int(((t["trend_diversity"] < 0) & (t["trend_recognizability"] > 0)).sum()) if n_lines else 0
    by_g = df.groupby("guidance")[["recognizability", "diversity", "fid", "cas"]].mean(numeric_only=True)
    out: dict[str, Any] = {
        "n_lines": n_lines,
        "diversity_falls": div_falls,
        "recognizability_rises": rec_rises,
        "both": both,
        "trend_holds": bool(n_lines and both == n_lines),
        "trend_majority": bool(n_lines and both * 2 > n_lines),
        "by_guidance": by_g.reset_index().to_dict("records"),
        "trends": t.to_dict("records"),
        "best_cas": None,
        "best_fid": None,
        "per_class_rho": None,
        "reference": reference,
    }
    if "cas" in df and df["cas"].notna().any():
        out["best_cas"] = df.loc[df["cas"].idxmax(), ["generator", "guidance", "strategy", "cas"]].to_dict()
    if "fid" in df and df["fid"].notna().any():
        out["best_fid"] = df.loc[df["fid"].idxmin(), ["generator", "guidance", "strategy", "fid"]].to_dict()
    if per_class is not None and {"f1", "slope"} <= set(per_class.columns):
        out["per_class_rho"] = _spearman(per_class["f1"], per_class["slope"])
        out["per_class_points"] = int(per_class[["f1", "slope"]].dropna().shape[0])
    return out


def findings_html(f: dict[str, Any]) -> str:
    """A short, plain statement of the findings for the report."""
    e = html.escape

    def num(v: Any, p: int = 3) -> str:
        return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{p}f}"

    if f["n_lines"] == 0:
        verdict = "No synthetic sets were measured."
    elif f["trend_holds"]:
        verdict = (
            f"The paper's trend shows on this study: in all {f['n_lines']} (generator, strategy) "
            "lines, diversity falls and recognizability rises as guidance grows."
        )
    else:
        how = "does not show" if f["both"] == 0 else "shows only in part"
        verdict = (
            f"The paper's trend {how} on this study: diversity falls with guidance in "
            f"{f['diversity_falls']} of {f['n_lines']} (generator, strategy) lines, recognizability "
            f"rises in {f['recognizability_rises']}, and both in {f['both']}."
        )
    peaks = [r.get("recognizability_peak") for r in f["trends"] if r.get("recognizability_peak") is not None]
    if peaks and f["n_lines"] and not f["trend_holds"]:
        top = max(r["guidance"] for r in f["by_guidance"])
        interior = sum(1 for p in peaks if p < top)
        if interior:
            verdict += (
                f" Recognizability peaks below the largest guidance in {interior} of {len(peaks)} lines"
                f" (at guidance {', '.join(f'{p:g}' for p in peaks)}): past that, guidance"
                " over-saturates the samples and they become less recognizable."
            )
    ref_div = (f.get("reference") or {}).get("diversity")
    by_div = [r.get("diversity") for r in f["by_guidance"] if r.get("diversity") is not None]
    if ref_div is not None and by_div and min(by_div) > ref_div:
        verdict += (
            " Every synthetic set is more 'diverse' than the real test images under this judge: off-"
            "manifold samples spread the judge's features, so here diversity also measures noise."
        )
    rows = "".join(
        f"<tr><td>{num(r['guidance'], 2)}</td><td>{num(r.get('recognizability'))}</td>"
        f"<td>{num(r.get('diversity'), 4)}</td><td>{num(r.get('fid'), 2)}</td>"
        f"<td>{num(r.get('cas'))}</td></tr>"
        for r in f["by_guidance"]
    )
    parts = [
        "<html><head><meta charset='utf-8'><title>Quality findings</title></head><body>",
        "<h2>Quality of the synthetic sets: findings</h2>",
        f"<p>{e(verdict)}</p>",
        "<p>Means over generators and strategies, per guidance scale "
        "(recognizability = judge macro-F1; diversity = mean per-class feature std; "
        "CAS = real-test top-1 of a classifier trained only on the set's largest N):</p>",
        "<table border='1'><tr><th>guidance</th><th>recognizability</th><th>diversity</th>"
        f"<th>FID</th><th>CAS</th></tr>{rows}</table>",
    ]
    ref = f.get("reference") or {}
    if ref:
        parts.append(
            f"<p>For reference, real test images score recognizability "
            f"{num(ref.get('recognizability'))} and diversity {num(ref.get('diversity'), 4)} under "
            f"the same judge.</p>"
        )
    if f.get("best_cas"):
        b = f["best_cas"]
        parts.append(
            f"<p>Best CAS {num(b['cas'])}: {e(str(b['generator']))}, guidance "
            f"{num(float(b['guidance']), 2)}, {e(str(b['strategy']))}.</p>"
        )
    if f.get("best_fid"):
        b = f["best_fid"]
        parts.append(
            f"<p>Lowest FID {num(b['fid'], 2)}: {e(str(b['generator']))}, guidance "
            f"{num(float(b['guidance']), 2)}, {e(str(b['strategy']))}.</p>"
        )
    if f.get("per_class_rho") is not None:
        rho = f["per_class_rho"]
        if not np.isfinite(rho):
            text = "Per-class recognizability and scaling slope could not be correlated (too few points)."
        else:
            sign = "positive" if rho > 0 else "negative" if rho < 0 else "zero"
            text = (
                f"Across {f.get('per_class_points', 0)} (set, class) points, the Spearman correlation "
                f"between per-class recognizability and per-class scaling slope is {rho:.2f} ({sign}); "
                "the paper reports that more recognizable classes scale better (a positive correlation)."
            )
        parts.append(f"<p>{e(text)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------------


def _save(fig, path: str | os.PathLike) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_tradeoff(df: pd.DataFrame, path: str | os.PathLike, reference: dict[str, Any] | None = None) -> None:
    """Recognizability against diversity: one point per guidance, one line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    gens = sorted(df["generator"].unique())
    fig, axes = plt.subplots(1, len(gens), figsize=(5.5 * len(gens), 4.5), squeeze=False)
    for ax, gen in zip(axes[0], gens):
        d = df[df["generator"] == gen].sort_values(["strategy", "guidance"])
        sns.lineplot(data=d, x="diversity", y="recognizability", hue="strategy", sort=False,
                     marker="o", ax=ax, estimator=None)
        for _, r in d.iterrows():
            ax.annotate(f"g{r['guidance']:g}", (r["diversity"], r["recognizability"]),
                        textcoords="offset points", xytext=(4, 4), fontsize=8)
        if reference and reference.get("diversity") is not None:
            ax.scatter([reference["diversity"]], [reference["recognizability"]], marker="*",
                       s=160, color="black", label="real test", zorder=5)
            ax.legend()
        ax.set_title(f"{gen}: recognizability vs diversity")
        ax.set_xlabel("diversity (mean per-class feature std)")
        ax.set_ylabel("recognizability (judge macro-F1)")
    _save(fig, path)


def plot_fid_cas(df: pd.DataFrame, path: str | os.PathLike, real_top1: float | None = None) -> None:
    """FID and CAS against guidance, one line per (generator, strategy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.5))
    style = "generator" if df["generator"].nunique() > 1 else None
    sns.lineplot(data=df, x="guidance", y="fid", hue="strategy", style=style, marker="o", ax=a)
    a.set_title("FID to the real test set (lower is closer)")
    a.set_ylabel("FID")
    a.set_xlabel("guidance scale")
    if df["cas"].notna().any():
        sns.lineplot(data=df, x="guidance", y="cas", hue="strategy", style=style, marker="o", ax=b)
    if real_top1 is not None and np.isfinite(real_top1):
        b.axhline(real_top1, color="black", ls="--", label="real, same N")
        b.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
    b.set_title("CAS: real-test top-1, trained on synthetic only")
    b.set_xlabel("guidance scale")
    b.set_ylabel("CAS (top-1)")
    _save(fig, path)


def plot_per_class_slope(per_class: pd.DataFrame, path: str | os.PathLike, rho: float | None) -> None:
    """Per-class recognizability (F1) against the per-class scaling slope k, one point per (set, class)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(6, 4.5))
    d = per_class.dropna(subset=["f1", "slope"])
    if len(d):
        sns.scatterplot(data=d, x="f1", y="slope", hue="guidance", style="strategy", ax=ax,
                        palette="viridis")
        if len(d) > 2 and np.ptp(d["f1"]) > 0:
            sns.regplot(data=d, x="f1", y="slope", scatter=False, ax=ax, color="grey")
    title = "per-class recognizability vs scaling slope"
    if rho is not None and np.isfinite(rho):
        title += f" (Spearman {rho:.2f})"
    ax.set_title(title)
    ax.set_xlabel("per-class recognizability (judge F1)")
    ax.set_ylabel("per-class scaling slope k (loss ~ N^-k)")
    _save(fig, path)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def summarize(
    set_jsons: Sequence[str | os.PathLike],
    set_per_class: Sequence[str | os.PathLike],
    sources: Sequence[tuple[str, float, str]],
    cas_csvs: dict[tuple[str, float, str], str | os.PathLike],
    eval_per_class: dict[tuple[str, float, str], dict[int, str | os.PathLike]],
    reference_json: str | os.PathLike | None,
    outputs: dict[str, str | os.PathLike],
    real_eval_csv: str | os.PathLike | None = None,
    eval_set: str = "test",
    n_label: str | None = None,
) -> pd.DataFrame:
    """Collect every set's quality, add CAS and per-class slopes, write the table, plots, findings.

    `sources[i]` is (generator, guidance, strategy) of `set_jsons[i]`. `outputs` holds the paths
    `table`, `per_class`, `tradeoff`, `fid_cas`, `per_class_plot`, `findings`.
    """
    sets = []
    for src, path in zip(sources, set_jsons):
        m = json.loads(Path(path).read_text())
        sets.append({**m, "generator": src[0], "guidance": float(src[1]), "strategy": src[2]})
    cas = {k: read_top1(p, eval_set, n_label) for k, p in cas_csvs.items()}
    df = quality_table(sets, cas)
    pcs = []
    for src, path in zip(sources, set_per_class):
        pc = pd.read_csv(path)
        key = (src[0], float(src[1]), src[2])
        slopes = per_class_slopes(eval_per_class.get(key, {}), eval_set)
        pc = pc.merge(slopes, on="class_index", how="left") if len(slopes) else pc.assign(slope=np.nan)
        pcs.append(pc.assign(generator=key[0], guidance=key[1], strategy=key[2]))
    per_class = pd.concat(pcs, ignore_index=True) if pcs else pd.DataFrame()
    reference = json.loads(Path(reference_json).read_text()) if reference_json else None
    real_top1 = read_top1(real_eval_csv, eval_set, n_label) if real_eval_csv else None
    f = findings(df, per_class if len(per_class) else None, reference)
    write_csv(outputs["table"], df)
    write_csv(outputs["per_class"], per_class)
    plot_tradeoff(df, outputs["tradeoff"], reference)
    plot_fid_cas(df, outputs["fid_cas"], real_top1)
    plot_per_class_slope(per_class if len(per_class) else pd.DataFrame(columns=["f1", "slope"]),
                         outputs["per_class_plot"], f.get("per_class_rho"))
    write_text(outputs["findings"], findings_html(f))
    return df

