"""The CLIP arm's tables, scaling fits, plot and findings (kept apart from the classifier analysis).

Fits: zero-shot loss against N per (source, eval set) as L = B * N^-k by least squares on log-log
axes (k: Fan et al.'s "scaling ability"), with the same functions and intervals as the classifier
arm (`synthscale.analysis.fits`): k's t interval over every (seed, N) point, and the synthetic/real slope
ratio with Fieller's interval on the N values both have; each NaN with its reason where undetermined.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from synthscale.data.real import manifest_classes
from synthscale.io import write_csv
from synthscale.study.sources import parse_source, synthetic_name
from synthscale.analysis.noise import diff_margin, pooled_sd
from synthscale.analysis.report import write_html

# Fan et al. 2023, CLIP zero-shot ImageNet scaling ability, read from their figure
FAN_CLIP_K = {"real": 0.387, "synthetic": 0.355}


def clip_source_columns(source: str) -> dict[str, Any]:
    src = parse_source(source)
    real = src.kind == "real"
    return {
        "source": source,
        "kind": src.kind,
        "generator": "" if real else src.generator,
        "guidance": np.nan if real else src.guidance,
        "strategy": "" if real else src.strategy,
    }


def build_clip_summary(
    sources: Sequence[str],
    metric_paths: Sequence[str | os.PathLike],
    ood: dict[str, bool],
) -> pd.DataFrame:
    """One row per CLIP (source, N, seed) and eval set: source columns, N, n_pairs, metrics.

    N is the run's total image-text pairs for every kind (`n_pairs` = N): a synthetic + real run at N
    holds N pairs, a clip.mix_real_fraction share of them real, so sources compare at equal pairs."""
    frames = []
    for source, path in zip(sources, metric_paths):
        df = pd.read_csv(path, dtype={"n_label": str})
        cols = clip_source_columns(source)
        df.insert(0, "n", df["n_label"].astype(int))
        for k, v in reversed(cols.items()):
            df.insert(0, k, v)
        df.insert(df.columns.get_loc("n") + 1, "n_pairs", df["n"])
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out["ood"] = out["eval_set"].map(ood).fillna(False).astype(bool)
    return out


def clip_scaling(summary: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per (source, eval set): k, B, k's t interval (`fits.fit_power_law`), and k / k_real with
    Fieller's interval (`fits.slope_ratio`); `k_interval` / `k_ratio_interval` name the method or say
    why it is undetermined."""
    from synthscale.analysis import fits as F

    rows, cells = [], {}
    for (source, eval_set), g in summary.groupby(["source", "eval_set"], sort=False):
        g = g.sort_values("n")
        seeds = g["seed"] if "seed" in g.columns else pd.Series(0, index=g.index)
        values = {(int(s), int(n)): float(v) for s, n, v in zip(seeds, g["n"], g["loss"])}
        cells[(source, eval_set)] = values
        pl = F.fit_power_law(g["n"], g["loss"], level)
        at = g[g["n"] == g["n"].max()]
        rows.append(
            {
                **clip_source_columns(source),
                "eval_set": eval_set,
                "k": pl["k"],
                "B": pl["B"],
                "k_lo": pl["k_low"],
                "k_hi": pl["k_high"],
                "k_interval": pl["k_interval"],
                "n_points": int(g["n"].nunique()),  # N values (each may hold several seeds)
                "n_values": pl["n_values"],
                "n_min": int(g["n"].min()),
                "n_max": int(g["n"].max()),
                "loss_at_max_n": float(at["loss"].mean()),  # over seeds
                "top1_at_max_n": float(at["top1"].mean()),
            }
        )
    out = pd.DataFrame(rows)
    ratio, rlo, rhi, how = [], [], [], []
    for r in out.itertuples():
        real = cells.get(("real", r.eval_set))
        if real is None or r.kind == "real":
            ratio.append(np.nan), rlo.append(np.nan), rhi.append(np.nan), how.append("")
            continue
        res = F.slope_ratio(cells[(r.source, r.eval_set)], real, level)
        ratio.append(res["ratio"]), rlo.append(res["ratio_low"]), rhi.append(res["ratio_high"])
        how.append(res["ratio_interval"])
    out["k_ratio_to_real"], out["k_ratio_lo"], out["k_ratio_hi"], out["k_ratio_interval"] = ratio, rlo, rhi, how
    return out


