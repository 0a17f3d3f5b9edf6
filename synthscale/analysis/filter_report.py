"""Filtering in the report: each filtered set against its unfiltered set.

One row per (set, filter), `none` included: recognizability, diversity, FID (quality stage), CAS
(real-test top-1 of the classifier trained on the largest N, evaluate stage), and what the filter
cost (generated images looked at per kept image). A plot and plain sentences go with the table.

A `judge` filter keeps images by the quality stage's judge, and that same judge then measures the
filtered set's recognizability: its gain there is partly by construction. The table says which
judge measured each row (`recognizability_judge`: `selecting` or `independent`), and the findings
say so and point to CAS (a classifier trained on the set, scored on real test images), which no
filter saw, as the independent measure.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import pandas as pd

from synthscale.io import write_csv
from synthscale.study.sources import parse_source
from synthscale.analysis.report import write_html

METRICS = ["recognizability", "diversity", "fid", "cas"]


def _read_json(path: str | os.PathLike) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def _cas(eval_csv: str | os.PathLike, eval_set: str, n_label: str) -> float:
    df = pd.read_csv(eval_csv, dtype={"n_label": str})
    row = df[(df["eval_set"] == eval_set) & (df["n_label"] == str(n_label))]
    return float(row["top1"].iloc[0]) if len(row) else float("nan")


def filter_table(
    sources: Sequence[str],
    counts: Sequence[str | os.PathLike],
    quality: Sequence[str | os.PathLike],
    base_quality: Sequence[str | os.PathLike],
    cas: Sequence[str | os.PathLike],
    base_cas: Sequence[str | os.PathLike],
    eval_set: str,
    n_label: str,
) -> pd.DataFrame:
    """Rows for each filtered set and its unfiltered set (filter `none`), one column per metric."""
    rows: dict[tuple, dict[str, Any]] = {}
    for src_name, c, q, bq, ca, bca in zip(sources, counts, quality, base_quality, cas, base_cas):
        src = parse_source(src_name)
        key = {"generator": src.generator, "guidance": src.guidance, "strategy": src.strategy}
        base = (src.generator, src.guidance, src.strategy, "none")
        if base not in rows:
            bqj = _read_json(bq)
            rows[base] = {
                **key, "filter": "none", **{m: bqj.get(m) for m in METRICS[:3]},
                "cas": _cas(bca, eval_set, n_label), "seen": None, "kept": None, "cost": 1.0,
                "pass_rate": 1.0, "recognizability_judge": "independent",
            }
        qj, cj = _read_json(q), _read_json(c)
        rows[(src.generator, src.guidance, src.strategy, src.filter)] = {
            **key, "filter": src.filter, **{m: qj.get(m) for m in METRICS[:3]},
            "cas": _cas(ca, eval_set, n_label), "seen": cj["seen"], "kept": cj["kept"],
            "cost": cj["cost"], "pass_rate": cj["pass_rate"],
            # a judge filter selects with the very judge that measures recognizability
            "recognizability_judge": "selecting" if cj.get("kind") == "judge" else "independent",
        }
    df = pd.DataFrame(list(rows.values()))
    df["set"] = df["strategy"] + ", g=" + df["guidance"].map(lambda g: f"{g:g}") + " (" + df["generator"] + ")"
    return df


def deltas(df: pd.DataFrame) -> pd.DataFrame:
    """Each filtered row minus its unfiltered row, per metric."""
    base = df[df["filter"] == "none"].set_index("set")
    out = df[df["filter"] != "none"].copy()
    for m in METRICS:
        out[f"d_{m}"] = out[m].astype(float).values - base.loc[out["set"], m].astype(float).values
    return out


def findings(df: pd.DataFrame, n_label: str) -> list[str]:
    """Plain sentences: what each filter cost and what it changed."""
    out = []
    for _, r in deltas(df).iterrows():
        out.append(
            f"Filter {r['filter']} on {r['set']}: kept {int(r['kept'])} of the first {int(r['seen'])} "
            f"generated images (pass rate {r['pass_rate']:.2f}, so {r['cost']:.2f} generated per kept image). "
            f"Recognizability {r['d_recognizability']:+.3f}, diversity {r['d_diversity']:+.3f}, "
            f"FID {r['d_fid']:+.2f}, CAS at N={n_label} {r['d_cas']:+.3f} against the unfiltered set."
        )
        if r.get("recognizability_judge") == "selecting":
            out.append(
                f"  Filter {r['filter']} kept images by the judge that also measures recognizability, so "
                "that gain is partly by construction, not independent evidence; CAS, from a classifier "
                f"that no filter saw, is the independent measure ({r['d_cas']:+.3f})."
            )
        if r["d_recognizability"] > 0 and r["d_cas"] <= 0:
            out.append(
                f"  Filter {r['filter']} made {r['set']} more recognizable without raising CAS: "
                "keeping only confident images can trade diversity (and hard classes) for it."
            )
    return out


def plot(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """One panel per metric: each set's value without and with each filter."""
    from synthscale.analysis.report import plotting, save

    plt, _ = plotting()

    filters = list(dict.fromkeys(df["filter"]))
    sets = list(dict.fromkeys(df["set"]))
    fig, axes = plt.subplots(1, len(METRICS), figsize=(3.4 * len(METRICS), 3.2), squeeze=False)
    width = 0.8 / max(len(filters), 1)
    for ax, m in zip(axes[0], METRICS):
        for j, f in enumerate(filters):
            sub = df[df["filter"] == f].set_index("set").reindex(sets)
            ax.bar([i + j * width for i in range(len(sets))], sub[m].astype(float), width, label=f)
        ax.set_xticks([i + width * (len(filters) - 1) / 2 for i in range(len(sets))], sets, rotation=30, ha="right", fontsize=7)
        ax.set_title(m.upper() if m in ("fid", "cas") else m, fontsize=9)
    axes[0][-1].legend(title="filter", fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # off the bars
    fig.tight_layout()
    save(fig, path)


def write_report(
    df: pd.DataFrame, outputs: dict[str, str | os.PathLike], n_label: str
) -> list[str]:
    write_csv(outputs["table"], df)
    plot(df, outputs["plot"])
    lines = findings(df, n_label)
    write_html(outputs["findings"], "Filtering", lines, source="this run's quality and filter tables")
    return lines


def write_filter_report(sources: Sequence[str], inputs: Any, eval_set: str, n_label: str, outputs: Any) -> list[str]:
    """The rule filter_report's outputs: `filter_table` of `inputs` (counts, quality, base_quality, cas
    and base_cas: path lists, one per source, as a dict or the rule's input), then `write_report` to
    `outputs` (table, plot, findings)."""
    paths = (inputs[k] for k in ("counts", "quality", "base_quality", "cas", "base_cas"))
    df = filter_table(sources, *paths, eval_set, n_label)
    return write_report(df, {k: outputs[k] for k in ("table", "plot", "findings")}, n_label)
