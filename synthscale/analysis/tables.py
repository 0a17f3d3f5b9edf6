"""Analysis: the tidy results tables, scaling fits over every seed, compute cost, and the quality
summary. Drawing and wording live in synthscale.analysis.report; the fits in synthscale.analysis.fits.

Layering: tables imports fits, report and study.plan; none of them imports tables.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from synthscale.analysis import fits as F
from synthscale.analysis import report
from synthscale.io import write_csv
from synthscale.study.plan import BENCHMARK_SUFFIX, benchmark_parts, parse_run_key, split_set_key
from synthscale.study.sources import parse_source, train_counts

GRID_COLUMNS = ["arch", "source", "kind", "generator", "guidance", "strategy", "n", "n_label", "seed"]
# the error rate 1 - top1 is fitted like a loss: it falls as a power of N
METRICS = {"loss": "loss", "error": "top1"}


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
        if "seed" not in df.columns:  # one training seed per run: it is seed 0
            df["seed"] = 0
        grid = [
            pd.Series(source_columns(source, n, n_real_train if n == "all" else int(n), arch))
            for n in df["n_label"]
        ]
        frames.append(pd.concat([pd.DataFrame(grid).reset_index(drop=True), df.drop(columns="n_label")], axis=1))
    out = pd.concat(frames, ignore_index=True)
    out["seed"] = out["seed"].astype(int)
    return out


def build_summary(
    sources: Sequence[str],
    metric_paths: Sequence[str | os.PathLike],
    arch: str,
    ood: dict[str, bool],
    n_real_train: int,
) -> pd.DataFrame:
    """Tidy table: one row per trained model (source, N, seed) and eval set, with every grid column."""
    out = _collect(sources, metric_paths, arch, n_real_train)
    out["ood"] = [bool(ood.get(name, False)) for name in out["eval_set"]]
    if "seed" not in out.columns:
        out["seed"] = 0
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


def write_table(path: str | os.PathLike, df: pd.DataFrame) -> None:
    write_csv(path, df)


def read_summary(path: str | os.PathLike, fill_seed: bool = True) -> pd.DataFrame:
    """summary.csv with its string columns (n_label, source, generator, strategy) kept as strings and
    empty names as "". `seed` is 0 where the table has none, unless `fill_seed` is False (the mix
    analysis reads a missing `seed` column as "one run per source and N")."""
    df = pd.read_csv(path, dtype={"n_label": str, "generator": str, "strategy": str, "source": str})
    for c in ("generator", "strategy"):
        if c in df:
            df[c] = df[c].fillna("")
    if fill_seed and "seed" not in df.columns:
        df["seed"] = 0
    return df


def read_scaling(path: str | os.PathLike) -> pd.DataFrame:
    """scaling.csv back; empty (no columns) when no source had two N values to fit."""
    try:
        return pd.read_csv(path, dtype={"generator": str, "strategy": str})
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


# --------------------------------------------------------------------------------------------------
# scaling fits
# --------------------------------------------------------------------------------------------------


def grid_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """Real-only and synthetic-only rows: the scaling grid (mixes have their own analysis in
    synthscale.analysis.mixing)."""
    return summary[summary["kind"].isin(["real", "synthetic"])]


def metric_values(df: pd.DataFrame, metric: str) -> pd.Series:
    """The fitted quantity: the loss, or the error rate 1 - top1."""
    if metric not in METRICS:
        raise ValueError(f"unknown scaling metric {metric!r}; choose from {sorted(METRICS)}")
    return df["loss"] if metric == "loss" else 1.0 - df["top1"]


def scaling_fits(
    summary: pd.DataFrame,
    metric: str | Sequence[str] = "loss",
    targets: dict[str, float | None] | None = None,
    n_draws: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """One row per (source, eval set, metric): both forms, the better one, k's t interval over the
    (seed, N) points, the slope ratio to real's with Fieller's interval on the N values both have, and
    the N that reaches `targets[metric]` (the full real set, n_label "all", is left out of the fits).
    Every interval has a `*_interval` column: its method, or "undetermined: why" with a NaN interval
    (`synthscale.analysis.fits`; coverage measured by benchmarks/fit_coverage.py). `n_draws` is unused (the
    saturating form's N-to-target interval, once a bootstrap, is undetermined: coverage not measured)."""
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
                fit = F.fit_source(values, targets.get(m), level, n_draws, seed)
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


def per_class_slopes(per_class: pd.DataFrame, eval_set: str = "test") -> pd.DataFrame:
    """Per (source, class): k of the class's loss ~ N^-k over every (seed, N) point of one eval set.

    Saturated points (loss 0, which has no logarithm) are dropped and counted, never clipped."""
    df = per_class[(per_class["eval_set"] == eval_set) & (per_class["n_label"].astype(str) != "all")]
    rows = []
    for (source, c), g in df.groupby(["source", "class_index"]):
        rows.append({"source": source, "class_index": int(c), **F.per_class_slope(g["n"], g["loss"])})
    return pd.DataFrame(rows, columns=["source", "class_index", "slope", "slope_r2", "n_points", "n_dropped"])


# --------------------------------------------------------------------------------------------------
# compute cost from Snakemake's benchmark files
# --------------------------------------------------------------------------------------------------

def parse_benchmark(path: str | os.PathLike, root: str | os.PathLike) -> dict[str, Any]:
    """What grid point a benchmark file measures: Plan.benchmark read back, from its path under
    `{results}/benchmarks/` (`{rule}/{key}.tsv`), by Plan's own keys and the source grammar.

    The key is a model's `run_key` (source, `n{N}`, `s{seed}`; an older key without the seed reads
    as seed NaN), a source alone (an evaluation), a synthetic set's `set_key` (its jobs are charged
    to the unfiltered set's generator, guidance and strategy; a filter's `f-{filter}` or a block's
    `block-{block}` after it is kept in `rest` as spelled), or a name of its own (a generator, a
    dataset), kept in `rest`.
    """
    rule, *parts = benchmark_parts(path, root)
    key = "/".join(parts)
    out: dict[str, Any] = {"rule": rule, "source": "", "generator": "", "guidance": np.nan,
                           "strategy": "", "n_label": "", "seed": np.nan, "rest": ""}
    run = parse_run_key(key)
    if run is not None:
        source, out["n_label"], seed = run
        out["seed"] = np.nan if seed is None else seed
    else:
        source = key if _is_source(key) else None
    if source is not None:
        out["source"], syn = source, parse_source(source)
    else:
        syn, out["rest"] = split_set_key(key) or (None, key)
    if syn is not None and syn.kind != "real":
        out["generator"], out["guidance"], out["strategy"] = syn.generator, syn.guidance, syn.strategy
    return out


def _is_source(name: str) -> bool:
    try:
        parse_source(name)
    except ValueError:
        return False
    return True


def stage_of(rule: str) -> str:
    """The cost category of a rule: generation, generator training, classifier training, the rest."""
    if rule.startswith("train_generator") or rule.startswith("finetune"):
        return "generator"
    if "generat" in rule:
        return "generation"
    if rule.startswith("train"):
        return "training"
    if rule.startswith("evaluate"):
        return "evaluation"
    return "other"


def read_benchmarks(root: str | os.PathLike) -> pd.DataFrame:
    """Every Snakemake benchmark TSV under `root`, one row per repeat, with its grid point.

    Missing folder or files give an empty table: a study whose rules record nothing has no cost."""
    root = Path(root)
    cols = ["rule", "stage", "source", "generator", "guidance", "strategy", "n_label", "seed", "rest",
            "s", "max_rss", "cpu_time", "path"]
    rows = []
    if root.is_dir():
        for path in sorted(root.rglob(f"*{BENCHMARK_SUFFIX}")):
            try:
                tsv = pd.read_csv(path, sep="\t")
            except (pd.errors.EmptyDataError, pd.errors.ParserError):
                continue
            if "s" not in tsv.columns or tsv.empty:
                continue
            point = parse_benchmark(path, root)
            for _, r in tsv.iterrows():
                rows.append({**point, "stage": stage_of(point["rule"]), "s": float(r["s"]),
                             "max_rss": pd.to_numeric(r.get("max_rss"), errors="coerce"),
                             "cpu_time": pd.to_numeric(r.get("cpu_time"), errors="coerce"),
                             "path": str(path)})
    return pd.DataFrame(rows, columns=cols)


def cost_table(summary: pd.DataFrame, bench: pd.DataFrame, chance: float, eval_set: str = "test") -> pd.DataFrame:
    """Compute hours per training source, and top-1 gained over chance per compute hour.

    A synthetic source costs its generation (every benchmarked job of its set) plus one replicate of
    its training: every N of the grid, each at the mean over its seeds (so sources with more seeds,
    such as real with `train.real_seeds`, are not charged more per replicate, nor real for its
    full-set run; `training_total_h` holds every run).
    A generator trained by the workflow is shared by its sets and is reported in its own column, not
    split. Real data costs its training runs. The accuracy is the mean over seeds at the largest N on
    `eval_set`. Sources with no benchmark files get NaN hours.
    """
    df = summary[(summary["n_label"] != "all") & (summary["eval_set"] == eval_set)]
    if df.empty:
        return pd.DataFrame()
    grid = grid_rows(df)
    n_max = int((grid if len(grid) else df)["n"].max())  # a mix's n (real + synthetic) is not on the grid
    on_grid = grid[grid["kind"] == "synthetic"] if (grid["kind"] == "synthetic").any() else grid
    grid_labels = set((on_grid if len(on_grid) else df)["n_label"].astype(str))  # the n_images axis
    rows = []
    for source, g in df.groupby("source", sort=True):
        first = g.iloc[0]
        nm = n_max if first["kind"] in ("real", "synthetic") else int(g["n"].max())
        at = g[g["n"] == nm]
        # the classifier runs of the source (its CLIP runs, rule train_clip, are the CLIP arm's cost)
        b_train = bench[(bench["rule"] == "train_classifier") & (bench["source"] == source)]
        if first["kind"] in ("synthetic", "mix"):
            sel = (bench["generator"] == first["generator"]) & (bench["strategy"] == first["strategy"]) & (
                np.isclose(bench["guidance"].astype(float), float(first["guidance"])))
            b_gen = bench[(bench["stage"] == "generation") & sel]
            is_gen = bench["stage"] == "generator"
            b_gtrain = bench[is_gen & ((bench["rest"] == first["generator"]) | (bench["generator"] == first["generator"]))]
        else:
            b_gen = b_gtrain = bench.iloc[0:0]
        recorded = len(b_train) + len(b_gen)
        gen_h = b_gen["s"].sum() / 3600 if len(b_gen) else (0.0 if first["kind"] == "real" else np.nan)
        # one replicate on the N grid (real's full-set and off-grid mix-baseline runs are not in it)
        b_rep = b_train[b_train["n_label"].isin(grid_labels)] if first["kind"] in ("real", "synthetic") else b_train
        train_h = b_rep.groupby("n_label")["s"].mean().sum() / 3600 if len(b_rep) else np.nan
        train_all_h = b_train["s"].sum() / 3600 if len(b_train) else np.nan
        total = gen_h + train_h if recorded else np.nan
        top1 = float(at["top1"].mean()) if len(at) else np.nan
        gain = top1 - chance
        rows.append({
            "source": source, "kind": first["kind"], "generator": first["generator"],
            "guidance": first["guidance"], "strategy": first["strategy"],
            "generation_h": gen_h, "training_h": train_h, "total_h": total, "training_total_h": train_all_h,
            "generator_training_h": b_gtrain["s"].sum() / 3600 if len(b_gtrain) else np.nan,
            "benchmarks": int(recorded), "n_max": nm, "seeds": int(at["seed"].nunique()) if len(at) else 0,
            "top1_at_n_max": top1, "gain_over_chance": gain,
            "gain_per_hour": gain / total if np.isfinite(total) and total > 0 else np.nan,
        })
    return pd.DataFrame(rows)


def write_cost(
    summary_path: str | os.PathLike, bench_root: str | os.PathLike, n_classes: int,
    table_path: str | os.PathLike, plot_path: str | os.PathLike, findings_path: str | os.PathLike,
    eval_set: str = "test",
) -> pd.DataFrame:
    """cost.csv, its plot and its sentences from the summary and every benchmark file."""
    summary = read_summary(summary_path)
    bench = read_benchmarks(bench_root)
    table = cost_table(summary, bench, 1.0 / n_classes, eval_set)
    write_csv(table_path, table)
    report.plot_cost(table, plot_path)
    report.write_html(findings_path, "Compute cost per grid point", report.cost_findings(table, eval_set))
    return table


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
        src = f"synthetic/{s['generator']}/g{float(s['guidance']):g}/{s['strategy']}"
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
    report.plot_tradeoff(df, outputs["tradeoff"], reference)
    report.plot_fid_cas(df, outputs["fid_cas"], real_top1)
    report.plot_per_class_slope(per_class, outputs["per_class_plot"], rho)
    lines = report.quality_findings(df, trends(df), reference, rho, points, real_top1)
    if any(g.get("kind") == "finetuned" for g in generators):
        from synthscale.analysis.finetune_report import finetune_findings

        lines += finetune_findings(df, list(generators))
    report.write_html(outputs["findings"], "Quality of the synthetic sets: findings", lines, table=df)
    return df
