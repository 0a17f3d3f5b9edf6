"""The classifier arm's scaling analysis: the scaling fits over every (seed, N) point of each source
with their intervals and the slope ratio to real's (scaling.csv), the metric-against-N and
guidance x strategy figures, and the findings sentences on accuracy, slopes and the N each source
needs to reach a target. The fits themselves are synthscale.analysis.fits; the summary table they
read is synthscale.analysis.tables.

Mixes are left out here (their analysis is synthscale.analysis.mixing and mix_report); per-class
slopes, which the quality summary sets against per-class recognizability, are in quality_report.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import pandas as pd

from synthscale.analysis import fits as F
from synthscale.analysis.report import fmt_num, plotting, save, write_html
from synthscale.analysis.tables import grid_rows, metric_values, read_scaling, read_summary, write_table
from synthscale.data.real import manifest_classes


# --------------------------------------------------------------------------------------------------
# the scaling fits (scaling.csv)
# --------------------------------------------------------------------------------------------------


def seed_stats(df: pd.DataFrame, value: str, by: Sequence[str]) -> pd.DataFrame:
    """Mean, sd and count over training seeds of `value`, per `by`."""
    return df.groupby(list(by), dropna=False)[value].agg(["mean", "std", "count"]).reset_index()


def _how(row: Any, name: str) -> str:
    """How an interval was made, or why it is undetermined (the `{name}_interval` column)."""
    v = row.get(f"{name}_interval", "") if hasattr(row, "get") else ""
    return str(v) if isinstance(v, str) and v else "undetermined"


def scaling_fits(
    summary: pd.DataFrame,
    metric: str | Sequence[str] = "loss",
    targets: dict[str, float | None] | None = None,
    level: float = 0.95,
) -> pd.DataFrame:
    """One row per (source, eval set, metric): both forms, the better one, k's t interval over the
    (seed, N) points, the slope ratio to real's with Fieller's interval on the N values both have, and
    the N that reaches `targets[metric]` (the full real set, n_label "all", is left out of the fits).
    Every interval has a `*_interval` column: its method, or "undetermined: why" with a NaN interval
    (`synthscale.analysis.fits`; coverage measured by benchmarks/fit_coverage.py)."""
    summary = grid_rows(summary)
    metrics = [metric] if isinstance(metric, str) else list(metric)
    targets = targets or {}
    df = summary[summary["n_label"] != "all"].copy()
    if "seed" not in df.columns:
        df["seed"] = 0
    rows = []
    for m in metrics:
        df["_y"] = metric_values(df, m)
        for (arch, eval_set), grp in df.groupby(["arch", "eval_set"], sort=True):
            for source, g in grp.groupby("source", sort=True):
                values = {(int(s), int(n)): float(y) for s, n, y in zip(g["seed"], g["n"], g["_y"])}
                if len({n for (_, n), y in values.items() if y > 0}) < 2:
                    continue
                fit = F.fit_source(values, targets.get(m), level)
                first = g.iloc[0]
                rows.append(
                    {
                        **{c: first[c] for c in ["arch", "source", "kind", "generator", "guidance", "strategy"]},
                        "eval_set": eval_set,
                        "ood": bool(first["ood"]),
                        "metric": m,
                        "n_min": int(g["n"].min()),
                        "n_max": int(g["n"].max()),
                        "seeds": int(g["seed"].nunique()),
                        **fit,
                        "_cells": values,
                    }
                )
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out = _add_ratios(out, level)
    return out.drop(columns="_cells")


def write_scaling_fits(
    summary_path: str | os.PathLike,
    path: str | os.PathLike,
    metrics: str | Sequence[str],
    target_loss: float | None,
    target_top1: float | None,
    level: float = 0.95,
) -> None:
    """scaling.csv from summary.csv: `scaling_fits` of `metrics`, the N to reach `target_loss` on the
    loss and `target_top1` on the error (1 - top1)."""
    targets = {"loss": target_loss, "error": None if target_top1 is None else 1 - target_top1}
    write_table(path, scaling_fits(read_summary(summary_path), metrics, targets, level))


def _add_ratios(fits: pd.DataFrame, level: float) -> pd.DataFrame:
    """k / k_real for every source with Fieller's interval (`fits.slope_ratio`), and whether it
    excludes 1: lower / higher / no, or undetermined where no interval exists."""
    cols: dict[str, list] = {"ratio": [], "ratio_low": [], "ratio_high": [], "ratio_interval": [],
                             "differs_from_real": []}
    real = {
        (r["arch"], r["eval_set"], r["metric"]): r
        for _, r in fits[fits["kind"] == "real"].iterrows()
    }
    for _, r in fits.iterrows():
        ref = real.get((r["arch"], r["eval_set"], r["metric"]))
        if ref is None or r["kind"] == "real":
            res = {"ratio": np.nan, "ratio_low": np.nan, "ratio_high": np.nan, "ratio_interval": "",
                   "differs_from_real": ""}
        else:
            res = F.slope_ratio(r["_cells"], ref["_cells"], level)
            a, b = res["ratio_low"], res["ratio_high"]
            known = np.isfinite(a) and np.isfinite(b)
            res["differs_from_real"] = ("lower" if b < 1 else "higher" if a > 1 else "no") if known else "undetermined"
        for c in cols:
            cols[c].append(res[c])
    return fits.assign(**cols)


# --------------------------------------------------------------------------------------------------
# scaling plots
# --------------------------------------------------------------------------------------------------


def scaling_figure(summary: pd.DataFrame, metric: str, chance: float):
    """metric against N: rows = generators, columns = eval sets; one line per (guidance, strategy)
    of that generator, with the real baseline in every panel. Points are means over training seeds,
    bars one sd, and each seed's value is drawn faintly."""
    summary = summary[summary["kind"].isin(["real", "synthetic"])]  # mixes: synthscale.analysis.mixing
    plt, sns = plotting()
    df = summary[summary["n_label"] != "all"]
    syn = df[df["kind"] == "synthetic"]
    real = df[df["kind"] == "real"]
    full = summary[summary["n_label"] == "all"]
    sets = list(dict.fromkeys(summary["eval_set"]))
    gens = sorted(syn["generator"].unique()) or [""]
    fig, axes = plt.subplots(len(gens), len(sets), figsize=(4.6 * len(sets), 3.9 * len(gens)),
                             squeeze=False, sharey=True)
    strategies = sorted(syn["strategy"].unique())
    palette = dict(zip(strategies, sns.color_palette("tab10", max(len(strategies), 1))))
    guidances = sorted(syn["guidance"].unique())
    ns = sorted(df["n"].unique())
    seeds = int(df["seed"].nunique()) if "seed" in df else 1
    for i, gen in enumerate(gens):
        for j, name in enumerate(sets):
            ax = axes[i][j]
            mine = syn[(syn["generator"] == gen) & (syn["eval_set"] == name)]
            _scaling_lines(ax, mine, real[real["eval_set"] == name], full[full["eval_set"] == name],
                           gen, metric, chance, palette, guidances, seeds)
            ood = summary.loc[summary.eval_set == name, "ood"].any()
            _scaling_axes(ax, metric, ns, f"{gen or 'real'} on {name}" + (" (OOD)" if ood else ""))
        axes[i][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(
        f"{metric} against N (one row per generator; colour = prompt strategy, dash = guidance; "
        f"mean and sd over seeds: {_seed_counts(real, syn)})"
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


_DASHES = ["-", "--", ":", "-."]


def _seed_line(ax, d: pd.DataFrame, metric: str, seeds: int, label: str, **style) -> None:
    """Mean and sd over seeds against N, and each seed's value faintly when there are several."""
    st = seed_stats(d, metric, ["n"]).sort_values("n")
    ax.errorbar(st["n"], st["mean"], yerr=st["std"].fillna(0), capsize=2, label=label, **style)
    if seeds > 1:
        ax.scatter(d["n"], d[metric], s=6, alpha=0.3, color=style.get("color"))


def _scaling_lines(ax, mine: pd.DataFrame, real: pd.DataFrame, full: pd.DataFrame, gen: str, metric: str,
                   chance: float, palette: dict, guidances: list, seeds: int) -> None:
    """One panel's lines: each (strategy, guidance) of the generator, real at the same N, the full
    real set and chance."""
    for (strategy, g), grp in mine.groupby(["strategy", "guidance"]):
        _seed_line(ax, grp, metric, seeds, f"{gen}: {strategy}, g={g:g}", marker="o", ms=3, lw=1.2,
                   color=palette[strategy], ls=_DASHES[guidances.index(g) % len(_DASHES)])
    if len(real):
        _seed_line(ax, real, metric, seeds, "real (same N)", marker="s", color="black", lw=2.2)
    if len(full):
        ax.axhline(full[metric].mean(), color="grey", lw=1, ls="--", label=f"real, all {int(full['n'].iloc[0])}")
    if metric != "loss":
        ax.axhline(chance, color="red", lw=0.8, ls=":", label="chance")


def _scaling_axes(ax, metric: str, ns: list, title: str) -> None:
    """One panel's axes: log N with the grid's N as ticks, log loss, labels and grid."""
    import matplotlib.ticker

    ax.set_xscale("log")
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if metric == "loss":
        ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("training images N")
    ax.set_ylabel({"loss": "cross-entropy loss", "top1": "top-1 accuracy"}.get(metric, metric))
    ax.grid(True, which="both", alpha=0.3)


def _seed_counts(real: pd.DataFrame, syn: pd.DataFrame) -> str:
    """'real 3 seeds, synthetic 1 seed': the training seeds of each kind, for a figure's title."""
    n_seeds = {k: int(g["seed"].nunique()) if "seed" in g else 1 for k, g in (("real", real), ("synthetic", syn))}
    return ", ".join(f"{k} {v} seed{'s' if v > 1 else ''}" for k, v in n_seeds.items() if v)


def plot_scaling(summary: pd.DataFrame, metric: str, path: str | os.PathLike, chance: float) -> None:
    save(scaling_figure(summary, metric, chance), path)


def write_scaling_plot(
    summary_path: str | os.PathLike, metric: str, path: str | os.PathLike, manifest_path: str | os.PathLike
) -> None:
    """The rule plot_scaling's figure from summary.csv, chance at 1 / the class count of the prepared
    dataset (its manifest)."""
    plot_scaling(read_summary(summary_path), metric, path, 1 / manifest_classes(manifest_path))


def guidance_strategy_figure(summary: pd.DataFrame):
    """Top-1 at the largest N: one heatmap per eval set, rows = (generator, strategy), columns =
    guidance, so each cell is one (generator, guidance, strategy); cells are means over seeds."""
    summary = summary[summary["kind"].isin(["real", "synthetic"])]  # mixes: synthscale.analysis.mixing
    plt, sns = plotting()
    df = summary[(summary["kind"] == "synthetic") & (summary["n_label"] != "all")]
    n_max = df["n"].max()
    df = df[df["n"] == n_max].assign(row=lambda d: d["generator"] + ": " + d["strategy"])
    real = summary[(summary["kind"] == "real") & (summary["n"] == n_max) & (summary["n_label"] != "all")]
    sets = list(dict.fromkeys(summary["eval_set"]))
    n_rows = max(df["row"].nunique(), 1)
    fig, axes = plt.subplots(1, len(sets), figsize=(4.4 * len(sets), 1.2 + 0.45 * n_rows), squeeze=False)
    seeds = int(df["seed"].nunique()) if len(df) else 0
    for ax, name in zip(axes[0], sets):
        piv = df[df["eval_set"] == name].pivot_table(index="row", columns="guidance", values="top1", aggfunc="mean")
        piv.columns = [f"{c:g}" for c in piv.columns]
        sns.heatmap(piv, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="viridis", ax=ax, cbar=False)
        r = real[real["eval_set"] == name]["top1"]
        base = f"; real at same N: {r.mean():.2f}" if len(r) else ""
        ax.set_title(f"{name}{base}", fontsize=9)
        ax.set_xlabel("guidance scale")
        ax.set_ylabel("generator: prompt strategy")
    fig.suptitle(f"top-1 of classifiers trained on N={n_max} synthetic images (mean over {seeds} seeds)")
    return fig


def plot_guidance_strategy(summary: pd.DataFrame, path: str | os.PathLike) -> None:
    save(guidance_strategy_figure(summary), path)


def write_guidance_plot(summary_path: str | os.PathLike, path: str | os.PathLike) -> None:
    """The rule plot_guidance_strategy's figure from summary.csv (`guidance_strategy_figure`)."""
    plot_guidance_strategy(read_summary(summary_path), path)


# --------------------------------------------------------------------------------------------------
# findings
# --------------------------------------------------------------------------------------------------


def scaling_findings(summary: pd.DataFrame, fits: pd.DataFrame, n_classes: int) -> list[str]:
    """Sentences about this study's accuracy and slopes; each states numbers from the tables."""
    summary = summary[summary["kind"].isin(["real", "synthetic"])]  # mixes: synthscale.analysis.mixing
    out = _accuracy_findings(summary, n_classes)
    if fits is None or not len(fits):
        return out
    f = fits[(fits["metric"] == "loss") & ~fits["ood"]] if "metric" in fits else fits[~fits["ood"]]
    fs = f[f["kind"] == "synthetic"]
    return (out + _slope_findings(f[f["kind"] == "real"], fs) + _ratio_findings(fs) + _form_findings(f)
            + _guidance_findings(fs) + _target_findings(fits))


def _accuracy_findings(summary: pd.DataFrame, n_classes: int) -> list[str]:
    """Top-1 at the largest N: the best and worst synthetic sets against chance and real, the full
    real set, and each OOD set."""
    out: list[str] = []
    chance = 1.0 / n_classes
    ind = summary[~summary["ood"]]
    grid = summary[summary["n_label"] != "all"]
    n_max = grid["n"].max()
    by = ["source", "generator", "guidance", "strategy", "eval_set"]
    at = ind[(ind["n"] == n_max) & (ind["n_label"] != "all")]
    syn = seed_stats(at[at["kind"] == "synthetic"], "top1", by)
    real = seed_stats(at[at["kind"] == "real"], "top1", by)
    full = ind[ind["n_label"] == "all"]

    def mean_of(kind: str) -> str:
        g = at[at["kind"] == kind]
        seeds = int(g["seed"].nunique()) if "seed" in g and len(g) else 1
        return f"mean over {seeds} training seed{'s' if seeds > 1 else ''}"

    if len(syn):
        best, worst = syn.loc[syn["mean"].idxmax()], syn.loc[syn["mean"].idxmin()]
        out.append(
            f"At N={n_max} ({mean_of('synthetic')}), the best synthetic set ({best['source']}) reaches top-1 "
            f"{best['mean']:.3f} on {best['eval_set']}; the worst ({worst['source']}) {worst['mean']:.3f}; "
            f"chance is {chance:.3f}."
        )
        above = int((syn["mean"] > 2 * chance).sum())
        out.append(
            f"{above} of {len(syn)} synthetic sets at N={n_max} score more than twice chance on the "
            "in-distribution test set."
        )
    if len(real) and len(syn):
        gap = real["mean"].iloc[0] - syn["mean"].max()
        out.append(
            f"Real images at the same N reach {real['mean'].iloc[0]:.3f} ({mean_of('real')}): the best synthetic set "
            + (f"trails them by {gap:.3f}." if gap > 0 else f"beats them by {-gap:.3f}.")
        )
    if len(full):
        out.append(f"The classifier trained on all {int(full['n'].iloc[0])} real images reaches {full['top1'].mean():.3f}.")
    for name, grp in summary[summary["ood"]].groupby("eval_set"):
        g = grp[(grp["n"] == n_max) & (grp["n_label"] != "all")]
        s = seed_stats(g[g["kind"] == "synthetic"], "top1", by)
        r = g[g["kind"] == "real"]["top1"]
        if len(s) and len(r):
            out.append(
                f"Out of distribution ({name}), at N={n_max}: best synthetic {s['mean'].max():.3f} vs real {r.mean():.3f}."
            )
    return out


def _slope_findings(fr: pd.DataFrame, fs: pd.DataFrame) -> list[str]:
    """Real's scaling ability k with its interval, and the range of the synthetic sets' k."""
    out: list[str] = []
    if len(fr):
        r = fr.iloc[0]
        half = (r["k_high"] - r["k_low"]) / 2
        out.append(
            f"Scaling ability k of real images (loss ~ B N^-k on {r['eval_set']}): k = {r['k']:.3f}, "
            + (f"95% interval [{r['k_low']:.3f}, {r['k_high']:.3f}] (half-width {half:.3f}; {_how(r, 'k')}) from "
               if np.isfinite(half) else f"interval {_how(r, 'k')}, from ")
            + f"{int(r['points'])} (seed, N) points over {int(r['n_values'])} N values and {int(r['seeds'])} "
            f"seed{'s' if int(r['seeds']) > 1 else ''} (Fan et al. on ImageNet: about 0.53)."
        )
    if len(fs):
        out.append(
            f"Synthetic k ranges from {fs['k'].min():.3f} to {fs['k'].max():.3f} over {len(fs)} sets "
            "(Fan et al. on ImageNet: 0.20 to 0.27)."
        )
    return out


def _ratio_findings(fs: pd.DataFrame) -> list[str]:
    """Each synthetic set's k and its ratio to real's, with a verdict, then the tally."""
    out: list[str] = []
    if len(fs) and "differs_from_real" in fs:
        for _, s in fs.iterrows():
            verdict = {
                "lower": "lower than real's (the ratio interval lies below 1)",
                "higher": "higher than real's (the ratio interval lies above 1)",
                "no": "not distinguishable from real's (the ratio interval contains 1)",
            }.get(s["differs_from_real"], "undetermined against real's (no ratio interval)")
            seeds = int(s["seeds"]) if "seeds" in s else 0
            k_part = (f"k = {s['k']:.3f} [{fmt_num(s['k_low'])}, {fmt_num(s['k_high'])}]" if np.isfinite(s["k_low"])
                      else f"k = {s['k']:.3f}, interval")
            out.append(
                f"{s['source']} ({seeds} seed{'s' if seeds != 1 else ''}): {k_part} ({_how(s, 'k')}); ratio to "
                f"real {fmt_num(s['ratio'], 2)}"
                + (f" [{fmt_num(s['ratio_low'], 2)}, {fmt_num(s['ratio_high'], 2)}] ({_how(s, 'ratio')})"
                   if np.isfinite(s["ratio_low"]) else f", interval {_how(s, 'ratio')}")
                + f": {verdict}."
            )
        counts = fs["differs_from_real"].value_counts()
        lower, higher, same = (int(counts.get(k, 0)) for k in ("lower", "higher", "no"))
        out.append(
            f"In distribution, {lower} of {len(fs)} synthetic slopes are lower than real's, {higher} higher, "
            f"{same} not distinguishable at 95%, and {len(fs) - lower - higher - same} undetermined (no ratio "
            "interval: too few shared N values or residual df, or real's slope not distinguishable from 0)."
        )
        if lower * 2 > len(fs):
            out.append(
                f"Hypothesis, consistent with {lower} of {len(fs)} lower slopes but not tested here: "
                "added synthetic images bring less new information about the test distribution than "
                "added real images do."
            )
    return out


def _form_findings(f: pd.DataFrame) -> list[str]:
    """How often the saturating form fits better, and for how many fits its k has an interval."""
    out: list[str] = []
    if "form" in f and len(f):
        sat = int((f["form"] == "saturating").sum())
        out.append(
            f"The saturating form E + B N^-k fits better than the power law (lower AICc, both by least squares "
            f"on log loss) for {sat} of {len(f)} in-distribution loss fits."
        )
        if "k_sat_low" in f:
            known = f[np.isfinite(f["k_sat_low"].astype(float))]
            why = sorted({_how(r, "k_sat") for _, r in f.iterrows() if not np.isfinite(float(r["k_sat_low"]))})
            out.append(
                f"The saturating form's k has a 95% interval for {len(known)} of {len(f)} fits"
                + (f" (e.g. {known.iloc[0]['source']}: k = {known.iloc[0]['k_sat']:.3f} "
                   f"[{known.iloc[0]['k_sat_low']:.3f}, {known.iloc[0]['k_sat_high']:.3f}])" if len(known) else "")
                + (f"; the others are {'; '.join(why)}" if why else "") + "."
            )
    return out


def _guidance_findings(fs: pd.DataFrame) -> list[str]:
    """Each generator's mean synthetic k per guidance value."""
    out: list[str] = []
    if len(fs) and fs["generator"].nunique():
        for gen, g in fs.groupby("generator"):
            by_g = g.groupby("guidance")["k"].agg(["mean", "count"])
            out.append(
                f"Generator {gen}, mean synthetic k per guidance (over its {by_g['count'].max()} strategies): "
                + ", ".join(f"g={gs:g}: {k:.3f}" for gs, k in by_g["mean"].items()) + "."
            )
    return out


def _target_findings(fits: pd.DataFrame) -> list[str]:
    """The N each source needs to reach each target, extrapolated from its fit."""
    out: list[str] = []
    targets = fits[fits["target"].notna() & ~fits["ood"]] if "target" in fits else fits.iloc[0:0]
    for (metric, target), g in targets.groupby(["metric", "target"]):
        what = f"loss {target:g}" if metric == "loss" else f"top-1 {1 - target:g}"
        r = g[g["kind"] == "real"]
        s = g[g["kind"] == "synthetic"].sort_values("n_target")
        parts = []
        if len(r):
            r = r.iloc[0]
            parts.append(f"real needs N = {_n(r['n_target'])} {_n_interval(r)}")
        if len(s):
            b = s.iloc[0]
            parts.append(f"the closest synthetic set ({b['source']}) N = {_n(b['n_target'])} {_n_interval(b)}")
        if parts:
            out.append(f"Extrapolated to reach {what} on {g['eval_set'].iloc[0]}: " + "; ".join(parts) + ".")
    return out


def _n(v: float) -> str:
    if not np.isfinite(v):
        return "never (the fit does not reach it)"
    return f"{v:,.0f}" if v < 1e7 else f"{v:.2e}"


def _n_interval(row: Any) -> str:
    lo, hi = row["n_target_low"], row["n_target_high"]
    if isinstance(lo, float) and isinstance(hi, float) and np.isnan(lo) and np.isnan(hi):
        return f"(interval {_how(row, 'n_target')})"
    return f"[{_n(lo)}, {_n(hi)}]"


def write_findings(
    summary_path: str | os.PathLike,
    scaling_path: str | os.PathLike,
    manifest_path: str | os.PathLike,
    study: str,
    path: str | os.PathLike,
) -> None:
    """The rule findings' page: `scaling_findings` of summary.csv and scaling.csv, with the class count
    of the prepared dataset (its manifest)."""
    n_classes = manifest_classes(manifest_path)
    lines = scaling_findings(read_summary(summary_path), read_scaling(scaling_path), n_classes)
    write_html(path, f"Findings: {study}", lines)
