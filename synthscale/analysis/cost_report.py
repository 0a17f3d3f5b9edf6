"""Compute cost: Snakemake's benchmark files read back to the grid point each measures, the cost
table (compute hours per training source, and top-1 gained over chance per hour: cost.csv), its plot
and its findings sentences.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from synthscale.analysis.report import plotting, save, source_label, write_html
from synthscale.analysis.tables import grid_rows, read_summary
from synthscale.data.real import manifest_classes
from synthscale.io import write_csv
from synthscale.study.plan import BENCHMARK_SUFFIX, benchmark_parts, parse_run_key, split_set_key
from synthscale.study.sources import parse_source


# --------------------------------------------------------------------------------------------------
# Snakemake's benchmark files, read back
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


# --------------------------------------------------------------------------------------------------
# the cost table, its plot and findings
# --------------------------------------------------------------------------------------------------


def cost_table(
    summary: pd.DataFrame, bench: pd.DataFrame, chance: float, eval_set: str = "test",
    images_per_job: int | None = None,
) -> pd.DataFrame:
    """Compute hours per training source, and top-1 gained over chance per compute hour.

    A synthetic source costs the generation of the images it trains on plus one replicate of its
    training: every N of the grid, each at the mean over its seeds (so sources with more seeds,
    such as real with `train.real_seeds`, are not charged more per replicate, nor real for its
    full-set run; `training_total_h` holds every run).
    Generation is charged per image: a set's generation hours (every benchmarked job of it) times the
    share of its images that the source uses at its largest N (`used_images` of `generated_images`,
    each job writing `images_per_job`; a filtered set uses the whole set its filter read). A set generated beyond the grid's largest N (over-generated
    for a filter, or for a mix) would otherwise charge every source of it for images it never reads;
    with `images_per_job` None the whole set is charged. A generator trained by the workflow is
    shared by its sets and is reported in its own column, not split. Real data costs its training runs. The accuracy is the mean over seeds at the largest N on
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
        set_h = b_gen["s"].sum() / 3600 if len(b_gen) else (0.0 if first["kind"] == "real" else np.nan)
        used, made = _used_images(source, at, b_gen, images_per_job)
        gen_h = set_h * used / made if np.isfinite(used) and np.isfinite(made) and made > 0 else set_h
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
            "generation_h": gen_h, "generation_set_h": set_h, "used_images": used, "generated_images": made,
            "training_h": train_h, "total_h": total, "training_total_h": train_all_h,
            "generator_training_h": b_gtrain["s"].sum() / 3600 if len(b_gtrain) else np.nan,
            "benchmarks": int(recorded), "n_max": nm, "seeds": int(at["seed"].nunique()) if len(at) else 0,
            "top1_at_n_max": top1, "gain_over_chance": gain,
            "gain_per_hour": gain / total if np.isfinite(total) and total > 0 else np.nan,
        })
    return pd.DataFrame(rows)


def _used_images(
    source: str, at: pd.DataFrame, b_gen: pd.DataFrame, images_per_job: int | None
) -> tuple[float, float]:
    """(images of its set a source needs at its largest N, images the set's benchmarked generation jobs
    wrote); NaN for what is unknown (no synthetic part, no benchmarked job or no `images_per_job`).

    A filtered set needs every image its filter read, which is the set over-generated for it: it is
    charged the whole set. With only some blocks benchmarked, the cost per image comes from those."""
    made = float(b_gen["path"].nunique() * images_per_job) if images_per_job and len(b_gen) else np.nan
    if parse_source(source).filter is not None:
        return made, made
    used = float(at["synthetic_n"].max()) if "synthetic_n" in at and len(at) else np.nan
    return used, made


def write_cost(
    summary_path: str | os.PathLike, bench_root: str | os.PathLike, manifest_path: str | os.PathLike,
    table_path: str | os.PathLike, plot_path: str | os.PathLike, findings_path: str | os.PathLike,
    eval_set: str = "test", images_per_job: int | None = None,
) -> pd.DataFrame:
    """cost.csv, its plot and its sentences from the summary and every benchmark file; chance at 1 / the
    class count of the prepared dataset (its manifest)."""
    summary = read_summary(summary_path)
    bench = read_benchmarks(bench_root)
    table = cost_table(summary, bench, 1.0 / manifest_classes(manifest_path), eval_set, images_per_job)
    write_csv(table_path, table)
    plot_cost(table, plot_path)
    write_html(findings_path, "Compute cost per grid point", cost_findings(table, eval_set))
    return table


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
            f"compute seconds (generation of the images it trains on + one replicate of training: every N, "
            f"mean over seeds); generation is {(syn['generation_h'].sum() / syn['total_h'].sum()):.0%} of it."
        )
    if "generated_images" in table and (table["used_images"] < table["generated_images"]).any():
        over = table[table["used_images"] < table["generated_images"]]
        out.append(
            f"{len(over)} sources train on part of a larger set (over-generated for a filter, or a mix's share): "
            "each is charged its images' share of the set's generation, "
            + ", ".join(f"{s} {u:.0f} of {m:.0f}" for s, u, m in
                        zip(over["source"], over["used_images"], over["generated_images"])) + "."
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
