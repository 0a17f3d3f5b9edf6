"""Do the scaling fits' 95% intervals cover the truth 95% of the time?

Simulates known laws through `synthscale.analysis.scaling_report.scaling_fits` (the function the workflow's rule
scaling_fits calls) and prints, per design and noise model, the coverage of every interval it reports
(k of real, k of synthetic, the synthetic/real slope ratio, k of the saturating form, the N at which
the power law reaches loss 0.2) and how often each is reported rather than undetermined. Coverage
counts only reported intervals.

Designs (seeds x N values): the default study's (real 5 x 3 N, synthetic 1 x 3 N; N = 30, 100, 300),
the same with 2 real seeds, real 5 seeds at only 2 N, the CLIP arm's (real 3 x 3 N, synthetic 1 x 3 N),
the presets' 1 x 6 N, and 3 x 4 N. Truths: power laws (real k 0.45, synthetic k 0.2) for k, the ratio
and N-to-target; saturating laws (E + B N^-k, k 0.6 real, 0.35 synthetic) for the saturating k, whose
interval needs 5 N values and replicated seeds (none of these designs gets one: at 1 x 6 N it covered
0.88 on a power-law truth with run sd 0.15; the saturating form's N-to-target is undetermined, never
quoted). Noise: log-normal, "per-N a + run b" has a part of sd a common to every
seed at one N (they train on the same first N images) and an independent part of sd b per run (with
one seed per N that is just independent noise); "real a, syn b" gives the sources unequal sd.

    python benchmarks/fit_coverage.py [replicates=400] [seed=0]
"""
from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd

from synthscale.analysis.scaling_report import scaling_fits

N3, N6, N4 = (30, 100, 300), (30, 60, 120, 250, 500, 1000), (30, 100, 300, 1000)
DESIGNS = {
    "default (real 5x3, syn 1x3)": {"real": (5, N3), "syn": (1, N3)},
    "real 2x3, syn 1x3": {"real": (2, N3), "syn": (1, N3)},
    "real 5x2, syn 1x3": {"real": (5, (30, 300)), "syn": (1, N3)},
    "CLIP (real 3x3, syn 1x3)": {"real": (3, N3), "syn": (1, N3)},
    "1 seed x 6 N": {"real": (1, N6), "syn": (1, N6)},
    "3 seeds x 4 N": {"real": (3, N4), "syn": (3, N4)},
}
POWER = {"real": (3.0, 0.45, 0.0), "syn": (2.5, 0.2, 0.0)}  # (B, k, E)
SATURATING = {"real": (3.0, 0.6, 0.15), "syn": (2.5, 0.35, 0.3)}
TARGET = 0.2  # loss; real reaches it at N = 411, synthetic at 3e5 (a far extrapolation)
NOISE = {  # name: {source: (per-N sd, per-run sd)}
    "independent 0.08": {"real": (0.0, 0.08), "syn": (0.0, 0.08)},
    "per-N 0.03 + run 0.07": {"real": (0.03, 0.07), "syn": (0.03, 0.07)},
    "per-N 0.05 + run 0.06": {"real": (0.05, 0.06), "syn": (0.05, 0.06)},
    "per-N 0.08 + run 0.02": {"real": (0.08, 0.02), "syn": (0.08, 0.02)},
    "real 0.03, syn 0.15": {"real": (0.0, 0.03), "syn": (0.0, 0.15)},
}
ROWS = [  # (design, noise, truth)
    ("default (real 5x3, syn 1x3)", "independent 0.08", "power"),
    ("default (real 5x3, syn 1x3)", "per-N 0.03 + run 0.07", "power"),
    ("default (real 5x3, syn 1x3)", "per-N 0.05 + run 0.06", "power"),
    ("default (real 5x3, syn 1x3)", "per-N 0.08 + run 0.02", "power"),
    ("default (real 5x3, syn 1x3)", "real 0.03, syn 0.15", "power"),
    ("real 2x3, syn 1x3", "per-N 0.05 + run 0.06", "power"),
    ("real 5x2, syn 1x3", "per-N 0.05 + run 0.06", "power"),
    ("CLIP (real 3x3, syn 1x3)", "independent 0.08", "power"),
    ("CLIP (real 3x3, syn 1x3)", "per-N 0.05 + run 0.06", "power"),
    ("1 seed x 6 N", "independent 0.08", "power"),
    ("1 seed x 6 N", "real 0.03, syn 0.15", "power"),
    ("1 seed x 6 N", "independent 0.08", "saturating"),
    ("3 seeds x 4 N", "independent 0.08", "power"),
    ("3 seeds x 4 N", "per-N 0.05 + run 0.06", "power"),
    ("3 seeds x 4 N", "per-N 0.08 + run 0.02", "power"),
]
SYN = "synthetic/sim/g2/classname"