def eval_set_classes(summary: pd.DataFrame, n_classes: int | None = None) -> dict[str, int]:
    """Per eval set, the classes it is scored over: the summary's `n_classes` column (a subset set such
    as ImageNet-R scores over its 200), else `n_classes` (the manifest's) where the column is absent."""
    sets = list(dict.fromkeys(summary["eval_set"]))
    if "n_classes" in summary.columns:
        per = summary.groupby("eval_set")["n_classes"].max()
        out = {e: int(per[e]) for e in sets if pd.notna(per[e])}
    else:
        out = {}
    for e in sets:
        if e not in out:
            if n_classes is None:
                raise ValueError(f"eval set {e!r}: the summary has no n_classes and none is given")
            out[e] = int(n_classes)
    return out


def zero_shot_table(summary: pd.DataFrame, n_classes: int | None = None) -> pd.DataFrame:
    """Zero-shot top-1 and loss of every CLIP, one row per (source, N), one column pair per eval set,
    each a mean over the run's `seeds`, and each eval set's chance top-1 (`chance_top1_{set}`: 1 over the
    classes it is scored over)."""
    wide = summary.pivot_table(index=["source", "kind", "n", "n_pairs"], columns="eval_set",
                               values=["top1", "loss"], sort=False)
    wide.columns = [f"{m}_{e}" for m, e in wide.columns]
    wide = wide.reset_index()
    seed_col = summary["seed"] if "seed" in summary.columns else pd.Series(0, index=summary.index)
    seeds = summary.assign(_seed=seed_col).groupby(["source", "n"])["_seed"].nunique()
    wide.insert(wide.columns.get_loc("n_pairs") + 1, "seeds",
                [int(seeds[(s, n)]) for s, n in zip(wide["source"], wide["n"])])
    for e, c in eval_set_classes(summary, n_classes).items():
        wide[f"chance_top1_{e}"] = 1.0 / c
    return wide


def _label(source: str) -> str:
    src = parse_source(source)
    if src.kind == "real":
        return "real"
    name = f"{src.generator} g{src.guidance:g} {src.strategy}"
    return f"synthetic + real ({name})" if src.kind == "mixed" else f"synthetic ({name})"


def plot_clip_scaling(summary: pd.DataFrame, path: str | os.PathLike, metric: str = "loss") -> None:
    """Zero-shot `metric` against N, one panel per eval set: real (black), each synthetic set (colour,
    solid) and its synthetic + real run (same colour, dashed), on log-log axes."""
    import matplotlib.ticker

    from synthscale.analysis.report import plotting, save

    plt, _ = plotting()
    sets = list(dict.fromkeys(summary["eval_set"]))
    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 3.6), squeeze=False)
    synthetic = [s for s in dict.fromkeys(summary["source"]) if parse_source(s).kind == "synthetic"]
    colours = {s: plt.cm.tab10(i % 10) for i, s in enumerate(synthetic)}
    for ax, e in zip(axes[0], sets):
        d = summary[summary["eval_set"] == e]
        for source, g in d.groupby("source", sort=False):
            seeds = g
            g = g.groupby("n", as_index=False)[metric].mean()  # the line joins seed means
            kind = parse_source(source).kind
            if kind == "real":
                style = {"color": "black", "lw": 2.2}
            else:
                base = synthetic_name(source)
                style = {"color": colours.get(base, "grey"), "ls": "--" if kind == "mixed" else "-"}
            ax.plot(g["n"], g[metric], marker="o", label=_label(source), **style)
            if len(seeds) > len(g):  # each replicate seed as a small point
                ax.scatter(seeds["n"], seeds[metric], s=8, alpha=0.5, color=style["color"])
        ood = bool(d["ood"].iloc[0]) if "ood" in d and len(d) else False
        ax.set_title(f"{e}{' (OOD)' if ood else ''}")
        ax.set_xscale("log")
        if metric == "loss":
            ax.set_yscale("log")
        ns = sorted(d["n"].unique())
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.2f"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%.2f"))
        ax.set_xlabel("N (synthetic or real image-text pairs)")
        ax.set_ylabel(f"zero-shot {metric}")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)


