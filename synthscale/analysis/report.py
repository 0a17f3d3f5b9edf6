"""The report: the classifier study's plots, findings sentences and HTML pages, and the plotting and
HTML helpers the mix, CLIP and filter reports share.

Functions here take finished tables (pandas) and draw or word them; they compute nothing a table
does not hold beyond means, counts and differences, and they import nothing of synthscale at module
level but io (study.plan inside one function), so the analysis and quality stages both use them.

Rules the findings follow:
- every sentence states a number computed from the tables it is given;
- an explanation is written only as a hypothesis, and only when the numbers show the pattern it
  would explain;
- nothing is averaged silently: a mean says over what.
"""

from __future__ import annotations

import html
import os
from typing import Any, Sequence

import numpy as np
import pandas as pd

from synthscale.io import atomic_path

# --------------------------------------------------------------------------------------------------
# plumbing
# --------------------------------------------------------------------------------------------------


def plotting():
    """matplotlib (headless) and seaborn, imported only by the jobs that draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    return plt, sns


def save(fig, path: str | os.PathLike) -> None:
    """Write a figure as PNG atomically and close it."""
    plt, _ = plotting()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def write_html(
    path: str | os.PathLike,
    title: str,
    lines: Sequence[str],
    table: pd.DataFrame | None = None,
    source: str = "this run's result tables",
) -> None:
    """A findings page: one list item per sentence, optionally the table the numbers come from, and
    where they come from (`source`)."""
    e = html.escape
    body = "\n".join(f"<li>{e(s)}</li>" for s in lines)
    tab = table.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="") if table is not None else ""
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title></head>"
        f"<body><h2>{e(title)}</h2><ul>\n{body}\n</ul>{tab}"
        f"<p>Every number is computed from {e(source)}.</p></body></html>\n"
    )
    with atomic_path(path) as tmp:
        tmp.write_text(page)


def _f(v: Any, p: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{p}f}"


def _n(v: float) -> str:
    if not np.isfinite(v):
        return "never (the fit does not reach it)"
    return f"{v:,.0f}" if v < 1e7 else f"{v:.2e}"


def _how(row: Any, name: str) -> str:
    """How an interval was made, or why it is undetermined (the `{name}_interval` column)."""
    v = row.get(f"{name}_interval", "") if hasattr(row, "get") else ""
    return str(v) if isinstance(v, str) and v else "undetermined"


def _n_interval(row: Any) -> str:
    lo, hi = row["n_target_low"], row["n_target_high"]
    if isinstance(lo, float) and isinstance(hi, float) and np.isnan(lo) and np.isnan(hi):
        return f"(interval {_how(row, 'n_target')})"
    return f"[{_n(lo)}, {_n(hi)}]"


def set_label(row: pd.Series | dict, with_generator: bool = True) -> str:
    g = f"{row['strategy']}, g={float(row['guidance']):g}"
    return f"{row['generator']}: {g}" if with_generator else g


def source_label(source: str) -> str:
    """A training source for a plot axis: `real`, a set's label, with its filter and its real part."""
    from synthscale.study.sources import parse_source

    src = parse_source(source)
    if src.kind == "real":
        return "real"
    label = set_label({"generator": src.generator, "strategy": src.strategy, "guidance": src.guidance})
    if src.filter:
        label += f" [{src.filter}]"
    return f"{src.real_n} real + {label}" if src.kind == "mix" else label


def seed_stats(df: pd.DataFrame, value: str, by: Sequence[str]) -> pd.DataFrame:
    """Mean, sd and count over training seeds of `value`, per `by`."""
    return df.groupby(list(by), dropna=False)[value].agg(["mean", "std", "count"]).reset_index()


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


