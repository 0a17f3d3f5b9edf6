"""The one learning-rate schedule (classifier in images, generators in steps)."""
import math

import pytest
import torch

from synthscale.lr_schedule import lr_factor, step_schedule


def test_warmup_then_cosine_to_zero():
    steps, warmup = 100, 10
    f = [lr_factor(s, steps, warmup) for s in range(steps)]
    assert f[0] == pytest.approx(0.1 * 0.5 * (1 + math.cos(0)))
    assert all(a < b for a, b in zip(f[:9], f[1:10]))  # the ramp rises to its top at step `warmup` - 1
    assert f[9] == pytest.approx(0.5 * (1 + math.cos(math.pi * 9 / steps)))
    assert all(a > b for a, b in zip(f[9:], f[10:]))  # then only falls
    assert f[50] == pytest.approx(0.5)
    assert lr_factor(steps, steps, warmup) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(2 * steps, steps, warmup) == pytest.approx(0.0, abs=1e-12)  # not back up past the end


def test_constant_after_warmup_and_no_warmup():
    assert [lr_factor(s, 10, 4, decay="constant") for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert {lr_factor(s, 10, 0, decay="constant") for s in range(10)} == {1.0}
    with pytest.raises(ValueError, match="unknown decay"):
        lr_factor(0, 10, 0, decay="linear")


def test_images_seen_move_the_schedule_by_the_batch():
    """The classifier counts images: a batch of 32 at image 0 is 32 images into a 64-image warm-up."""
    assert lr_factor(0, 1000, 64, batch=32) == pytest.approx(0.5)
    assert lr_factor(32, 1000, 64, batch=32) == pytest.approx(0.5 * (1 + math.cos(math.pi * 32 / 1000)))


def test_step_schedule_sets_the_optimizer_rate_per_step():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = step_schedule(opt, steps=20, warmup=5)
    rates = []
    for _ in range(20):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates == pytest.approx([2.0 * lr_factor(s, 20, 5) for s in range(20)])
