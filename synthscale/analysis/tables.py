"""Analysis: the tidy results tables every analysis reads. summary.csv and per_class.csv are built
from each model's evaluation metrics, with every grid column; summary.csv and scaling.csv are read
back; `grid_rows` and `metric_values` pick the scaling grid's rows and the fitted quantity.

Each arm's analysis is a module of its own: the classifier arm's scaling fits, plots and findings
(synthscale.analysis.scaling_report), the quality of the synthetic sets (quality_report), the compute
cost (cost_report), mixes (mixing, mix_report), CLIP (clip_report), filters (filter_report) and
fine-tuned generators (finetune_report); what they share to draw and word is synthscale.analysis.report.

Layering: tables imports io and study.sources only; the report modules import tables, never the reverse.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import pandas as pd

from synthscale.data.real import split_count
from synthscale.io import write_csv
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


def write_summaries(
    sources: Sequence[str],
    metric_paths: Sequence[str | os.PathLike],
    per_class_paths: Sequence[str | os.PathLike],
    arch: str,
    ood: dict[str, bool],
    manifest_path: str | os.PathLike,
    summary_path: str | os.PathLike,
    per_class_path: str | os.PathLike,
) -> None:
    """The rule summary's outputs: summary.csv (`build_summary`) and per_class.csv (`build_per_class`);
    the real training split's size is the prepared dataset's (its manifest)."""
    n_real_train = split_count(manifest_path, "train")
    write_table(summary_path, build_summary(sources, metric_paths, arch, ood, n_real_train))
    write_table(per_class_path, build_per_class(sources, per_class_paths, arch, n_real_train))


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
# the scaling grid's rows and fitted quantity (synthscale.analysis.scaling_report, cost_report)
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
