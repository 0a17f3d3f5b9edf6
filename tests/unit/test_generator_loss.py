"""synthscale.generation.loss: Min-SNR-gamma weighting as Hang et al. (2023) define it and diffusers'
training scripts compute it, and the plain MSE untouched when it is off."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from synthscale.generation.loss import denoising_loss, snr_weights


@pytest.fixture
def sched():
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")


def snr_of(sched, t):
    a = sched.alphas_cumprod[t].double()
    return a / (1 - a)


def test_off_is_exactly_the_plain_mse(sched):
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(8, 1, 6, 6, generator=g), torch.randn(8, 1, 6, 6, generator=g)
    t = torch.randint(0, 1000, (8,), generator=g)
    for off in (None, 0, 0.0):
        assert torch.equal(denoising_loss(pred, target, t, sched, off), F.mse_loss(pred, target))


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_weights_are_min_snr_gamma_in_the_targets_terms(sched, kind):
    t = torch.arange(0, 1000, 7)
    snr = snr_of(sched, t)
    gamma = 5.0
    expected = {"epsilon": torch.minimum(snr, torch.tensor(gamma, dtype=torch.float64)) / snr,
                "v_prediction": torch.minimum(snr, torch.tensor(gamma, dtype=torch.float64)) / (snr + 1),
                "sample": torch.minimum(snr, torch.tensor(gamma, dtype=torch.float64))}[kind]
    w = snr_weights(sched, t, gamma, kind)
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w.double(), expected, rtol=1e-4, atol=1e-6)
    if kind == "epsilon":  # noisy steps (SNR < gamma) keep weight 1; nearly clean ones are cut down
        assert torch.all(w[snr < gamma] == 1) and torch.all(w[snr > 2 * gamma] < 0.5)


def test_the_weighted_loss_is_the_mean_of_weighted_per_image_errors(sched):
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(4, 3, 5, 5, generator=g), torch.randn(4, 3, 5, 5, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    per_image = ((pred - target) ** 2).mean(dim=(1, 2, 3))
    w = snr_weights(sched, t, 5.0)
    torch.testing.assert_close(denoising_loss(pred, target, t, sched, 5.0), (per_image * w).mean())
    assert w[0] < w[2] == 1  # the nearly noise-free step counts less than a noisy one
