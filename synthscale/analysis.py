"""Analysis: one tidy results table, scaling-law fits, plots and a plain-language findings page."""

from __future__ import annotations

import html
import os
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from synthscale.io import atomic_path, write_csv
from synthscale.plan import parse_source, train_counts

GRID_COLUMNS = ["arch", "source", "kind", "generator", "guidance", "strategy", "n", "n_label"]


def source_columns(source: str, n_label: str, n_train: int, arch: str) -> dict[str, Any]:
    src = parse_source(source)
    return {
        "arch": arch,
        "source": source,
        "kind": src.kind,
        "generator": src.generator or "",
        "guidance": src.guidance if src.guidance is not None else np.nan,
        "strategy": src.strategy or "",
        "n": int(n_train),
        "n_label": n_label,
    }


def _collect(
    sources: Sequence[str], paths: Sequence[str | os.PathLike], arch: str, n_real_train: int
) -> pd.DataFrame:
    frames = []
    for source, path in zip(sources, paths):
        df = pd.read_csv(path, dtype={"n_label": str})
        grid = [
            pd.Series(source_columns(source, n, n_real_train if n == "all" else int(n), arch))
            for n in df["n_label"]
        ]
        frames.append(pd.concat([pd.DataFrame(grid).reset_index(drop=True), df.drop(columns="n_label")], axis=1))
    return pd.concat(frames, ignore_index=True)


def build_summary(
    sources: Sequence[str],
    metric_paths: Sequence[str | os.PathLike],
    arch: str,
    ood: dict[str, bool],
    n_real_train: int,
) -> pd.DataFrame:
    """Tidy table: one row per trained model and eval set, with every grid column."""
    out = _collect(sources, metric_paths, arch, n_real_train)
    out["ood"] = out["eval_set"].map(ood).fillna(False).astype(bool)
    # real and synthetic images of each run; a mixed run's n is their sum (issue 9)
    counts = [train_counts(s, n, n_real_train) for s, n in zip(out["source"], out["n_label"])]
    out["real_n"] = [r for r, _ in counts]
    out["synthetic_n"] = [s for _, s in counts]
    out["n"] = out["real_n"] + out["synthetic_n"]
    cols = GRID_COLUMNS + ["real_n", "synthetic_n", "eval_set", "ood"]
    return out[cols + [c for c in out.columns if c not in cols]]


def build_per_class(
    sources: Sequence[str], paths: Sequence[str | os.PathLike], arch: str, n_real_train: int
) -> pd.DataFrame:
    """Per-class accuracy and loss of every model on every eval set, with the grid columns."""
    return _collect(sources, paths, arch, n_real_train)