def simulate(design, truth, noise, rng) -> pd.DataFrame:
    rows = []
    for kind, source in (("real", "real"), ("syn", SYN)):
        seeds, ns = design[kind]
        b, k, e = truth[kind]
        per_n, per_run = noise[kind]
        shared = {n: rng.normal(0, per_n) for n in ns}
        for s in range(seeds):
            for n in ns:
                loss = (e + b * n**-k) * np.exp(shared[n] + rng.normal(0, per_run))
                rows.append(dict(arch="sim", source=source, kind="real" if kind == "real" else "synthetic",
                                 generator="" if kind == "real" else "sim", guidance=np.nan if kind == "real" else 2.0,
                                 strategy="" if kind == "real" else "classname", n=n, n_label=str(n), seed=s,
                                 eval_set="test", ood=False, loss=loss, top1=0.5))
    return pd.DataFrame(rows)


def check(fits: pd.DataFrame, truth, tally: dict) -> None:
    f = fits.set_index("kind")

    def add(name, lo, hi, true):
        hit = tally.setdefault(name, [0, 0, 0])  # replicates, reported, covered
        hit[0] += 1
        if np.isfinite(lo) and np.isfinite(hi):
            hit[1] += 1
            hit[2] += int(lo <= true <= hi)

    for kind, label in (("real", "real"), ("synthetic", "syn")):
        r = f.loc[kind]
        if truth is POWER:
            add(f"k {label}", r["k_low"], r["k_high"], truth[label][1])
            b, k, _ = truth[label]
            add(f"N-target {label}", r["n_target_low"], r["n_target_high"], (b / TARGET) ** (1 / k))
        add(f"saturating k {label}", r["k_sat_low"], r["k_sat_high"], truth[label][1])
    if truth is POWER:
        s = f.loc["synthetic"]
        add("ratio syn/real", s["ratio_low"], s["ratio_high"], POWER["syn"][1] / POWER["real"][1])


def main() -> None:
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    rng = np.random.default_rng(seed)
    t0 = time.time()
    print(f"95% intervals of synthscale.analysis.scaling_report.scaling_fits, {reps} replicates per row; "
          "coverage among reported intervals (reported share in brackets)")
    names = ["k real", "k syn", "ratio syn/real", "N-target real", "N-target syn", "saturating k real",
             "saturating k syn"]
    print(f"{'design':<28} {'noise':<22} {'truth':<11} " + " ".join(f"{n:>18}" for n in names))
    for dname, nname, tname in ROWS:
        design, noise, truth = DESIGNS[dname], NOISE[nname], {"power": POWER, "saturating": SATURATING}[tname]
        tally: dict = {}
        for _ in range(reps):
            fits = scaling_fits(simulate(design, truth, noise, rng), "loss", targets={"loss": TARGET}, level=0.95)
            check(fits, truth, tally)
        cells = []
        for n in names:
            if n not in tally:
                cells.append(f"{'-':>18}")
                continue
            total, reported, covered = tally[n]
            cov = f"{covered / reported:.3f}" if reported else "   n/a"
            cells.append(f"{cov:>6} ({reported / total:4.0%} rep)".rjust(18))
        print(f"{dname:<28} {nname:<22} {tname:<11} " + " ".join(cells), flush=True)
    print(f"Monte Carlo sd of a coverage of 0.95 over {reps} replicates: {np.sqrt(0.95 * 0.05 / reps):.3f}; "
          f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
