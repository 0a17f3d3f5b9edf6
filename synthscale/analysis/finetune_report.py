"""Base against fine-tuned generator, from the quality table: did fine-tuning lower FID and raise CAS?

Azizi et al. (2023) found that fine-tuning Imagen on ImageNet's training set lowered FID and raised
the Classification Accuracy Score. These functions pair each fine-tuned generator with its base (when
the base is a generator of the same study), compare them at each guidance scale on the prompt
strategies both were sampled with, and state the outcome as plain sentences.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

# metric -> True when higher is better
METRICS: dict[str, bool] = {"fid": False, "cas": True, "recognizability": True}


def finetune_pairs(generators: Sequence[dict[str, Any]]) -> dict[str, str]:
    """{fine-tuned generator: its base} for bases that are generators of the study."""
    names = {g["name"] for g in generators}
    return {
        g["name"]: g["base"]
        for g in generators
        if g["kind"] == "finetuned" and g.get("base") in names
    }


def describe_generator(spec: dict[str, Any]) -> str:
    """How a generator came to be, in words (names the base's distribution shift)."""
    kind = spec["kind"]
    if kind == "pretrained":
        return f"the pretrained pipeline {spec.get('source')}"
    if kind == "finetuned":
        ft = spec.get("finetune", {})
        return (
            f"{spec.get('base')} fine-tuned ({ft.get('mode', 'full')}, {ft.get('steps')} steps) on the "
            f"real train split with {'/'.join(ft.get('caption_strategies', ['classname']))} captions"
        )
    shift = spec.get("train_shift", {"kind": "none"})
    if shift["kind"] == "thicken":
        how = f"with strokes thickened (a {shift.get('size', 3)}-pixel max filter)"
    elif shift["kind"] == "rotate":
        how = f"with images rotated by {shift.get('degrees', 30) / 2:g} to {shift.get('degrees', 30):g} degrees"
    else:
        how = "as it is"
    return f"trained here on the real train split {how}"


def compare_finetuned(
    quality: pd.DataFrame, pairs: dict[str, str], metrics: Sequence[str] = tuple(METRICS)
) -> pd.DataFrame:
    """One row per (fine-tuned, base, guidance): each metric's mean over the strategies both share.

    Columns `{m}_base`, `{m}_finetuned` and `{m}_better` (True when fine-tuning moved the metric the
    good way, NaN when either value is missing).
    """
    rows = []
    for ft, base in pairs.items():
        a = quality[quality["generator"] == base]
        b = quality[quality["generator"] == ft]
        for g in sorted(set(a["guidance"]) & set(b["guidance"])):
            ag, bg = a[a["guidance"] == g], b[b["guidance"] == g]
            shared = sorted(set(ag["strategy"]) & set(bg["strategy"]))
            row: dict[str, Any] = {"finetuned": ft, "base": base, "guidance": float(g),
                                   "strategies": len(shared)}
            for m in metrics:
                if m not in quality.columns:
                    continue
                va = ag[ag["strategy"].isin(shared)][m].mean()
                vb = bg[bg["strategy"].isin(shared)][m].mean()
                row[f"{m}_base"], row[f"{m}_finetuned"] = va, vb
                if np.isnan(va) or np.isnan(vb):
                    row[f"{m}_better"] = np.nan
                else:
                    row[f"{m}_better"] = bool(vb > va if METRICS.get(m, True) else vb < va)
            rows.append(row)
    return pd.DataFrame(rows)


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def finetune_sentences(
    comparison: pd.DataFrame, describe: dict[str, str] | None = None
) -> list[str]:
    """Plain sentences: per pair and guidance, whether fine-tuning lowered FID and raised CAS."""
    if comparison.empty:
        return ["No fine-tuned generator has a base in this study, so nothing is compared."]
    describe = describe or {}
    out = []
    for (ft, base), df in comparison.groupby(["finetuned", "base"], sort=False):
        intro = f"{ft} is {base} fine-tuned on the real training split"
        if base in describe:
            intro += f"; {base} was {describe[base]}"
        out.append(intro + ".")
        for _, r in df.sort_values("guidance").iterrows():
            parts = []
            for m, label, good, bad in [("fid", "FID", "lowered", "raised"),
                                        ("cas", "CAS", "raised", "lowered")]:
                if f"{m}_better" not in r or pd.isna(r[f"{m}_better"]):
                    parts.append(f"{label} is not available")
                    continue
                a, b = r[f"{m}_base"], r[f"{m}_finetuned"]
                verb = (good if r[f"{m}_better"] else bad) if a != b else "left unchanged"
                parts.append(f"{verb} {label} from {_fmt(a)} to {_fmt(b)}")
            out.append(f"At guidance {r['guidance']:g}, fine-tuning " + " and ".join(parts) + ".")
        verdicts = []
        for m, label, good in [("fid", "FID", "lowered"), ("cas", "CAS", "raised")]:
            col = df.get(f"{m}_better")
            if col is None or col.isna().all():
                continue
            k, n = int(col.fillna(False).astype(bool).sum()), int(col.notna().sum())
            verdicts.append(f"{good} {label} at {k} of {n} guidance values")
        if verdicts:
            agree = all(
                df[f"{m}_better"].dropna().astype(bool).all()
                for m in ("fid", "cas")
                if f"{m}_better" in df and df[f"{m}_better"].notna().any()
            )
            out.append(
                "In all, fine-tuning " + " and ".join(verdicts)
                + (", as Azizi et al. found." if agree else "; Azizi et al. found it did at every one.")
            )
    return out


def finetune_findings(quality: pd.DataFrame, generators: Sequence[dict[str, Any]]) -> list[str]:
    """Everything above in one call: the sentences for the report, from quality.csv and the config's
    `generators` list."""
    describe = {g["name"]: describe_generator(g) for g in generators}
    return finetune_sentences(compare_finetuned(quality, finetune_pairs(generators)), describe)
