"""Real + synthetic training sources: what a synthetic set is worth, and where mixing helped.

A run's parts (real first, then synthetic; `Plan.train_parts`) are combined by the streaming loader
(`synthscale.data.loader.build_train_loader(parts, recipe, seed, epoch, mix=...)`). This module holds the
analysis, free of plotting:
- `exchange_rates` reads, for every synthetic and mixed classifier, how many real images it is worth:
  the real-only curve (metric against log N, made monotone) is inverted at the classifier's metric.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import pandas as pd

from synthscale.analysis.noise import diff_margin, pooled_sd
from synthscale.analysis.tables import read_summary
from synthscale.io import write_csv
from synthscale.study.sources import parse_source, synthetic_name

# --- what a synthetic set is worth, in real images ---


def monotone(n: Sequence[float], values: Sequence[float], higher_is_better: bool) -> np.ndarray:
    """The metric made monotone in N (pool-adjacent-violators), so the curve can be inverted."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(increasing=higher_is_better)
    return iso.fit_transform(np.log(np.asarray(n, float)), np.asarray(values, float))


def real_equivalent(
    n: Sequence[float], values: Sequence[float], target: float, higher_is_better: bool = True
) -> tuple[float, float, float, str]:
    """The real N whose (monotone) real-only curve, linear in log N, reaches `target`.

    Returns (N, bracket low, bracket high, censored). The bracket is the pair of measured real points
    around the crossing: with a monotone curve the true crossing lies between them. Outside the
    measured range N is NaN and censored says "below" (worth fewer than the smallest real N) or
    "above" (more than the largest).
    """
    order = np.argsort(np.asarray(n, float))
    x = np.asarray(n, float)[order]
    y = monotone(x, np.asarray(values, float)[order], higher_is_better)
    s = 1.0 if higher_is_better else -1.0
    y, t = s * y, s * float(target)  # now increasing, higher is better
    if t < y[0]:
        return np.nan, 0.0, float(x[0]), "below"
    if t > y[-1]:
        return np.nan, float(x[-1]), np.inf, "above"
    for i in range(len(x) - 1):
        if y[i] <= t <= y[i + 1] and y[i + 1] > y[i]:
            frac = (t - y[i]) / (y[i + 1] - y[i])
            est = float(np.exp(np.log(x[i]) + frac * (np.log(x[i + 1]) - np.log(x[i]))))
            return est, float(x[i]), float(x[i + 1]), ""
    hit = float(x[np.argmax(y >= t)])  # on a flat stretch: the smallest N that reaches the target
    return hit, hit, hit, ""


def _bootstrap(
    real: pd.DataFrame, point: pd.DataFrame, metric: str, higher: bool, draws: int, seed: int
) -> tuple[float, float]:
    """95% interval of the real equivalent, resampling training seeds of every point independently."""
    rng = np.random.default_rng(seed)
    groups = [g[metric].to_numpy() for _, g in real.groupby("n", sort=True)]
    ns = np.array(sorted(real["n"].unique()), float)
    target = point[metric].to_numpy()
    est = []
    for _ in range(draws):
        curve = [rng.choice(v, len(v)).mean() for v in groups]
        t = rng.choice(target, len(target)).mean()
        e, _, _, cens = real_equivalent(ns, curve, t, higher)
        est.append(e if not cens else (0.0 if cens == "below" else np.inf))
    est = np.sort(np.asarray(est))  # may hold inf (beyond the real curve): order statistics, no arithmetic
    return float(est[int(0.025 * (draws - 1))]), float(est[int(np.ceil(0.975 * (draws - 1)))])


def exchange_rates(
    summary: pd.DataFrame, metrics: Sequence[str] = ("top1", "loss"), draws: int = 500, seed: int = 0
) -> pd.DataFrame:
    """How many real images each synthetic and mixed classifier is worth, per eval set and metric.

    `real_equivalent`: the real N with the same metric on the real-only curve (real runs at every N
    and the full real set). `worth` = real_equivalent - real_n: what the synthetic part adds, in real
    images; `rate` = worth / synthetic_n: real images per synthetic image. With several training seeds
    the interval is a bootstrap over seeds; with one, it is the bracket of measured real points.
    """
    seed_col = "seed" if "seed" in summary.columns else None
    rows = []
    pairs = [(e, m) for e in dict.fromkeys(summary["eval_set"]) for m in metrics]
    for eval_set, metric in pairs:
        ev = summary[summary["eval_set"] == eval_set]
        real = ev[ev["kind"] == "real"]
        if real["n"].nunique() < 2:
            continue
        curve = real.groupby("n", sort=True)[metric].mean()
        others = ev[ev["kind"].isin(["synthetic", "mix"])]
        for (source, n_label), point in others.groupby(["source", "n_label"], sort=False):
            rows.append(_exchange_row(source, point, real, curve, eval_set, metric, seed_col, draws, seed))
    return pd.DataFrame(rows)


