"""The one learning-rate schedule: linear warm-up, then cosine decay to zero (or a constant rate).

The classifier counts in images seen (so a short last batch of an epoch moves the schedule by its own
size); the generators count in optimizer steps (`batch` = 1), through `step_schedule`.
"""

from __future__ import annotations

import math

import torch


def lr_factor(seen: float, total: float, warmup: float, batch: float = 1, decay: str = "cosine") -> float:
    """The rate's multiplier once `seen` units are done and the next `batch` are being taken: a linear
    ramp that reaches 1 after `warmup` units, times cosine decay to 0 at `total` (`decay="cosine"`) or 1
    (`decay="constant"`; diffusers' `constant_with_warmup` ramps s/W, from 0, one step behind)."""
    ramp = min(1.0, (seen + batch) / max(warmup, 1.0))
    if decay == "constant":
        return ramp
    if decay != "cosine":
        raise ValueError(f"unknown decay {decay!r}: cosine or constant")
    return ramp * 0.5 * (1 + math.cos(math.pi * min(seen / total, 1.0)))


def step_schedule(
    opt: torch.optim.Optimizer, steps: int, warmup: int, decay: str = "cosine"
) -> torch.optim.lr_scheduler.LambdaLR:
    """`lr_factor` per optimizer step, as a LambdaLR (`sched.step()` after each `opt.step()`)."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, warmup, 1, decay))