def fit_power_law(n: Sequence[float], loss: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Fit L = B * N^-k by least squares on log-log axes; k with a t-based confidence interval.

    k is Fan et al.'s "scaling ability". With fewer than three points the interval is undefined (NaN).
    """
    x, y = np.log(np.asarray(n, float)), np.log(np.asarray(loss, float))
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError("a scaling fit needs at least two distinct N values")
    res = stats.linregress(x, y)
    k = -res.slope
    dof = len(x) - 2
    half = stats.t.ppf(0.5 + level / 2, dof) * res.stderr if dof > 0 else np.nan
    return {
        "k": float(k),
        "k_low": float(k - half),
        "k_high": float(k + half),
        "k_stderr": float(res.stderr) if dof > 0 else np.nan,
        "B": float(np.exp(res.intercept)),
        "r2": float(res.rvalue**2),
        "points": int(len(x)),
    }


def scaling_fits(summary: pd.DataFrame, metric: str = "loss") -> pd.DataFrame:
    """One fit per (source, eval set) over the N grid (the full real set is left out of fits)."""
    summary = summary[summary["kind"] != "mix"]  # mixes have their own analysis (synthscale.mixing)
    rows = []
    df = summary[summary["n_label"] != "all"]
    for (source, eval_set), g in df.groupby(["source", "eval_set"], sort=True):
        g = g.sort_values("n")
        if g["n"].nunique() < 2:
            continue
        first = g.iloc[0]
        rows.append(
            {
                **{c: first[c] for c in ["arch", "source", "kind", "generator", "guidance", "strategy"]},
                "eval_set": eval_set,
                "ood": bool(first["ood"]),
                "metric": metric,
                "n_min": int(g["n"].min()),
                "n_max": int(g["n"].max()),
                **fit_power_law(g["n"], g[metric]),
            }
        )
    return pd.DataFrame(rows)


def _plotting():
    """matplotlib (headless) and seaborn, imported only by the jobs that draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    return plt, sns


def _savefig(fig, path: str | os.PathLike) -> None:
    plt, _ = _plotting()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def _synthetic_label(df: pd.DataFrame) -> pd.Series:
    return df["strategy"] + ", g=" + df["guidance"].map(lambda g: f"{g:g}")


def plot_scaling(summary: pd.DataFrame, metric: str, path: str | os.PathLike, chance: float) -> None:
    """metric against N, log-log for loss: one panel per eval set, synthetic sets against the real baseline."""
    summary = summary[summary["kind"] != "mix"]  # mixes have their own analysis (synthscale.mixing)
    plt, sns = _plotting()
    import matplotlib.ticker  # noqa: F401  (for the tick formatter below)

    import matplotlib
    df = summary[summary["n_label"] != "all"].copy()
    syn = df[df["kind"] == "synthetic"].copy()
    syn["set"] = _synthetic_label(syn)
    real = df[df["kind"] == "real"]
    full = summary[summary["n_label"] == "all"]
    sets = list(dict.fromkeys(summary["eval_set"]))
    fig, axes = plt.subplots(1, len(sets), figsize=(4.6 * len(sets), 4.2), squeeze=False, sharey=True)
    palette = dict(zip(sorted(syn["strategy"].unique()), sns.color_palette("tab10")))
    dashes = ["-", "--", ":", "-."]
    guidances = sorted(syn["guidance"].unique())
    for ax, name in zip(axes[0], sets):
        for (strategy, g), grp in syn[syn["eval_set"] == name].groupby(["strategy", "guidance"]):
            grp = grp.sort_values("n")
            ax.plot(
                grp["n"], grp[metric], marker="o", ms=3, color=palette[strategy],
                ls=dashes[guidances.index(g) % len(dashes)], lw=1.2, label=f"{strategy}, g={g:g}",
            )
        r = real[real["eval_set"] == name].sort_values("n")
        if len(r):
            ax.plot(r["n"], r[metric], marker="s", color="black", lw=2.2, label="real (same N)")
        f = full[full["eval_set"] == name]
        if len(f):
            ax.axhline(f[metric].iloc[0], color="grey", lw=1, ls="--", label=f"real, all {int(f['n'].iloc[0])}")
        if metric != "loss":
            ax.axhline(chance, color="red", lw=0.8, ls=":", label="chance")
        ax.set_xscale("log")
        ns = sorted(df["n"].unique())
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        if metric == "loss":
            ax.set_yscale("log")
        ax.set_title(name + (" (OOD)" if summary.loc[summary.eval_set == name, "ood"].any() else ""))
        ax.set_xlabel("training images N")
        ax.set_ylabel({"loss": "cross-entropy loss", "top1": "top-1 accuracy"}.get(metric, metric))
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(f"{metric} against N: synthetic (colour = prompt strategy, dash = guidance) vs real")
    _savefig(fig, path)


def plot_guidance_strategy(summary: pd.DataFrame, path: str | os.PathLike) -> None:
    """Top-1 at the largest N, guidance x strategy, one heatmap per eval set, real baseline in titles."""
    plt, sns = _plotting()
    df = summary[(summary["kind"] == "synthetic") & (summary["n_label"] != "all")]
    n_max = df["n"].max()
    df = df[df["n"] == n_max]
    real = summary[(summary["kind"] == "real") & (summary["n"] == n_max) & (summary["n_label"] != "all")]
    sets = list(dict.fromkeys(summary["eval_set"]))
    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 3.6), squeeze=False)
    for ax, name in zip(axes[0], sets):
        piv = df[df["eval_set"] == name].pivot_table(index="strategy", columns="guidance", values="top1")
        piv.columns = [f"{c:g}" for c in piv.columns]
        sns.heatmap(piv, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="viridis", ax=ax, cbar=False)
        r = real[real["eval_set"] == name]["top1"]
        base = f"; real at same N: {r.iloc[0]:.2f}" if len(r) else ""
        ax.set_title(f"{name}{base}", fontsize=9)
        ax.set_xlabel("guidance scale")
        ax.set_ylabel("prompt strategy")
    fig.suptitle(f"top-1 of classifiers trained on N={n_max} synthetic images")
    _savefig(fig, path)


def plot_sample_grid(
    images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], title: str,
    path: str | os.PathLike, per_class: int = 8,
) -> None:
    """A grid with one row per class: the first `per_class` images generated for it."""
    plt, sns = _plotting()
    n_classes = len(class_names)
    fig, axes = plt.subplots(
        n_classes, per_class, figsize=(per_class * 0.7, n_classes * 0.75), squeeze=False
    )
    for c in range(n_classes):
        idx = np.flatnonzero(labels == c)[:per_class]
        for j in range(per_class):
            ax = axes[c][j]
            ax.axis("off")
            if j < len(idx):
                im = images[idx[j]]
                ax.imshow(im.squeeze(-1) if im.shape[-1] == 1 else im, cmap="gray", vmin=0, vmax=255)
        axes[c][0].text(-0.15, 0.5, class_names[c], transform=axes[c][0].transAxes, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=9, y=0.995)
    fig.subplots_adjust(top=0.95, hspace=0.08, wspace=0.08)
    _savefig(fig, path)