def _exchange_row(
    source: str, point: pd.DataFrame, real: pd.DataFrame, curve: pd.Series, eval_set: str, metric: str,
    seed_col: str | None, draws: int, seed: int,
) -> dict[str, Any]:
    """One classifier's exchange-rate row (its seeds' mean `point`) against the real-only runs `real`
    and their mean curve (metric per N)."""
    higher = metric != "loss"
    first = point.iloc[0]
    value = float(point[metric].mean())
    est, lo, hi, cens = real_equivalent(curve.index, curve.to_numpy(), value, higher)
    n_seeds = int(point[seed_col].nunique()) if seed_col else 1
    interval = "bracket"
    if seed_col and n_seeds > 1 and real.groupby("n")[seed_col].nunique().min() > 1:
        lo, hi = _bootstrap(real, point, metric, higher, draws, seed)
        interval = "bootstrap"
    r, syn = int(first["real_n"]), int(first["synthetic_n"])
    return {
        "source": source,
        "kind": first["kind"],
        "set": synthetic_name(source),
        "eval_set": eval_set,
        "ood": bool(first["ood"]),
        "metric": metric,
        "real_n": r,
        "synthetic_n": syn,
        "value": value,
        "real_only_at_real_n": float(curve.get(r, np.nan)) if r else np.nan,
        "real_equivalent": est,
        "real_equivalent_low": lo,
        "real_equivalent_high": hi,
        "censored": cens,
        "worth": est - r,
        "worth_low": lo - r,
        "worth_high": hi - r,
        "rate": (est - r) / syn,
        "interval": interval,
        "seeds": n_seeds,
    }


def amount_label(real_n: int, synthetic_n: int, multiples: Sequence[float]) -> str:
    """The grid value behind a synthetic amount: `+1x` (a multiple of real_n) or `+300` (absolute)."""
    for m in multiples:
        if max(1, round(m * real_n)) == synthetic_n:
            return f"+{m:g}x"
    return f"+{synthetic_n}"


def all_multiples(mix: dict[str, Any]) -> list[float]:
    """Every synthetic multiple of a mix section: its own and its real_n entries'."""
    out = list(mix.get("synthetic_multiples", []))
    for e in mix.get("real_n", []):
        if isinstance(e, dict):
            out += e.get("synthetic_multiples", [])
    return list(dict.fromkeys(out))


def pooled_real_seed_sd(real: pd.DataFrame, metric: str = "top1") -> tuple[float, int, list[int]]:
    """The sd of one run's `metric` between training seeds, pooled over the real-only grid N values
    that have >= 2 seeds: sqrt(sum (n_i - 1) s_i^2 / sum (n_i - 1)). Returns (sd, df, those N values);
    (NaN, 0, []) where no N has two seeds. The full real set (n_label "all") is not a grid run."""
    if "seed" not in real.columns:
        return np.nan, 0, []
    grid = real[real["n_label"].astype(str) != "all"] if "n_label" in real.columns else real
    ss, df, used = 0.0, 0, []
    for n, g in grid.groupby("real_n", sort=True):
        v = g.groupby("seed")[metric].mean()
        if len(v) >= 2:
            ss += float(((v - v.mean()) ** 2).sum())
            df += len(v) - 1
            used.append(int(n))
    return pooled_sd(ss, df), df, used


def mix_effects(summary: pd.DataFrame, mix: dict[str, Any], level: float = 0.95) -> pd.DataFrame:
    """Each mixed classifier against real-only at the same real_n: delta of top-1 and loss.

    The noise of one run is the seed sd of top-1 among the real-only runs at the comparison's own
    real_n when it has >= 2 seeds (df = seeds - 1; the seed sd is largest at the scarcest N, where most
    verdicts are made), else the sd pooled over the real-only grid N with >= 2 seeds (`pooled_real_seed_sd`,
    per eval set); `noise_from` says which ("this N", "pooled", "none"). With several seeds the mix's
    own seed spread joins it. The difference between the mix's mean over its n_m seeds and real-only's
    over its n_r is compared with t(level, df) * sd * sqrt(1/n_m + 1/n_r), the `noise` column.
    `verdict`: helped / hurt beyond it, within noise inside it, undetermined where no N has two seeds
    (no noise estimate).
    """
    rows = []
    seed_col = "seed" if "seed" in summary.columns else None
    for eval_set, ev in summary.groupby("eval_set", sort=False):
        real = ev[ev["kind"] == "real"]
        curve = real.groupby("real_n")[["top1", "loss"]].mean()
        pooled = pooled_real_seed_sd(real)
        for (source, n_label), g in ev[ev["kind"] == "mix"].groupby(["source", "n_label"], sort=False):
            r = int(g.iloc[0]["real_n"])
            if r not in curve.index:
                continue
            base = real[real["real_n"] == r]
            rows.append(_mix_effect(source, g, base, curve, eval_set, pooled, seed_col, mix, level))
    return pd.DataFrame(rows)


