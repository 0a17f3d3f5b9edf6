"""The denoising loss both generator trainers use (the tiny generator's training and fine-tuning)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.training_utils import compute_snr


def snr_weights(noise_sched, t: torch.Tensor, gamma: float, prediction_type: str = "epsilon") -> torch.Tensor:
    """Min-SNR-gamma weights (Hang et al. 2023) per image: min(SNR(t), gamma) as a weight on the clean
    image's error, in the target's own terms: / SNR for epsilon, / (SNR + 1) for v, as diffusers'
    training scripts do with `--snr_gamma`. Timesteps with almost no noise, which teach little, stop
    dominating the gradient; at SNR below gamma an epsilon error keeps weight 1."""
    snr = compute_snr(noise_sched, t)
    if prediction_type == "epsilon":
        return torch.clamp(gamma / snr, max=1.0)  # min(SNR, gamma) / SNR, also where SNR underflows to 0
    if prediction_type == "v_prediction":
        return torch.clamp(snr, max=gamma) / (snr + 1.0)
    return torch.clamp(snr, max=gamma)  # "sample"


def denoising_loss(pred: torch.Tensor, target: torch.Tensor, t: torch.Tensor, noise_sched,
                   snr_gamma: float | None = None, prediction_type: str = "epsilon") -> torch.Tensor:
    """Mean squared error of the denoiser's prediction; with `snr_gamma` each image's error weighted by
    `snr_weights` (None or 0: the plain mean, exactly `F.mse_loss`)."""
    if not snr_gamma:
        return F.mse_loss(pred, target)
    per_image = F.mse_loss(pred, target, reduction="none").mean(dim=tuple(range(1, pred.dim())))
    return (per_image * snr_weights(noise_sched, t, snr_gamma, prediction_type).to(per_image.device)).mean()
