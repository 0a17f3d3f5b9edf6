"""Seed noise: the pooled standard deviation of one run between training seeds, and the t margin of a
difference of two seed means. One implementation for the classifier mix analysis
(`synthscale.analysis.mixing`) and the CLIP arm (`synthscale.analysis.clip_report`).

Each caller gathers its own within-group sum of squares (from raw seeds, or from per-N SDs) and adds
it up in its own order: Python's running sum and numpy's pairwise sum differ in the last bit from 8
terms on, and the tables must not change.
"""

from __future__ import annotations

import numpy as np


def pooled_sd(ss: float, df: int) -> float:
    """The pooled SD sqrt(ss / df) from the summed squared deviations `ss` of every group about its own
    mean and df = sum (n_i - 1); NaN with no degrees of freedom (no group has two seeds)."""
    if df <= 0:
        return float("nan")
    return float(np.sqrt(ss / df))


def diff_margin(sd: float, df: int, n_a: int, n_b: int, level: float = 0.95) -> tuple[float, float]:
    """(margin, t quantile) of a difference of two means of n_a and n_b seeds each, at `level`:
    t(0.5 + level / 2, df) * sd * sqrt(1/n_a + 1/n_b); (NaN, NaN) without an SD or degrees of freedom."""
    from scipy.stats import t as student_t

    if not np.isfinite(sd) or df <= 0:
        return float("nan"), float("nan")
    q = float(student_t.ppf(0.5 + level / 2, df))
    return q * sd * float(np.sqrt(1 / n_a + 1 / n_b)), q
