"""Scaling-law fits with honest intervals.

Two forms are fitted to a metric y (a loss, or an error rate 1 - top1) against the training size N:
- the power law y = B * N^-k, by least squares on log-log axes (Fan et al.'s "scaling ability" k);
- the saturating form y = E + B * N^-k, by scipy's `least_squares` with a robust loss (soft_l1) on
  log y, its parameters in log space (E, B, k > 0), from several starting points.
Which form fits better is decided per source by AICc on the log residuals (the small-sample AIC:
the grids have a handful of points).

Intervals come from a case bootstrap over the (seed, N) points of a grid: each draw resamples the
points with replacement. Every source of one eval set is resampled with the *same* draws (the cells
are shared: same seeds, same N), so the synthetic/real slope ratio gets a paired interval.

Points where the metric is 0 (a saturated class or model) have no logarithm: they are dropped, never
clipped to a tiny floor (a floor would fake a huge slope).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy import optimize, stats


def _valid(n: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    n, y = np.asarray(n, float), np.asarray(y, float)
    ok = np.isfinite(n) & np.isfinite(y) & (n > 0) & (y > 0)
    return n[ok], y[ok]


def fit_power_law(n: Sequence[float], y: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """y = B * N^-k by least squares on log-log axes, with a t-interval on k (NaN below 3 points).

    Non-positive values are dropped (they have no logarithm). Raises when fewer than two distinct N
    remain.
    """
    n, y = _valid(n, y)
    x, ly = np.log(n), np.log(y)
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError("a scaling fit needs at least two distinct N values with a positive metric")
    res = stats.linregress(x, ly)
    dof = len(x) - 2
    half = stats.t.ppf(0.5 + level / 2, dof) * res.stderr if dof > 0 else np.nan
    resid = ly - (res.intercept + res.slope * x)
    k = -res.slope
    return {
        "k": float(k),
        "k_t_low": float(k - half),
        "k_t_high": float(k + half),
        "k_stderr": float(res.stderr) if dof > 0 else np.nan,
        "B": float(np.exp(res.intercept)),
        "r2": float(res.rvalue**2) if np.ptp(ly) > 0 else 1.0,
        "rss": float((resid**2).sum()),
        "points": int(len(x)),
        "n_values": int(len(np.unique(n))),
    }


def _sat_model(p: np.ndarray, n: np.ndarray) -> np.ndarray:
    e, b, k = np.exp(p)
    return e + b * n ** (-k)


def _sat_residuals(p: np.ndarray, n: np.ndarray, ly: np.ndarray) -> np.ndarray:
    return np.log(_sat_model(p, n)) - ly


def _sat_jacobian(p: np.ndarray, n: np.ndarray, ly: np.ndarray) -> np.ndarray:
    e, b, k = np.exp(p)
    t = b * n ** (-k)
    m = e + t
    return np.stack([e / m, t / m, -t * k * np.log(n) / m], axis=1)


def sat_starts(n: np.ndarray, y: np.ndarray, k0: float, b0: float) -> list[np.ndarray]:
    """Starting points in log space: the floor E at fractions of the smallest value, k around the
    log-log slope (or 0.3 when that slope is not positive), B matched to the first point."""
    ymin, nmin = float(y.min()), float(n.min())
    ks = [max(k0, 0.05), 0.3, 1.0] if k0 > 0 else [0.1, 0.3, 1.0]
    starts = []
    for frac in (0.01, 0.3, 0.7):
        e = frac * ymin
        for k in ks:
            b = max(float(y[np.argmin(n)]) - e, 1e-6) * nmin**k
            starts.append(np.log([e, b, k]))
    return starts


def fit_saturating(
    n: Sequence[float],
    y: Sequence[float],
    starts: Sequence[np.ndarray] | None = None,
    loss: str = "soft_l1",
    f_scale: float = 0.1,
    max_nfev: int = 200,
) -> dict[str, float]:
    """y = E + B * N^-k with a robust loss on log y, parameters in log space, best of several starts.

    Needs at least 5 points (3 parameters and a defined AICc) on 3 distinct N; NaNs below that.
    """
    n, y = _valid(n, y)
    nan = {"E": np.nan, "B_sat": np.nan, "k_sat": np.nan, "rss_sat": np.nan, "sat_ok": False}
    if len(n) < 5 or len(np.unique(n)) < 3:  # AICc of 3 parameters needs 5 points
        return nan
    ly = np.log(y)
    if starts is None:
        pl = fit_power_law(n, y)
        starts = sat_starts(n, y, pl["k"], pl["B"])
    if len(starts) > 1:  # pick the best start cheaply, all starts at once, then polish it with scipy
        p, c = _lm_soft_l1(n, ly, np.ones((len(starts), len(n))), np.array(starts), f_scale, iterations=40)
        starts = [p[int(np.nanargmin(c))]] if np.isfinite(c).any() else starts
    best = None
    for p0 in starts:
        try:
            r = optimize.least_squares(
                _sat_residuals, p0, jac=_sat_jacobian, args=(n, ly), loss=loss, f_scale=f_scale,
                bounds=(_LOWER, _UPPER), max_nfev=max_nfev,
            )
        except (ValueError, FloatingPointError):
            continue
        if np.isfinite(r.cost) and (best is None or r.cost < best.cost):
            best = r
    if best is None:
        return nan
    e, b, k = np.exp(best.x)
    resid = _sat_residuals(best.x, n, ly)
    return {"E": float(e), "B_sat": float(b), "k_sat": float(k), "rss_sat": float((resid**2).sum()),
            "sat_ok": True, "_x": best.x}


def aicc(rss: float, n_points: int, n_params: int) -> float:
    """Small-sample Akaike information criterion of a least-squares fit (Gaussian residuals)."""
    if not np.isfinite(rss) or n_points - n_params - 1 <= 0:
        return np.nan
    rss = max(rss, 1e-300)
    return n_points * np.log(rss / n_points) + 2 * n_params + 2 * n_params * (n_params + 1) / (
        n_points - n_params - 1
    )


# --------------------------------------------------------------------------------------------------
# the paired case bootstrap over (seed, N) cells
# --------------------------------------------------------------------------------------------------


@dataclass
class Draws:
    """Bootstrap draws: counts[d, c] is how often cell c is drawn in draw d."""

    cells: list[tuple[int, int]]  # (seed, N)
    counts: np.ndarray

    @classmethod
    def make(cls, cells: Sequence[tuple[int, int]], n_draws: int, seed: int) -> "Draws":
        rng = np.random.default_rng(seed)
        c = len(cells)
        return cls(list(cells), rng.multinomial(c, np.full(c, 1.0 / c), size=n_draws))


def bootstrap_power_law(draws: Draws, values: dict[tuple[int, int], float]) -> tuple[np.ndarray, np.ndarray]:
    """k and log B of the log-log fit in every draw (NaN where a draw has < 2 distinct usable N).

    `values` maps a (seed, N) cell to the metric; cells missing or non-positive count as absent.
    Vectorised weighted least squares: a draw's weight of a cell is how often it was drawn.
    """
    n = np.array([c[1] for c in draws.cells], float)
    y = np.array([values.get(c, np.nan) for c in draws.cells], float)
    ok = np.isfinite(y) & (y > 0)
    x = np.log(n)
    ly = np.where(ok, np.log(np.where(ok, y, 1.0)), 0.0)
    w = draws.counts * ok[None, :]
    sw = w.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = (w * x).sum(1) / sw
        my = (w * ly).sum(1) / sw
        sxx = (w * (x[None, :] - mx[:, None]) ** 2).sum(1)
        sxy = (w * (x[None, :] - mx[:, None]) * (ly[None, :] - my[:, None])).sum(1)
        slope = sxy / sxx
    bad = ~(sxx > 1e-12)
    slope[bad] = np.nan
    intercept = my - slope * mx
    intercept[bad] = np.nan
    return -slope, intercept


_LOWER = np.array([-30.0, -30.0, np.log(1e-4)])
_UPPER = np.array([np.log(1e4), 60.0, np.log(5.0)])


def _lm_soft_l1(
    n: np.ndarray, ly: np.ndarray, w0: np.ndarray, p0: np.ndarray, f_scale: float = 0.1, iterations: int = 60
) -> tuple[np.ndarray, np.ndarray]:
    """Saturating fits for many weightings of the same points at once.

    Row d of `w0` weights the points (a bootstrap draw's counts); row d of `p0` is its start in log
    space. Levenberg-Marquardt steps on the soft_l1 loss through iteratively reweighted least squares
    (weights 1/sqrt(1 + (r/f)^2), scipy's soft_l1), vectorised over rows. Returns (log params, cost).
    """
    logn = np.log(n)
    p = np.array(p0, float)
    lam = np.full(len(w0), 1e-2)

    def resid(p):
        e, b, k = np.exp(p).T
        t = b[:, None] * np.exp(-k[:, None] * logn[None, :])
        m = e[:, None] + t
        return np.log(m) - ly[None, :], e, t, m, k

    def cost(r):
        return 0.5 * (w0 * f_scale**2 * 2 * (np.sqrt(1 + (r / f_scale) ** 2) - 1)).sum(1)

    r, e, t, m, k = resid(p)
    c = cost(r)
    for _ in range(iterations):
        jac = np.stack([e[:, None] / m, t / m, -t * k[:, None] * logn[None, :] / m], axis=2)
        w = w0 / np.sqrt(1 + (r / f_scale) ** 2)
        a = np.einsum("dc,dci,dcj->dij", w, jac, jac)
        g = np.einsum("dc,dci,dc->di", w, jac, r)
        a = a + lam[:, None, None] * (np.eye(3)[None] * (np.einsum("dii->di", a)[:, :, None] + 1e-9))
        step = np.linalg.solve(a, -g[:, :, None])[:, :, 0]
        p_new = np.clip(p + step, _LOWER, _UPPER)
        c_new = cost(resid(p_new)[0])
        better = c_new < c
        p = np.where(better[:, None], p_new, p)
        lam = np.where(better, lam / 3, lam * 4)
        r, e, t, m, k = resid(p)
        c = cost(r)
    return p, c


def bootstrap_saturating(
    draws: Draws, values: dict[tuple[int, int], float], x0: np.ndarray, f_scale: float = 0.1
) -> np.ndarray:
    """(E, B, k) of the saturating form in every draw, warm-started at the full fit's solution x0,
    all draws solved at once (`_lm_soft_l1`); a test checks it against scipy on single draws."""
    n = np.array([c[1] for c in draws.cells], float)
    y = np.array([values.get(c, np.nan) for c in draws.cells], float)
    ok = np.isfinite(y) & (y > 0)
    ly = np.where(ok, np.log(np.where(ok, y, 1.0)), 0.0)
    w0 = draws.counts * ok[None, :]
    p, _ = _lm_soft_l1(n, ly, w0, np.tile(np.asarray(x0, float), (len(w0), 1)), f_scale)
    out = np.exp(p)
    distinct = ((w0 > 0) * 1.0) @ np.ones(len(n))
    out[distinct < 3] = np.nan
    return out


def interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the finite draws (NaN when fewer than 10 are finite)."""
    s = np.asarray(samples, float)
    s = s[~np.isnan(s)]
    if len(s) < 10:
        return np.nan, np.nan
    a = (1 - level) / 2
    s = np.sort(s)  # order statistics, so draws that never reach a target (inf) are allowed
    lo = s[int(np.floor(a * (len(s) - 1)))]
    hi = s[int(np.ceil((1 - a) * (len(s) - 1)))]
    return float(lo), float(hi)


def n_for_target_power(k: np.ndarray | float, log_b: np.ndarray | float, target: float) -> np.ndarray:
    """N at which B * N^-k falls to `target` (inf where k <= 0: the fit never gets there)."""
    k, log_b = np.asarray(k, float), np.asarray(log_b, float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = np.exp((log_b - np.log(target)) / k)
    return np.where(k > 0, out, np.inf)


def n_for_target_saturating(e, b, k, target: float) -> np.ndarray:
    """N at which E + B * N^-k falls to `target` (inf when the floor E is at or above it)."""
    e, b, k = (np.asarray(v, float) for v in (e, b, k))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = (b / (target - e)) ** (1.0 / k)
    return np.where(e < target, out, np.inf)


def fit_source(
    cells: dict[tuple[int, int], float],
    draws: Draws,
    target: float | None = None,
    level: float = 0.95,
    bootstrap_saturating_form: bool = True,
) -> tuple[dict[str, Any], np.ndarray]:
    """Every fit of one source on one eval set: both forms, the better one, bootstrap intervals,
    and the N at which the metric reaches `target`. Returns the row and the per-draw k of the
    power law (for paired ratios)."""
    keys = [c for c in draws.cells if c in cells]
    n = np.array([c[1] for c in keys], float)
    y = np.array([cells[c] for c in keys], float)
    pl = fit_power_law(n, y, level)
    nv, yv = _valid(n, y)
    k_draws, lb_draws = bootstrap_power_law(draws, cells)
    if pl["points"] < 3:  # two points give an exact line in every draw: no interval, not a zero-width one
        k_draws[:] = np.nan
        lb_draws[:] = np.nan
    k_lo, k_hi = interval(k_draws, level)
    sat = fit_saturating(nv, yv)
    a_pl = aicc(pl["rss"], pl["points"], 2)
    a_sat = aicc(sat["rss_sat"], pl["points"], 3) if sat["sat_ok"] else np.nan
    form = "saturating" if np.isfinite(a_sat) and np.isfinite(a_pl) and a_sat < a_pl else "power"
    row: dict[str, Any] = {
        "k": pl["k"], "k_low": k_lo, "k_high": k_hi, "B": pl["B"], "r2": pl["r2"],
        "k_t_low": pl["k_t_low"], "k_t_high": pl["k_t_high"], "k_stderr": pl["k_stderr"],
        "points": pl["points"], "n_values": pl["n_values"],
        "dropped": int(len(n) - len(nv)),
        "draws": int(np.isfinite(k_draws).sum()),
        "aicc_power": a_pl, "aicc_saturating": a_sat, "form": form,
        "E": sat["E"] if form == "saturating" else np.nan,
        "k_sat": sat["k_sat"], "B_sat": sat["B_sat"], "k_sat_low": np.nan, "k_sat_high": np.nan,
        "target": np.nan if target is None else float(target),
        "n_target": np.nan, "n_target_low": np.nan, "n_target_high": np.nan,
    }
    sat_draws = None
    if form == "saturating" and bootstrap_saturating_form:
        sat_draws = bootstrap_saturating(draws, cells, sat["_x"])
        row["k_sat_low"], row["k_sat_high"] = interval(sat_draws[:, 2], level)
    if target is not None and target > 0:
        if form == "saturating":
            point = n_for_target_saturating(sat["E"], sat["B_sat"], sat["k_sat"], target)
            nd = (
                n_for_target_saturating(sat_draws[:, 0], sat_draws[:, 1], sat_draws[:, 2], target)
                if sat_draws is not None else np.array([])
            )
        else:
            point = n_for_target_power(pl["k"], np.log(pl["B"]), target)
            nd = n_for_target_power(k_draws, lb_draws, target)
        row["n_target"] = float(point)
        row["n_target_low"], row["n_target_high"] = interval(nd, level)
    return row, k_draws


def ratio_interval(k_syn: np.ndarray, k_real: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of k_syn / k_real over paired draws (draws with k_real <= 0 left out)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(k_real > 0, k_syn / k_real, np.nan)
    return interval(r, level)


def per_class_slope(n: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Per-class k of y ~ N^-k; saturated points (y = 0) are dropped, not clipped.
    NaN when fewer than two distinct N remain."""
    nv, yv = _valid(n, y)
    dropped = int(len(np.asarray(n)) - len(nv))
    if len(np.unique(nv)) < 2:
        return {"slope": np.nan, "slope_r2": np.nan, "n_points": int(len(nv)), "n_dropped": dropped}
    f = fit_power_law(nv, yv)
    return {"slope": f["k"], "slope_r2": f["r2"], "n_points": f["points"], "n_dropped": dropped}


def halfwidth_for_grid(
    n_values: Sequence[int], seeds: int, k: float, b: float, noise: float, draws: int = 1000,
    sims: int = 50, seed: int = 0,
) -> float:
    """Median bootstrap 95% half-width of k on simulated grids: log y = log B - k log N + noise.

    `noise` is the sd of log y between training seeds at a fixed N (measured on a real study).
    """
    rng = np.random.default_rng(seed)
    cells = [(s, int(n)) for s in range(seeds) for n in n_values]
    d = Draws.make(cells, draws, seed)
    widths = []
    for _ in range(sims):
        vals = {c: b * c[1] ** -k * np.exp(rng.normal(0, noise)) for c in cells}
        kd, _ = bootstrap_power_law(d, vals)
        lo, hi = interval(kd)
        widths.append((hi - lo) / 2)
    return float(np.nanmedian(widths))