def plot_cost(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Compute hours per source (generation + training, stacked) and top-1 gained per hour."""
    plt, _ = plotting()
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 0.8 + 0.3 * max(len(table), 4)), sharey=True)
    if len(table) and table["total_h"].notna().any():
        t = table.assign(label=[source_label(s) for s in table["source"]])
        y = np.arange(len(t))
        a.barh(y, t["generation_h"].fillna(0), color="tab:orange", label="generation")
        a.barh(y, t["training_h"].fillna(0), left=t["generation_h"].fillna(0), color="tab:blue", label="training")
        a.set_yticks(y, t["label"], fontsize=7)
        a.set_xlabel("compute hours (wall clock; training: one replicate, every N at its mean over seeds)")
        a.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, frameon=False)
        colors = ["black" if k == "real" else "tab:green" for k in t["kind"]]
        b.barh(y, t["gain_per_hour"].fillna(0), color=colors)
        b.set_xlabel("top-1 above chance per compute hour")
    else:
        a.text(0.5, 0.5, "no benchmark recorded", ha="center", va="center", transform=a.transAxes)
        b.axis("off")
    fig.suptitle("cost per grid point, from Snakemake benchmark files")
    save(fig, path)


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
            k_part = (f"k = {s['k']:.3f} [{_f(s['k_low'])}, {_f(s['k_high'])}]" if np.isfinite(s["k_low"])
                      else f"k = {s['k']:.3f}, interval")
            out.append(
                f"{s['source']} ({seeds} seed{'s' if seeds != 1 else ''}): {k_part} ({_how(s, 'k')}); ratio to "
                f"real {_f(s['ratio'], 2)}"
                + (f" [{_f(s['ratio_low'], 2)}, {_f(s['ratio_high'], 2)}] ({_how(s, 'ratio')})"
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
        f"{set_label(r)}: recognizability {_f(r.get('recognizability'))}, diversity "
        f"{_f(r.get('diversity'), 4)}, FID {_f(r.get('fid'), 2)}, CAS {_f(r.get('cas'))}"
        + (f" (sd {_f(r.get('cas_sd'))} over {int(r['cas_seeds'])} seeds)" if "cas_seeds" in r and r["cas_seeds"] > 1 else "")
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
            f"Real test images score recognizability {_f(ref.get('recognizability'))} and diversity "
            f"{_f(ref['diversity'], 4)} under the same judge; {more} of {len(df)} synthetic sets are more "
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


def cost_findings(table: pd.DataFrame, eval_set: str = "test") -> list[str]:
    """Sentences on compute cost and accuracy per hour, from cost.csv's numbers."""
    if table is None or not len(table) or not table["total_h"].notna().any():
        return ["No benchmark recorded: the rules of this run wrote no benchmark files, so no cost is reported."]
    out = []
    missing = table[table["total_h"].isna()]
    if len(missing):
        out.append(f"No benchmark recorded for {len(missing)} of {len(table)} sources: {', '.join(missing['source'])}.")
    t = table.dropna(subset=["total_h"])
    real, syn = t[t["kind"] == "real"], t[t["kind"] == "synthetic"]
    if len(syn):
        out.append(
            f"A synthetic set costs {syn['total_h'].min() * 3600:.0f} to {syn['total_h'].max() * 3600:.0f} "
            f"compute seconds (generation + one replicate of training: every N, mean over seeds); generation is "
            f"{(syn['generation_h'].sum() / syn['total_h'].sum()):.0%} of it."
        )
    if len(real):
        r = real.iloc[0]
        out.append(
            f"Training on real images costs {r['total_h'] * 3600:.0f} compute seconds per replicate "
            f"({r['training_total_h'] * 3600:.0f} over all {int(r['seeds'])} seeds and the full set)."
        )
    if len(syn) and syn["gain_per_hour"].notna().any():
        b = syn.loc[syn["gain_per_hour"].idxmax()]
        line = (
            f"Top-1 above chance on {eval_set} per compute hour at N={int(b['n_max'])}: best synthetic "
            f"{b['gain_per_hour']:.2f} ({b['source']})"
        )
        if len(real) and np.isfinite(real["gain_per_hour"].iloc[0]):
            line += f", real {real['gain_per_hour'].iloc[0]:.2f}"
        out.append(line + ".")
    gt = table["generator_training_h"].dropna()
    if len(gt):
        out.append(
            f"Training the generators themselves took {gt.groupby(table['generator']).first().sum() * 3600:.0f} "
            "seconds, shared by their sets and not counted above."
        )
    return out