def _interval(lo: float, hi: float, n_points: int | None, how: Any = "") -> str:
    how = how if isinstance(how, str) and how else "undetermined"
    if np.isnan(lo) or np.isnan(hi):
        return f"(no interval, {how})"
    where = f", {n_points} points" if n_points is not None else ""
    return f"(95% interval [{lo:.3f}, {hi:.3f}]: {how}{where})"


def seed_means(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (source, kind, eval set, N): mean loss and top-1 over replicate seeds, the loss's seed SD
    (NaN with one seed) and the number of seeds."""
    g = summary.groupby(["source", "kind", "eval_set", "n"], sort=False)
    out = g[["loss", "top1"]].mean()
    out["loss_sd"] = g["loss"].std(ddof=1)
    out["seeds"] = g.size()
    return out.reset_index()


def pooled_loss_sd(means: pd.DataFrame) -> tuple[float, int]:
    """(SD, degrees of freedom) of one run's loss, pooled over the N with 2 or more seeds of `means`
    (rows of `seed_means`, one source and eval set); (NaN, 0) where no N has 2 seeds."""
    m = means[means["seeds"] >= 2]
    df = int((m["seeds"] - 1).sum())
    if df <= 0:
        return float("nan"), 0
    return pooled_sd(((m["seeds"] - 1) * m["loss_sd"] ** 2).sum(), df), df


def _seed_count(seeds: pd.Series) -> str:
    lo, hi = int(seeds.min()), int(seeds.max())
    return f"{lo} seed{'s' * (lo > 1)}" if lo == hi else f"{lo}-{hi} seeds"


def real_trend(means: pd.DataFrame, eval_set: str) -> str | None:
    """Whether real's zero-shot loss falls with N on one eval set, stated against its seed spread."""
    r = means[(means["kind"] == "real") & (means["eval_set"] == eval_set)].sort_values("n")
    if len(r) < 2:
        return None
    pts = ", ".join(
        f"{l:.3f}" + (f" ± {sd:.3f}" if np.isfinite(sd) else "") + f" at N = {int(n)}"
        for n, l, sd in zip(r["n"], r["loss"], r["loss_sd"])
    )
    falls = bool(np.all(np.diff(r["loss"].to_numpy()) < 0))
    drop = float(r["loss"].iloc[0] - r["loss"].iloc[-1])
    sd, df = pooled_loss_sd(r)  # pooled seed SD over every N, with its degrees of freedom
    s = f"On {eval_set}, real's zero-shot loss (mean ± seed SD over {_seed_count(r['seeds'])}) is {pts}: "
    if not np.isfinite(sd):
        return s + ("it falls with N, but with one seed per N nothing measures its noise: a weak result."
                    if falls else "it does not fall with N at every step, and one seed measures no noise: no scaling shown.")
    margin, q = diff_margin(sd, df, int(r["seeds"].iloc[0]), int(r["seeds"].iloc[-1]))
    if falls and drop > margin:
        return s + (f"it falls at every step, by {drop:.3f} from the smallest to the largest N, more than the "
                    f"95% margin of that difference ({margin:.3f}: t = {q:.2f} with {df} degrees of freedom "
                    "times the pooled seed SD's standard error).")
    if drop > 0:
        return s + (f"it falls by {drop:.3f} from the smallest to the largest N"
                    f"{'' if falls else ', not at every step'}, within the 95% margin of the seed noise "
                    f"({margin:.3f}, t = {q:.2f} with {df} degrees of freedom): a weak result at this size.")
    return s + "it does not fall with N: on this eval set the CLIP arm shows no learning with N at this size."


def _noise(sd: float, df: int, n_a: int, n_b: int) -> tuple[float, str]:
    margin, q = diff_margin(sd, df, n_a, n_b)
    if not np.isfinite(margin):
        return margin, "no N has 2 real seeds, so no seed SD measures the noise"
    return margin, (f"95% margin {margin:.3f}: t = {q:.2f} with {df} degrees of freedom x real's pooled "
                    f"single-run seed SD {sd:.3f} x sqrt(1/{n_a} + 1/{n_b}) for {n_a} against {n_b} seeds")


def loss_comparisons(means: pd.DataFrame) -> list[str]:
    """Per eval set at the largest N every source has: each non-real source's seed-mean loss against
    real's, and which source has the lowest loss, each difference judged against a t margin from real's
    pooled single-run seed SD (`pooled_loss_sd`, `diff_margin`); within it, or without an SD, undetermined."""
    out: list[str] = []
    for e, d in means.groupby("eval_set", sort=False):
        n_max = d.groupby("source")["n"].max().min()
        at = d[d["n"] == n_max].set_index("source")
        if "real" not in at.index:
            continue
        sd, df = pooled_loss_sd(d[d["kind"] == "real"])
        real = at.loc["real"]
        for src in at.index:
            if parse_source(src).kind == "real":
                continue
            row = at.loc[src]
            diff = float(row["loss"] - real["loss"])
            margin, why = _noise(sd, df, int(row["seeds"]), int(real["seeds"]))
            if np.isfinite(margin) and abs(diff) > margin:
                verdict = f"{'above' if diff > 0 else 'below'} real's {real['loss']:.3f} by {abs(diff):.3f}, beyond the noise ({why})"
            else:
                verdict = (f"{diff:+.3f} against real's {real['loss']:.3f}: undetermined, "
                           f"{'within the noise' if np.isfinite(margin) else 'no noise estimate'} ({why})")
            out.append(
                f"On {e} at N = {int(n_max)}, {_label(src)} ({_seed_count(row[['seeds']])}) has zero-shot loss "
                f"{row['loss']:.3f}, {verdict}; top-1 {row['top1']:.3f} against real's {real['top1']:.3f} "
                f"({_seed_count(real[['seeds']])})."
            )
        order = at["loss"].sort_values()
        best, runner = order.index[0], order.index[1] if len(order) > 1 else None
        s = f"On {e} at N = {int(n_max)}, the lowest mean zero-shot loss is {_label(best)}'s ({order.iloc[0]:.3f})"
        if runner is None:
            out.append(s + ".")
            continue
        gap = float(order.iloc[1] - order.iloc[0])
        margin, why = _noise(sd, df, int(at.loc[best, "seeds"]), int(at.loc[runner, "seeds"]))
        if np.isfinite(margin) and gap > margin:
            out.append(s + f", below the next, {_label(runner)}'s ({order.iloc[1]:.3f}), by {gap:.3f}, beyond the noise ({why}).")
        else:
            out.append(s + f", but {_label(runner)}'s ({order.iloc[1]:.3f}) is only {gap:.3f} above: which is lowest is "
                       f"undetermined, {'within the noise' if np.isfinite(margin) else 'no noise estimate'} ({why}).")
    return out


def clip_findings(summary: pd.DataFrame, scaling: pd.DataFrame, n_classes: int | None, reference_set: str) -> list[str]:
    """Sentences, each stating numbers from the tables, next to Fan et al.'s CLIP results; per-N
    numbers are means over replicate seeds. Chance is per eval set (`eval_set_classes`: the summary's
    n_classes, else `n_classes`)."""
    out: list[str] = []
    classes = eval_set_classes(summary, n_classes)
    summary = seed_means(summary)
    ref = summary[summary["eval_set"] == reference_set]
    real = ref[ref["kind"] == "real"].sort_values("n")
    if len(real):
        last = real.iloc[-1]
        chance = 1.0 / classes[reference_set]
        out.append(
            f"The CLIP trained on {int(last['n'])} real image-text pairs reaches zero-shot top-1 "
            f"{last['top1']:.3f} on {reference_set}, {last['top1'] - chance:+.3f} against chance "
            f"({chance:.3f} over its {classes[reference_set]} classes, {last['top1'] / chance:.1f} times chance); "
            f"its zero-shot loss is {last['loss']:.3f} against {np.log(classes[reference_set]):.3f} for uniform logits."
        )
    for e in dict.fromkeys(summary["eval_set"]):
        trend = real_trend(summary, e)
        if trend:
            out.append(trend)
    for e, g in scaling.groupby("eval_set", sort=False):
        r = g[g["kind"] == "real"]
        for row in g[g["kind"] != "real"].itertuples():
            if getattr(row, "n_values", row.n_points) < 3:
                # two points fix a line exactly: no interval, and a ratio to a near-zero real slope explodes
                out.append(f"On {e}, {_label(row.source)} has only {getattr(row, 'n_values', row.n_points)} N values, so its zero-shot "
                           f"slope (k = {row.k:.3f}) has no interval and is not compared with real's: add "
                           "clip.n_images values to fit it.")
                continue
            s = (f"On {e}, {_label(row.source)} scales with k = {row.k:.3f} "
                 f"{_interval(row.k_lo, row.k_hi, row.n_points, getattr(row, 'k_interval', ''))}")
            if len(r):
                real_row = r.iloc[0]
                s += (f" against real's k = {real_row['k']:.3f} "
                      f"{_interval(real_row['k_lo'], real_row['k_hi'], real_row['n_points'], real_row.get('k_interval'))}"
                      f": a ratio of {row.k_ratio_to_real:.2f} "
                      f"{_interval(row.k_ratio_lo, row.k_ratio_hi, None, getattr(row, 'k_ratio_interval', ''))}")
            out.append(s + ".")
    out += loss_comparisons(summary)  # at the largest common N, per eval set
    ratio = FAN_CLIP_K["synthetic"] / FAN_CLIP_K["real"]
    out.append(
        f"For comparison, Fan et al. read k = {FAN_CLIP_K['synthetic']} for synthetic against "
        f"{FAN_CLIP_K['real']} for real on zero-shot ImageNet (ratio {ratio:.2f}: synthetic slightly "
        "below real), with synthetic + real the best of the three."
    )
    return out


def write_clip_report(
    sources: Sequence[str],
    metric_paths: Sequence[str | os.PathLike],
    ood: dict[str, bool],
    manifest_path: str | os.PathLike,
    reference_set: str,
    study: str,
    out: Any,
) -> None:
    """The rule clip_report's outputs from the CLIP runs' metric files: `out` maps summary, scaling and
    table (CSV), plot (PNG) and findings (HTML) to their paths (a dict, or the rule's output); the class
    count is the prepared dataset's (its manifest). The findings page names the folder it is written to."""
    n_classes = manifest_classes(manifest_path)
    summary = build_clip_summary(sources, metric_paths, ood)
    scaling = clip_scaling(summary)
    write_csv(out["summary"], summary)
    write_csv(out["scaling"], scaling)
    write_csv(out["table"], zero_shot_table(summary, n_classes))
    plot_clip_scaling(summary, out["plot"])
    write_html(out["findings"], f"{study}: CLIP, synthetic against real image-text pairs",
               clip_findings(summary, scaling, n_classes, reference_set),
               source=f"this run's CLIP tables ({Path(out['findings']).parent.name}/ in its results folder)")