def _mix_effect(
    source: str, g: pd.DataFrame, base: pd.DataFrame, curve: pd.DataFrame, eval_set: str,
    pooled: tuple[float, int, list[int]], seed_col: str | None, mix: dict[str, Any], level: float,
) -> dict[str, Any]:
    """One mix's row of `mix_effects`: its seeds `g` against the real-only runs `base` at its real_n
    (`curve`: real-only top1 and loss per real_n; `pooled`: `pooled_real_seed_sd` of the eval set)."""
    first = g.iloc[0]
    r, syn = int(first["real_n"]), int(first["synthetic_n"])
    top1, loss = float(g["top1"].mean()), float(g["loss"].mean())
    delta = top1 - float(curve.loc[r, "top1"])
    n_r = int(base[seed_col].nunique()) if seed_col else 1
    n_m = int(g[seed_col].nunique()) if seed_col else 1
    s, d, source_sd, basis = _noise_sd(g, base, r, n_m, seed_col, pooled)
    if d > 0 and np.isfinite(s):
        noise = diff_margin(s, d, n_m, n_r, level)[0]
        verdict = "within noise" if abs(delta) <= noise else ("helped" if delta > 0 else "hurt")
    else:
        noise, verdict, basis, source_sd = np.nan, "undetermined", "none: no N has two seeds", "none"
    return {
        "source": source,
        "set": synthetic_name(source),
        "eval_set": eval_set,
        "ood": bool(first["ood"]),
        "real_n": r,
        "real_all": parse_source(source).real_n == "all",
        "synthetic_n": syn,
        "amount": amount_label(r, syn, all_multiples(mix)),
        "top1_real_only": float(curve.loc[r, "top1"]),
        "top1": top1,
        "delta_top1": delta,
        "loss_real_only": float(curve.loc[r, "loss"]),
        "loss": loss,
        "delta_loss": loss - float(curve.loc[r, "loss"]),
        "seeds_mix": n_m,
        "seeds_real_only": n_r,
        "noise_sd": s if d > 0 else np.nan,
        "noise_df": int(d),
        "noise": noise,
        "noise_basis": basis,
        "noise_from": source_sd,
        "verdict": verdict,
    }


def _noise_sd(
    g: pd.DataFrame, base: pd.DataFrame, r: int, n_m: int, seed_col: str | None,
    pooled: tuple[float, int, list[int]],
) -> tuple[float, int, str, str]:
    """The sd of one run's top-1 for a mix against real-only at real_n `r`, and its df, where it
    comes from ("this N", "pooled", "none") and the runs it is estimated on (the `mix_effects` rule)."""
    sd, df, used = pooled
    own = base.groupby(seed_col)["top1"].mean() if seed_col else pd.Series(dtype=float)
    if len(own) >= 2:  # this N's own real-only seeds: the seed sd differs between N
        s, d, source_sd = float(own.std(ddof=1)), len(own) - 1, "this N"
        basis = f"real-only seeds at N = {r}"
    else:
        s, d, source_sd = sd, df, "pooled" if used else "none"
        basis = f"real-only seeds at N = {', '.join(map(str, used))}" if used else ""
    if n_m > 1:  # the mix's own seeds join
        v = g.groupby(seed_col)["top1"].mean()
        ss = (0.0 if not d else s**2 * d) + float(((v - v.mean()) ** 2).sum())
        d = d + n_m - 1
        s = pooled_sd(ss, d)
        basis = (basis + " and " if basis else "") + "the mix's own seeds"
    return s, d, source_sd, basis


def read_rates(path: str | os.PathLike) -> pd.DataFrame:
    """exchange_rate.csv or effects.csv back, with the empty `censored` marks kept as ""."""
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    for c in ("censored", "amount", "verdict", "set", "source", "noise_basis", "noise_from"):
        if c in df:
            df[c] = df[c].fillna("").astype(str)
    return df


def write_mix_tables(
    summary_path: str | os.PathLike,
    mix: dict[str, Any],
    seed: int,
    exchange_path: str | os.PathLike,
    effects_path: str | os.PathLike,
) -> None:
    """The rule mix_exchange_rate's outputs from summary.csv: `exchange_rates` and `mix_effects`."""
    summary = read_summary(summary_path, fill_seed=False)
    write_csv(exchange_path, exchange_rates(summary, seed=seed))
    write_csv(effects_path, mix_effects(summary, mix))