def findings(summary: pd.DataFrame, fits: pd.DataFrame, n_classes: int) -> list[str]:
    """Plain sentences about this study's numbers; they say so where the result is weak."""
    summary = summary[summary["kind"] != "mix"]  # mixes have their own analysis (synthscale.mixing)
    out: list[str] = []
    chance = 1.0 / n_classes
    ind = summary[~summary["ood"]]
    n_max = summary.loc[summary["n_label"] != "all", "n"].max()
    syn = ind[(ind["kind"] == "synthetic") & (ind["n"] == n_max)]
    real = ind[(ind["kind"] == "real") & (ind["n_label"] != "all") & (ind["n"] == n_max)]
    full = ind[ind["n_label"] == "all"]
    if len(syn):
        best = syn.loc[syn["top1"].idxmax()]
        worst = syn.loc[syn["top1"].idxmin()]
        out.append(
            f"At N={n_max}, the best synthetic set ({best['source']}) reaches top-1 {best['top1']:.3f} "
            f"on {best['eval_set']}; the worst ({worst['source']}) {worst['top1']:.3f}; chance is {chance:.3f}."
        )
        above = (syn["top1"] > 2 * chance).mean()
        out.append(
            f"{above:.0%} of synthetic sets at N={n_max} score more than twice chance on the in-distribution test set."
            + ("" if above == 1 else " The others are weak: their generator setting does not make usable training images.")
        )
    if len(real) and len(syn):
        gap = real["top1"].iloc[0] - syn["top1"].max()
        out.append(
            f"Real images at the same N reach {real['top1'].iloc[0]:.3f}: "
            + (f"the best synthetic set trails them by {gap:.3f}." if gap > 0 else f"the best synthetic set beats them by {-gap:.3f}.")
        )
    if len(full):
        out.append(f"The classifier trained on all {int(full['n'].iloc[0])} real images reaches {full['top1'].iloc[0]:.3f}.")
    for name, grp in summary[summary["ood"]].groupby("eval_set"):
        s = grp[(grp["kind"] == "synthetic") & (grp["n"] == n_max)]
        r = grp[(grp["kind"] == "real") & (grp["n"] == n_max) & (grp["n_label"] != "all")]
        if len(s) and len(r):
            out.append(
                f"Out of distribution ({name}): best synthetic {s['top1'].max():.3f} vs real {r['top1'].iloc[0]:.3f} at N={n_max}."
            )
    if len(fits):
        f = fits[~fits["ood"]]
        fr, fs = f[f["kind"] == "real"], f[f["kind"] == "synthetic"]
        if len(fr) and len(fs):
            out.append(
                f"Scaling ability k (L ~ B N^-k, in distribution): real {fr['k'].iloc[0]:.2f} "
                f"[{fr['k_low'].iloc[0]:.2f}, {fr['k_high'].iloc[0]:.2f}]; synthetic from {fs['k'].min():.2f} to {fs['k'].max():.2f} "
                f"(Fan et al. on ImageNet: about 0.53 real, 0.20 to 0.27 synthetic)."
            )
            wide = (fs["k_high"] - fs["k_low"]).median()
            points = int(fs["points"].max())
            out.append(
                f"With only {points} N values per fit, k has no confidence interval: treat these slopes as rough."
                if not np.isfinite(wide)
                else f"The median 95% interval of a synthetic k spans {wide:.2f}: with {points} N values "
                "per fit, slopes that differ by less than that are not told apart here."
            )
        if len(fs):
            by_g = fs.groupby("guidance")["k"].mean()
            out.append(
                "Mean synthetic k by guidance: " + ", ".join(f"g={g:g}: {k:.2f}" for g, k in by_g.items()) + "."
            )
    return out


def write_findings_html(lines: Sequence[str], path: str | os.PathLike, title: str) -> None:
    body = "\n".join(f"<li>{html.escape(s)}</li>" for s in lines)
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body><h2>{html.escape(title)}</h2><ul>\n{body}\n</ul>"
        "<p>Numbers are computed from results/summary.csv and results/scaling.csv of this run.</p>"
        "</body></html>\n"
    )
    with atomic_path(path) as tmp:
        tmp.write_text(page)


def write_table(path: str | os.PathLike, df: pd.DataFrame) -> None:
    write_csv(path, df)


def read_summary(path: str | os.PathLike) -> pd.DataFrame:
    """summary.csv with its string columns kept as strings (empty generator/strategy for real rows)."""
    df = pd.read_csv(path, dtype={"n_label": str, "generator": str, "strategy": str})
    for c in ("generator", "strategy"):
        df[c] = df[c].fillna("")
    return df
