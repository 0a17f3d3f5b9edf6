"""Which (seeds x N values) grid makes the real slope's 95% t interval narrow enough?

Reads a study's summary.csv (default: results/summary.csv), fits the real in-distribution loss
(k, B, and the residual sd of log loss, which stands in for seed-to-seed noise plus lack of fit),
then simulates grids and prints the median half-width of k's 95% t interval for each.
Without a summary it uses the default study's measured real losses (one seed, N = 30..300).

    python benchmarks/grid_halfwidth.py [results/summary.csv] [eval_set]
"""
import sys
from pathlib import Path

import numpy as np

from synthscale.analysis import fits as F

GRIDS = [
    ((30, 100, 300), 1),
    ((30, 100, 300), 3),  # the default study's real grid (train.real_seeds: [0, 1, 2])
    ((30, 60, 120, 300), 1),
    ((30, 60, 120, 300), 2),
    ((30, 60, 120, 300), 3),
    ((30, 75, 190, 480, 1200), 1),
    ((30, 75, 190, 480, 1200), 2),
    ((30, 75, 190, 480, 1200), 3),
    ((30, 120, 480, 1200), 2),
    ((30, 60, 120, 240, 480, 960), 2),
]


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("results/summary.csv")
    eval_set = sys.argv[2] if len(sys.argv) > 2 else "test"
    if path.exists():
        from synthscale.analysis.tables import read_summary

        s = read_summary(path)
        r = s[(s["kind"] == "real") & (s["n_label"] != "all") & (s["eval_set"] == eval_set)]
        n, y = r["n"].to_numpy(float), r["loss"].to_numpy(float)
        print(f"from {path}: {len(r)} real (seed, N) points on {eval_set}")
    else:
        n = np.array([30, 60, 120, 300], float)
        y = np.array([1.246, 0.7146, 0.656, 0.488])  # the default study's real test loss, seed 0
        print("no summary: the default study's real test losses (seed 0)")
    pl = F.fit_power_law(n, y)
    resid = np.log(y) - (np.log(pl["B"]) - pl["k"] * np.log(n))
    noise = float(np.sqrt((resid**2).sum() / max(len(n) - 2, 1)))
    print(f"real k = {pl['k']:.3f}, B = {pl['B']:.3f}, residual sd of log loss = {noise:.3f}")
    print(f"{'N values':<32} seeds  runs  median 95% half-width of k")
    for grid, seeds in GRIDS:
        hw = F.halfwidth_for_grid(grid, seeds, pl["k"], pl["B"], noise, sims=40)
        print(f"{str(grid):<32} {seeds:>5} {len(grid) * seeds:>5}  {hw:.3f}")


if __name__ == "__main__":
    main()
