"""Figures and findings of real + synthetic mixes (issue 9), drawn from summary.csv alone.

- Fan et al.'s scarce-real figure: top-1 and loss against real N, one line per synthetic amount added.
- Azizi et al.'s augmentation figure: top-1 against the synthetic amount added to the full real set.
- The exchange rate: how many real images a synthetic set (alone or added to real) is worth.
- Findings: sentences with the numbers, saying where synthetic data helped and where it hurt.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from synthscale.analysis.report import plotting, save, write_html
from synthscale.analysis.mixing import all_multiples, amount_label, read_rates
from synthscale.analysis.tables import read_summary
from synthscale.data.real import manifest_classes
from synthscale.study.sources import parse_source, synthetic_name

METRIC_LABELS = {"top1": "top-1 accuracy", "loss": "cross-entropy loss"}


def _plt():
    return plotting()[0]


_save = save


def _eval_sets(summary: pd.DataFrame) -> list[tuple[str, bool]]:
    firsts = summary.groupby("eval_set", sort=False)["ood"].first()
    return list(firsts.items())


def _mix_rows(summary: pd.DataFrame) -> pd.DataFrame:
    mix = summary[summary["kind"] == "mix"].copy()
    mix["set"] = mix["source"].map(synthetic_name)
    mix["real_all"] = mix["source"].map(lambda s: parse_source(s).real_n == "all")
    return mix


def _title(name: str, ood: bool) -> str:
    return name + (" (OOD)" if ood else "")


def plot_scarce_real(summary: pd.DataFrame, mix: dict[str, Any], path: str | os.PathLike, chance: float) -> None:
    """Fan et al.: top-1 (top row) and loss (bottom row) against real N, one line per amount added."""
    plt = _plt()
    sets = _eval_sets(summary)
    rows = _mix_rows(summary)
    rows["amount"] = [
        amount_label(r, s, all_multiples(mix))
        for r, s in zip(rows["real_n"], rows["synthetic_n"])
    ]
    real = summary[summary["kind"] == "real"]
    amounts = sorted(rows["amount"].unique(), key=lambda a: (a.endswith("x"), float(a[1:].rstrip("x"))))
    colours = {a: plt.cm.viridis(0.15 + 0.75 * i / max(1, len(amounts) - 1)) for i, a in enumerate(amounts)}
    styles = ["-", "--", ":", "-."]
    syn_sets = list(dict.fromkeys(rows["set"]))
    fig, axes = plt.subplots(2, len(sets), figsize=(4.6 * len(sets), 7.4), squeeze=False, sharex=True)
    for j, (name, ood) in enumerate(sets):
        for i, metric in enumerate(["top1", "loss"]):
            ax = axes[i][j]
            r = real[real["eval_set"] == name].groupby("real_n")[metric].mean()
            ax.plot(r.index, r.to_numpy(), marker="s", color="black", lw=2.2, label="real only (+0)")
            ev = rows[rows["eval_set"] == name]
            for (s, a), g in ev.groupby(["set", "amount"], sort=False):
                g = g.groupby("real_n")[metric].mean()
                ax.plot(
                    g.index, g.to_numpy(), marker="o", ms=4, color=colours[a],
                    ls=styles[syn_sets.index(s) % len(styles)], label=f"{a} synthetic, {s}",
                )
            if metric == "top1":
                ax.axhline(chance, color="red", lw=0.8, ls=":", label="chance")
            ax.set_xscale("log")
            ns = sorted(real["real_n"].unique())
            ax.set_xticks(ns, [str(n) for n in ns])
            ax.minorticks_off()
            if metric == "loss":
                from matplotlib.ticker import FormatStrFormatter, LogLocator

                # labelled ticks at 1, 2 and 5 per decade: a panel within one decade still has some
                ax.set_yscale("log")
                ax.yaxis.set_major_formatter(FormatStrFormatter("%.2g"))
                ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
                ax.yaxis.set_minor_formatter(FormatStrFormatter("%.2g"))
            ax.set_title(_title(name, ood), fontsize=10)
            ax.set_ylabel(METRIC_LABELS[metric])
            ax.grid(True, alpha=0.3)
            if i == 1:
                ax.set_xlabel("real training images")
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle("Scarce real data: real images alone (black) and with synthetic images added (colour = amount)")
    _save(fig, path)


def plot_augmentation(summary: pd.DataFrame, path: str | os.PathLike, chance: float) -> None:
    """Azizi et al.: top-1 against the synthetic amount added to the whole real set, per eval set."""
    plt = _plt()
    sets = _eval_sets(summary)
    rows = _mix_rows(summary)
    rows = rows[rows["real_all"]]
    full = summary[(summary["kind"] == "real") & (summary["n_label"] == "all")]
    fig, axes = plt.subplots(1, len(sets), figsize=(4.4 * len(sets), 3.8), squeeze=False)
    for ax, (name, ood) in zip(axes[0], sets):
        f = full[full["eval_set"] == name]
        base = float(f["top1"].mean()) if len(f) else np.nan
        if len(f):
            ax.axhline(base, color="black", lw=1, ls="--", label=f"all {int(f['real_n'].iloc[0])} real, +0")
        for s, g in rows[rows["eval_set"] == name].groupby("set", sort=False):
            g = g.groupby("synthetic_n")["top1"].mean()
            ax.plot([0, *g.index], [base, *g.to_numpy()], marker="o", label=s)
        if not len(rows):
            ax.text(0.5, 0.5, "no mix with real_n: all\nin this study", ha="center", va="center",
                    transform=ax.transAxes, fontsize=9)
        ax.axhline(chance, color="red", lw=0.8, ls=":", label="chance")
        ax.set_title(_title(name, ood), fontsize=10)
        ax.set_xlabel("synthetic images added to the whole real set")
        ax.set_ylabel(METRIC_LABELS["top1"])
        ax.grid(True, alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle("Augmenting the whole real set with synthetic images")
    _save(fig, path)


def plot_exchange(rates: pd.DataFrame, path: str | os.PathLike, metric: str = "top1") -> None:
    """Real images a synthetic part is worth (y) against its size (x), with intervals, per eval set.

    Hollow triangles are censored: the classifier falls below the smallest real N (pointing down,
    drawn at that N's bound) or beyond the largest (pointing up).
    """
    plt = _plt()
    df = rates[rates["metric"] == metric] if len(rates) else rates
    sets = list(dict.fromkeys(df["eval_set"])) if len(df) else ["(none)"]
    fig, axes = plt.subplots(1, len(sets), figsize=(4.4 * len(sets), 3.9), squeeze=False)
    groups = sorted(df["real_n"].unique()) if len(df) else []
    colours = {r: plt.cm.tab10(i % 10) for i, r in enumerate(groups)}
    for ax, name in zip(axes[0], sets):
        ev = df[df["eval_set"] == name] if len(df) else df
        for r, g in ev.groupby("real_n"):
            label = "synthetic only" if r == 0 else f"added to {r} real"
            ok = g[g["censored"] == ""]
            err = np.vstack([ok["worth"] - ok["worth_low"], ok["worth_high"] - ok["worth"]]).clip(min=0)
            ax.errorbar(ok["synthetic_n"], ok["worth"], yerr=err, fmt="o", color=colours[r], capsize=3, label=label)
            below, above = g[g["censored"] == "below"], g[g["censored"] == "above"]
            ax.scatter(below["synthetic_n"], below["worth_high"], marker="v", facecolors="none", edgecolors=[colours[r]])
            ax.scatter(above["synthetic_n"], above["worth_low"], marker="^", facecolors="none", edgecolors=[colours[r]])
        if len(ev):
            lim = float(ev["synthetic_n"].max())
            ax.plot([1, lim], [1, lim], color="grey", lw=0.8, ls="--", label="1 real per synthetic")
            ax.axhline(0, color="black", lw=0.6)
            ax.set_xscale("log")
            ax.set_yscale("symlog", linthresh=max(1.0, float(ev["synthetic_n"].min())))
        ax.set_title(name + (" (OOD)" if len(ev) and ev["ood"].iloc[0] else ""), fontsize=10)
        ax.set_xlabel("synthetic images")
    axes[0][0].set_ylabel(f"worth in real images ({metric})")
    for ax in axes[0]:
        ax.grid(True, alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle("Exchange rate: real images a synthetic set is worth (read off the real-only curve)")
    _save(fig, path)


def _fmt_worth(row: pd.Series) -> str:
    if row["censored"] == "below":
        return f"less than {row['real_equivalent_high'] - row['real_n']:.0f} real images (below the real curve)"
    if row["censored"] == "above":
        return f"more than {row['real_equivalent_low'] - row['real_n']:.0f} real images (beyond the real curve)"
    if row["worth"] < 0:
        # the mix scores like fewer real images than it already holds: the synthetic part hurt
        return (
            f"less than nothing: the mix scores like {row['worth'] + row['real_n']:.0f} real images, fewer "
            f"than the {row['real_n']:.0f} it holds (the synthetic images cost {-row['worth']:.0f})"
        )
    return (
        f"{row['worth'] + 0:.0f} real images [{max(row['worth_low'], 0) + 0:.0f}, {row['worth_high'] + 0:.0f}] "
        f"({row['rate']:.2f} per synthetic image)"
    )


def findings(effects: pd.DataFrame, rates: pd.DataFrame) -> list[str]:
    """Sentences from the numbers: where adding synthetic data helped, where it hurt, what it is worth."""
    if not len(effects):
        return ["No mixed classifier has a real-only run at the same real N: nothing to compare."]
    e = effects.copy()
    return _noise_findings(e) + _comparison_findings(e) + _tally_findings(e) + _exchange_findings(e, rates)


def _noise_findings(e: pd.DataFrame) -> list[str]:
    """One run's noise per eval set, the bar a mix must pass, and how many comparisons have none."""
    out: list[str] = []
    known = e[e["verdict"] != "undetermined"]
    for (ev, ood), part in known.groupby(["eval_set", "ood"], sort=False):
        sds = part.drop_duplicates(["noise_basis", "noise_df"])
        sd_text = "; ".join(f"{r['noise_sd']:.3f} from {r['noise_basis']} ({int(r['noise_df'])} df)"
                            for _, r in sds.iterrows())
        out.append(
            f"Noise on {ev}{' (OOD)' if ood else ''}: one run's top-1 varies by (sd between training seeds, "
            f"at the comparison's own real N where it has >= 2 seeds, else pooled over N) {sd_text}, "
            "so a mix counts as "
            f"helped or hurt only beyond the t-quantile times the sd of the difference of means "
            f"({part['noise'].min():.3f} to {part['noise'].max():.3f} top-1)."
        )
    if (e["verdict"] == "undetermined").any():
        out.append(
            f"{int((e['verdict'] == 'undetermined').sum())} of {len(e)} comparisons are undetermined: no "
            "real-only N of their eval set has two training seeds, so there is no estimate of one run's "
            "noise (set train.real_seeds to get one)."
        )
    return out


def _comparison_findings(e: pd.DataFrame) -> list[str]:
    """Each mix at the scarcest real N and on the full real set against real-only, with its verdict."""
    out: list[str] = []
    scarce_r = e.loc[~e["real_all"], "real_n"].min() if (~e["real_all"]).any() else None
    for label, part in [("scarce real", e[e["real_n"] == scarce_r]), ("full real", e[e["real_all"]])]:
        for _, row in part.sort_values(["ood", "eval_set", "synthetic_n"]).iterrows():
            out.append(
                f"{label.capitalize()} ({row['real_n']} real images), {row['eval_set']}"
                f"{' (OOD)' if row['ood'] else ''}: adding {row['synthetic_n']} synthetic images "
                f"({row['amount']}, {row['set']}) moved top-1 from {row['top1_real_only']:.3f} to "
                f"{row['top1']:.3f} ({row['delta_top1']:+.3f}) and loss from {row['loss_real_only']:.3f} "
                f"to {row['loss']:.3f} ({row['delta_loss']:+.3f}): {row['verdict']}."
            )
    return out


def _tally_findings(e: pd.DataFrame) -> list[str]:
    """The verdicts counted in and out of distribution, and the mean change with scarce and full real."""
    out: list[str] = []
    for ood, part in e.groupby("ood"):
        counts = part["verdict"].value_counts()
        out.append(
            f"Over all {len(part)} mixed classifiers on {'OOD' if ood else 'in-distribution'} sets: "
            f"{counts.get('helped', 0)} helped, {counts.get('hurt', 0)} hurt, "
            f"{counts.get('within noise', 0)} within noise, {counts.get('undetermined', 0)} undetermined; "
            f"top-1 changes range from "
            f"{part['delta_top1'].min():+.3f} to {part['delta_top1'].max():+.3f}."
        )
    if len(e) and (~e["real_all"]).any() and e["real_all"].any():
        s, f = e[~e["real_all"]]["delta_top1"].mean(), e[e["real_all"]]["delta_top1"].mean()
        out.append(
            f"Mean top-1 change from adding synthetic data, over all eval sets: {s:+.3f} with fewer real images "
            f"than the whole split against {f:+.3f} with the whole split (Fan et al.: synthetic data helps most "
            "when real data is scarce)."
        )
    return out


def _exchange_findings(e: pd.DataFrame, rates: pd.DataFrame) -> list[str]:
    """What the mixes' sets are worth in real images (top-1): each mix, and each set alone at its
    largest N."""
    out: list[str] = []
    if len(rates):
        r = rates[(rates["metric"] == "top1") & rates["set"].isin(set(e["set"]))]
        for _, row in r.sort_values(["ood", "eval_set", "real_n", "synthetic_n"]).iterrows():
            what = (
                f"{row['synthetic_n']} synthetic images alone ({row['set']})"
                if row["kind"] == "synthetic"
                else f"{row['synthetic_n']} synthetic images added to {row['real_n']} real ({row['set']})"
            )
            alone = r[(r["kind"] == "synthetic") & (r["set"] == row["set"])]
            if row["kind"] == "synthetic" and row["synthetic_n"] != alone["synthetic_n"].max():
                continue  # synthetic-only sets: only the largest N, to keep the list readable
            out.append(
                f"Exchange rate on {row['eval_set']}{' (OOD)' if row['ood'] else ''}: {what} "
                f"(top-1 {row['value']:.3f}) are worth {_fmt_worth(row)}, interval by {row['interval']}."
            )
    return out


def write_mix_findings(
    effects_path: str | os.PathLike, exchange_path: str | os.PathLike, study: str, path: str | os.PathLike
) -> None:
    """The rule mix_findings' page: `findings` of effects.csv and exchange_rate.csv, named as the
    files it is computed from."""
    lines = findings(read_rates(effects_path), read_rates(exchange_path))
    names = " and ".join(f"{Path(p).parent.name}/{Path(p).name}" for p in (effects_path, exchange_path))
    write_html(path, f"Real + synthetic: {study}", lines, source=f"{names} of this run")


def write_mix_plots(
    summary_path: str | os.PathLike,
    exchange_path: str | os.PathLike,
    mix: dict[str, Any],
    manifest_path: str | os.PathLike,
    out: Any,
) -> None:
    """The rule plot_mix's figures: `out` maps scarce, augment and exchange to their paths (a dict, or
    the rule's output); chance at 1 / the class count of the prepared dataset (its manifest)."""
    chance = 1 / manifest_classes(manifest_path)
    summary = read_summary(summary_path, fill_seed=False)
    plot_scarce_real(summary, mix, out["scarce"], chance)
    plot_augmentation(summary, out["augment"], chance)
    plot_exchange(read_rates(exchange_path), out["exchange"])
