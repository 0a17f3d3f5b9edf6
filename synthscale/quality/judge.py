"""The judge: a real-data classifier that scores synthetic sets, and the optional standard
Inception network for FID/KID/IS comparable with the literature.

- `kind: trained`: the workflow's own classifier, trained on the real training split with the
  study's recipe (`Plan.judge_recipe`); `kind: timm`: a pretrained timm model by name, from a local
  weights file when one is given.
- Standard Inception features come only from a local weights file; nothing is downloaded.
- `extract` pushes one batch through the judge; the quality metrics stream batch by batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from synthscale.classifier.train import load_classifier, to_input, train_model, training_parts


def train_judge(
    manifest: str | os.PathLike, recipe: dict[str, Any], seed: int, model_path: str | os.PathLike,
    log_path: str | os.PathLike, device: str = "cpu",
) -> None:
    """`kind: trained`: the workflow's judge, a classifier trained with `recipe` (Plan.judge_recipe,
    the whole recipe: synthscale.classifier.recipes.judge_recipe) on the manifest's whole real train
    split; its weights to `model_path`, its per-epoch log to `log_path`."""
    parts, n_classes = training_parts([{"split": "train", "limit": None}], manifest)
    train_model(parts, n_classes, recipe, seed, model_path, log_path, device=device)


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
    transform: Any = None

    def preprocess(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 NHWC to the normalised float NCHW batch the judge was trained on.

        The workflow's judge was trained on `to_input` (mean = std = 0.5, native size), so the
        defaults reproduce it exactly; a timm judge gets timm's own eval transform for its
        pretrained_cfg (`resolve_data_config` + `create_transform`: resize the shorter side to
        input_size / crop_pct, centre crop, normalise), image by image.
        """
        if self.transform is not None:
            from PIL import Image

            arr = images.cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
            pil = [Image.fromarray(a.squeeze(-1) if a.shape[-1] == 1 else a).convert("RGB") for a in arr]
            return torch.stack([self.transform(im) for im in pil])
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


# a trained judge's weights file: a path, or a rule's judge inputs (Plan.judge_inputs: one file or none)
JudgeFiles = str | os.PathLike | Sequence[str | os.PathLike] | None


def judge_file(files: JudgeFiles) -> str | os.PathLike | None:
    """The weights file among `files`: a path as it is, else the first of a list (None when empty)."""
    if files is None or isinstance(files, (str, os.PathLike)):
        return files
    return files[0] if len(files) else None


def load_judge(spec: dict[str, Any], model_path: JudgeFiles, device: str = "cpu") -> Judge:
    """The judge a config names: `kind: trained` reads the workflow's safetensors file (`model_path`,
    or the one file of a rule's judge inputs: `judge_file`); `kind: timm` builds a pretrained timm
    model by name.

    A timm judge with `weights` loads that local file (timm's `pretrained_cfg_overlay=dict(file=...)`)
    and a missing file is an error here, before timm could fall back to the Hub. Without `weights`,
    timm fetches the named weights the usual way (clusters with internet only).
    """
    kind = spec.get("kind", "trained")
    if kind == "trained":
        model_path = judge_file(model_path)
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
    data_cfg = timm.data.resolve_data_config({}, model=model)
    return Judge(
        model=model,
        kind="timm",
        mean=tuple(float(v) for v in cfg.get("mean", (0.5, 0.5, 0.5))),
        std=tuple(float(v) for v in cfg.get("std", (0.5, 0.5, 0.5))),
        input_size=int(cfg["input_size"][-1]) if cfg.get("input_size") else None,
        class_indices=spec.get("class_indices"),
        meta={"arch": name, "weights": weights},
        transform=timm.data.create_transform(**data_cfg, is_training=False),
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

    Matches `synthscale.classifier.train.predict` for a workflow-trained judge (a test checks it); unlike it,
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
