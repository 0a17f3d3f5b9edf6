"""The quality of the synthetic sets: one tidy row per (generator, guidance, strategy) with CAS from
the classifier summary (quality.csv), each metric's trend across guidance, the per-class table
(quality_per_class.csv), the trade-off, FID/CAS and per-class plots, the findings, and the grid of
each set's first images (rule sample_grid).

The per-class scaling slopes (`per_class_slopes`, from the classifier arm's per_class.csv) live here,
with their within-set correlation to per-class recognizability (`within_set_spearman`) and its plot
(`plot_per_class_slope`): the quality summary is their only reader, setting each class's slope
beside its recognizability.

Rules the findings follow: those in synthscale.analysis.report.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from synthscale.analysis import fits as F
from synthscale.analysis.report import fmt_num, plotting, save, set_label, write_html
from synthscale.analysis.tables import read_summary
from synthscale.data.real import class_names
from synthscale.data.shards import load_arrays
from synthscale.io import write_csv
from synthscale.study.sources import synthetic_source


# --------------------------------------------------------------------------------------------------
# the quality summary: one row per synthetic set, CAS from the summary, per-class slopes, trends
# --------------------------------------------------------------------------------------------------


def quality_table(sets: Sequence[dict[str, Any]], summary: pd.DataFrame | None, eval_set: str) -> pd.DataFrame:
    """One tidy row per (generator, guidance, strategy): the per-set metrics plus CAS: the
    `eval_set` top-1 of classifiers trained only on the set at the largest N (mean and sd over seeds)."""
    df = pd.DataFrame([{**s, "guidance": float(s["guidance"])} for s in sets])
    if summary is not None and len(summary):
        syn = summary[(summary["kind"] == "synthetic") & (summary["eval_set"] == eval_set)
                      & (summary["n_label"] != "all")]
        at = syn[syn["n"] == syn["n"].max()] if len(syn) else syn
        cas = at.groupby(["generator", "guidance", "strategy"])["top1"].agg(["mean", "std", "count"])
        cas = cas.rename(columns={"mean": "cas", "std": "cas_sd", "count": "cas_seeds"}).reset_index()
        df = df.merge(cas, on=["generator", "guidance", "strategy"], how="left")
    else:
        df["cas"] = np.nan
    first = ["generator", "guidance", "strategy", "n_images", "recognizability", "diversity",
             "fid", "kid", "kid_std", "inception_score", "inception_score_std", "cas", "cas_sd"]
    cols = [c for c in first if c in df.columns] + [c for c in df.columns if c not in first]
    return df[cols].sort_values(["generator", "strategy", "guidance"]).reset_index(drop=True)


def _spearman(x: Sequence[float], y: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return float("nan")
    return float(spearmanr(x[ok], y[ok]).statistic)


def within_set_spearman(per_class: pd.DataFrame, x: str = "f1", y: str = "slope") -> tuple[float, int, int]:
    """Spearman rho of `x` and `y` over classes *within* each synthetic set (generator, guidance,
    strategy), averaged over sets weighted by their points, so differences between sets (one set
    better and steeper than another) do not make a correlation. Returns (rho, points, sets used);
    sets with under 3 points or a constant column are left out."""
    keys = [c for c in ("generator", "guidance", "strategy") if c in per_class.columns]
    rhos, weights = [], []
    groups = per_class.groupby(keys, dropna=False) if keys else [((), per_class)]
    for _, g in groups:
        g = g[[x, y]].astype(float).dropna()
        r = _spearman(g[x], g[y]) if len(g) >= 3 else np.nan
        if np.isfinite(r):
            rhos.append(r)
            weights.append(len(g))
    if not rhos:
        return float("nan"), 0, 0
    return float(np.average(rhos, weights=weights)), int(sum(weights)), len(rhos)


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


def per_class_slopes(per_class: pd.DataFrame, eval_set: str = "test") -> pd.DataFrame:
    """Per (source, class): k of the class's loss ~ N^-k over every (seed, N) point of one eval set.

    Saturated points (loss 0, which has no logarithm) are dropped and counted, never clipped."""
    df = per_class[(per_class["eval_set"] == eval_set) & (per_class["n_label"].astype(str) != "all")]
    rows = []
    for (source, c), g in df.groupby(["source", "class_index"]):
        rows.append({"source": source, "class_index": int(c), **F.per_class_slope(g["n"], g["loss"])})
    return pd.DataFrame(rows, columns=["source", "class_index", "slope", "slope_r2", "n_points", "n_dropped"])


def summarize_quality(
    set_jsons: Sequence[str | os.PathLike],
    set_per_class: Sequence[str | os.PathLike],
    summary_csv: str | os.PathLike | None,
    per_class_csv: str | os.PathLike | None,
    reference_json: str | os.PathLike | None,
    outputs: dict[str, str | os.PathLike],
    eval_set: str = "test",
    generators: Sequence[dict[str, Any]] = (),
) -> pd.DataFrame:
    """Collect every set's quality, add CAS and per-class slopes, write the table, plots, findings.

    With fine-tuned `generators` (the config's list), the findings compare each with its base
    (Azizi et al.: fine-tuning should lower FID and raise CAS).

    `outputs` holds the paths `table`, `per_class`, `tradeoff`, `fid_cas`, `per_class_plot`, `findings`.
    """
    sets = [json.loads(Path(p).read_text()) for p in set_jsons]
    summary = read_summary(summary_csv) if summary_csv else None
    df = quality_table(sets, summary, eval_set)
    slopes = pd.DataFrame(columns=["source", "class_index", "slope"])
    if per_class_csv:
        pc_eval = pd.read_csv(per_class_csv, dtype={"n_label": str, "generator": str, "strategy": str})
        slopes = per_class_slopes(pc_eval, eval_set)
    pcs = []
    for s, path in zip(sets, set_per_class):
        pc = pd.read_csv(path)
        src = synthetic_source(s["generator"], float(s["guidance"]), s["strategy"])
        mine = slopes[slopes["source"] == src].drop(columns="source")
        pc = pc.merge(mine, on="class_index", how="left") if len(mine) else pc.assign(slope=np.nan)
        pcs.append(pc.assign(generator=s["generator"], guidance=float(s["guidance"]), strategy=s["strategy"]))
    per_class = pd.concat(pcs, ignore_index=True) if pcs else pd.DataFrame(columns=["f1", "slope"])
    reference = json.loads(Path(reference_json).read_text()) if reference_json else None
    real_top1 = None
    if summary is not None:
        r = summary[(summary["kind"] == "real") & (summary["eval_set"] == eval_set) & (summary["n_label"] != "all")]
        if len(r):
            real_top1 = float(r[r["n"] == r["n"].max()]["top1"].mean())
    # within each set, then averaged: pooled (set, class) points would let between-set gaps drive it
    rho, points, _ = within_set_spearman(per_class) if len(per_class) else (np.nan, 0, 0)
    write_csv(outputs["table"], df)
    write_csv(outputs["per_class"], per_class)
    plot_tradeoff(df, outputs["tradeoff"], reference)
    plot_fid_cas(df, outputs["fid_cas"], real_top1)
    plot_per_class_slope(per_class, outputs["per_class_plot"], rho)
    lines = quality_findings(df, trends(df), reference, rho, points, real_top1)
    if any(g.get("kind") == "finetuned" for g in generators):
        from synthscale.analysis.finetune_report import finetune_findings

        lines += finetune_findings(df, list(generators))
    write_html(outputs["findings"], "Quality of the synthetic sets: findings", lines, table=df)
    return df


# --------------------------------------------------------------------------------------------------
# quality plots
# --------------------------------------------------------------------------------------------------


def plot_tradeoff(df: pd.DataFrame, path: str | os.PathLike, reference: dict[str, Any] | None = None) -> None:
    """Recognizability against diversity: one panel per generator, one line per strategy."""
    plt, sns = plotting()
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
    save(fig, path)


def plot_fid_cas(df: pd.DataFrame, path: str | os.PathLike, real_top1: float | None = None) -> None:
    """FID and CAS against guidance, one line per (generator, strategy) (no aggregation)."""
    plt, sns = plotting()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.5))
    d = df.assign(line=df["generator"] + ": " + df["strategy"])
    sns.lineplot(data=d, x="guidance", y="fid", hue="line", marker="o", ax=a, estimator=None)
    a.set_title("FID to the real test set (lower is closer)")
    a.set_ylabel("FID")
    a.set_xlabel("guidance scale")
    if "cas" in d and d["cas"].notna().any():
        sns.lineplot(data=d, x="guidance", y="cas", hue="line", marker="o", ax=b, estimator=None)
        if "cas_sd" in d and d["cas_sd"].notna().any():
            for _, g in d.groupby("line"):
                b.errorbar(g["guidance"], g["cas"], yerr=g["cas_sd"].fillna(0), fmt="none", ecolor="grey", capsize=2)
    if real_top1 is not None and np.isfinite(real_top1):
        b.axhline(real_top1, color="black", ls="--", label="real, same N")
        b.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
    b.set_title("CAS: real-test top-1, trained on synthetic only")
    b.set_xlabel("guidance scale")
    b.set_ylabel("CAS (top-1)")
    save(fig, path)


def plot_per_class_slope(per_class: pd.DataFrame, path: str | os.PathLike, rho: float | None) -> None:
    """Per-class recognizability (F1) against the per-class scaling slope k, one point per (set, class)."""
    plt, sns = plotting()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    d = per_class.dropna(subset=["f1", "slope"]) if len(per_class) else per_class
    if len(d):
        style = "generator" if d["generator"].nunique() > 1 else "strategy"
        sns.scatterplot(data=d, x="f1", y="slope", hue="guidance", style=style, ax=ax, palette="viridis")
        if len(d) > 2 and np.ptp(d["f1"]) > 0:
            # the band is a bootstrap: seeded, so the same tables draw the same figure
            sns.regplot(data=d, x="f1", y="slope", scatter=False, ax=ax, color="grey", seed=0)
    title = "per-class recognizability vs scaling slope"
    if rho is not None and np.isfinite(rho):
        title += f" (within-set Spearman {rho:.2f})"
    ax.set_title(title)
    ax.set_xlabel("per-class recognizability (judge F1)")
    ax.set_ylabel("per-class scaling slope k (loss ~ N^-k)")
    save(fig, path)


def write_sample_grid(
    shard: str | os.PathLike, classes_csv: str | os.PathLike, generator: str, guidance: str, strategy: str,
    path: str | os.PathLike,
) -> None:
    """The rule sample_grid's figure: `plot_sample_grid` of a set's first shard, rows named by the
    prepared class table, titled by the set (generator, guidance, prompt strategy)."""
    images, labels, _ = load_arrays([shard], mode="RGB")
    title = f"{generator}, guidance {guidance}, prompts: {strategy} (first shard)"
    plot_sample_grid(images, labels, class_names(classes_csv), title, path)


def plot_sample_grid(
    images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], title: str,
    path: str | os.PathLike, per_class: int = 8,
) -> None:
    """A grid with one row per class: the first `per_class` images generated for it."""
    plt, _ = plotting()
    n_classes = len(class_names)
    fig, axes = plt.subplots(n_classes, per_class, figsize=(per_class * 0.7, n_classes * 0.75), squeeze=False)
    for c in range(n_classes):
        idx = np.flatnonzero(labels == c)[:per_class]
        for j in range(per_class):
            ax = axes[c][j]
            ax.axis("off")
            if j < len(idx):
                im = images[idx[j]]
                ax.imshow(im.squeeze(-1) if im.shape[-1] == 1 else im, cmap="gray", vmin=0, vmax=255)
        axes[c][0].text(-0.15, 0.5, class_names[c], transform=axes[c][0].transAxes, ha="right",
                        va="center", fontsize=8)
    fig.suptitle(title, fontsize=9, y=0.995)
    fig.subplots_adjust(top=0.95, hspace=0.08, wspace=0.08)
    save(fig, path)


# --------------------------------------------------------------------------------------------------
# findings
# --------------------------------------------------------------------------------------------------


def quality_findings(
    df: pd.DataFrame,
    trends: pd.DataFrame,
    reference: dict[str, Any] | None,
    per_class_rho: float,
    per_class_points: int,
    real_top1: float | None,
) -> list[str]:
    """What the quality numbers say about the guidance trade-off, computed, never assumed.

    The trend "holds" for a (generator, strategy) line when, at every step up the guidance grid,
    diversity falls and recognizability rises; a rise then a fall does not count."""
    if len(trends) == 0:
        return ["No synthetic sets were measured."]
    return (_trend_findings(trends) + _peak_findings(df, trends) + _set_quality_findings(df)
            + _reference_findings(df, reference) + _best_set_findings(df, real_top1)
            + _per_class_findings(per_class_rho, per_class_points))


def _trend_findings(trends: pd.DataFrame) -> list[str]:
    """Whether diversity falls and recognizability rises with guidance, over the (generator,
    strategy) lines."""
    n = len(trends)
    div_falls = int((trends["trend_diversity"] < 0).sum())
    rec_rises = int((trends["trend_recognizability"] > 0).sum())
    both = int(((trends["trend_diversity"] < 0) & (trends["trend_recognizability"] > 0)).sum())
    if both == n:
        return [
            f"The paper's trend shows on this study: in all {n} (generator, strategy) lines, diversity "
            "falls and recognizability rises as guidance grows."
        ]
    how = "does not show" if both == 0 else "shows only in part"
    return [
        f"The paper's trend {how} on this study: diversity falls with guidance in {div_falls} of {n} "
        f"(generator, strategy) lines, recognizability rises in {rec_rises}, and both in {both}."
    ]


def _peak_findings(df: pd.DataFrame, trends: pd.DataFrame) -> list[str]:
    """The lines whose recognizability peaks below the largest guidance, with a hypothesis when
    they are most."""
    out: list[str] = []
    peaks = trends["recognizability_peak"].dropna() if "recognizability_peak" in trends else pd.Series(dtype=float)
    top = df["guidance"].max()
    interior = int((peaks < top).sum())
    if interior:
        out.append(
            f"Recognizability peaks below the largest guidance ({top:g}) in {interior} of {len(peaks)} lines "
            f"(at guidance {', '.join(f'{p:g}' for p in peaks)})."
        )
        if interior * 2 > len(peaks):
            out.append(
                f"Hypothesis for the {interior} interior peaks, not tested here: past the peak, stronger "
                "guidance pushes samples away from what the judge learned from real images."
            )
    return out


def _set_quality_findings(df: pd.DataFrame) -> list[str]:
    """One sentence per synthetic set: recognizability, diversity, FID and CAS."""
    return [
        f"{set_label(r)}: recognizability {fmt_num(r.get('recognizability'))}, diversity "
        f"{fmt_num(r.get('diversity'), 4)}, FID {fmt_num(r.get('fid'), 2)}, CAS {fmt_num(r.get('cas'))}"
        + (f" (sd {fmt_num(r.get('cas_sd'))} over {int(r['cas_seeds'])} seeds)" if "cas_seeds" in r and r["cas_seeds"] > 1 else "")
        + "."
        for _, r in df.iterrows()
    ]


def _reference_findings(df: pd.DataFrame, reference: dict[str, Any] | None) -> list[str]:
    """Real test images under the same judge, and how many synthetic sets are more diverse."""
    out: list[str] = []
    ref = reference or {}
    if ref.get("diversity") is not None:
        more = int((df["diversity"] > ref["diversity"]).sum())
        out.append(
            f"Real test images score recognizability {fmt_num(ref.get('recognizability'))} and diversity "
            f"{fmt_num(ref['diversity'], 4)} under the same judge; {more} of {len(df)} synthetic sets are more "
            "diverse by this measure."
        )
        if more == len(df):
            out.append(
                f"Hypothesis, since all {more} sets exceed the real diversity, not tested here: judge features "
                "of samples unlike the real images spread more, so this diversity may also count noise."
            )
    return out


def _best_set_findings(df: pd.DataFrame, real_top1: float | None) -> list[str]:
    """The best CAS (against real images at the same N) and the lowest FID."""
    out: list[str] = []
    if "cas" not in df or df["cas"].isna().all():
        out.append("CAS is not measured: no classifier was trained on the synthetic sets (train.supervised: false).")
    else:
        b = df.loc[df["cas"].idxmax()]
        line = f"Best CAS {b['cas']:.3f}: {set_label(b)}"
        if real_top1 is not None and np.isfinite(real_top1):
            line += f"; real images at the same N reach {real_top1:.3f}"
        out.append(line + ".")
    if "fid" in df and df["fid"].notna().any():
        b = df.loc[df["fid"].idxmin()]
        out.append(f"Lowest FID {b['fid']:.2f}: {set_label(b)}.")
    return out


def _per_class_findings(per_class_rho: float, per_class_points: int) -> list[str]:
    """The within-set correlation of per-class recognizability and per-class slope."""
    if per_class_rho is not None and np.isfinite(per_class_rho):
        return [
            f"Within each synthetic set, over its classes ({per_class_points} (set, class) points in all), the "
            f"Spearman correlation between per-class recognizability and per-class scaling slope averages "
            f"{per_class_rho:.2f} over sets (the paper reports a positive one)."
        ]
    return [f"Per-class recognizability and slope could not be correlated ({per_class_points} points)."]
