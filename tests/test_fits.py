"""Scaling fits: both forms recover known laws, bootstrap intervals cover the truth and are paired,
extrapolation inverts the fitted law, saturated points are dropped."""
import numpy as np
import pandas as pd
import pytest

from synthscale import fits as F
from synthscale.analysis import scaling_fits

NS = np.array([30, 60, 120, 300, 600, 1200])


def test_power_law_recovers_slope_and_prefers_itself(rng):
    n = np.repeat(NS, 3)
    y = 4.0 * n**-0.4 * np.exp(rng.normal(0, 0.03, len(n)))
    pl = F.fit_power_law(n, y)
    assert pl["k"] == pytest.approx(0.4, abs=0.03) and pl["B"] == pytest.approx(4.0, rel=0.2)
    cells = {(i % 3, int(v)): float(t) for i, (v, t) in enumerate(zip(n, y))}
    row, _ = F.fit_source(cells, F.Draws.make(sorted(cells), 1000, 0))
    assert row["form"] == "power" and np.isnan(row["E"])
    t_width, b_width = row["k_t_high"] - row["k_t_low"], row["k_high"] - row["k_low"]
    assert 0.5 < b_width / t_width < 2  # the bootstrap agrees with theory where theory holds
    covered = 0
    for t in range(100):  # and its 95% interval covers the true slope about 95% of the time
        y = 4.0 * n**-0.4 * np.exp(rng.normal(0, 0.03, len(n)))
        cells = {(i % 3, int(v)): float(u) for i, (v, u) in enumerate(zip(n, y))}
        lo, hi = F.interval(F.bootstrap_power_law(F.Draws.make(sorted(cells), 500, t), cells)[0])
        covered += lo < 0.4 < hi
    assert covered >= 85


def test_saturating_form_recovers_floor_and_wins_by_aicc(rng):
    n = np.repeat(NS, 3)
    y = 0.3 + 6.0 * n**-0.7 * np.exp(rng.normal(0, 0.01, len(n)))
    sat = F.fit_saturating(n, y)
    assert sat["E"] == pytest.approx(0.3, rel=0.1) and sat["k_sat"] == pytest.approx(0.7, rel=0.15)
    cells = {(i % 3, int(v)): float(t) for i, (v, t) in enumerate(zip(n, y))}
    row, _ = F.fit_source(cells, F.Draws.make(sorted(cells), 200, 0), target=0.5)
    assert row["form"] == "saturating" and row["E"] == pytest.approx(0.3, rel=0.1)
    truth = (6.0 / (0.5 - 0.3)) ** (1 / 0.7)
    assert row["n_target"] == pytest.approx(truth, rel=0.2)
    assert row["n_target_low"] <= row["n_target"] <= row["n_target_high"]
    # below the floor the saturating law never gets there
    row, _ = F.fit_source(cells, F.Draws.make(sorted(cells), 200, 0), target=0.2)
    assert np.isinf(row["n_target"])


def test_bootstrap_is_seeded_and_narrows_with_seeds(rng):
    def width(seeds, draw_seed=0):
        cells = {(s, int(n)): 2.0 * n**-0.5 * np.exp(rng.normal(0, 0.1)) for s in range(seeds) for n in NS[:4]}
        kd, _ = F.bootstrap_power_law(F.Draws.make(sorted(cells), 1000, draw_seed), cells)
        lo, hi = F.interval(kd)
        return hi - lo, kd

    w1 = np.median([width(1)[0] for _ in range(20)])
    w5 = np.median([width(5)[0] for _ in range(20)])
    assert w5 < w1 / 1.5
    cells = {(0, int(n)): float(n) ** -0.5 for n in NS}
    a, _ = F.bootstrap_power_law(F.Draws.make(sorted(cells), 100, 7), cells)
    b, _ = F.bootstrap_power_law(F.Draws.make(sorted(cells), 100, 7), cells)
    np.testing.assert_array_equal(a, b)


def test_bootstrap_matches_a_plain_refit_of_one_draw():
    cells = {(s, int(n)): float(n) ** -0.3 * (1 + 0.05 * s) * (1 + 0.01 * (n % 7)) for s in range(3) for n in NS}
    d = F.Draws.make(sorted(cells), 5, 3)
    kd, lb = F.bootstrap_power_law(d, cells)
    idx = np.repeat(np.arange(len(d.cells)), d.counts[2])
    n = np.array([d.cells[i][1] for i in idx], float)
    y = np.array([cells[d.cells[i]] for i in idx])
    ref = F.fit_power_law(n, y)
    assert kd[2] == pytest.approx(ref["k"], rel=1e-9) and np.exp(lb[2]) == pytest.approx(ref["B"], rel=1e-9)


def test_power_law_extrapolation_inverts_the_law():
    assert F.n_for_target_power(0.5, np.log(10.0), 0.1) == pytest.approx(10000.0)
    assert np.isinf(F.n_for_target_power(-0.1, 0.0, 0.1))


def test_per_class_slope_drops_saturated_points():
    n = np.array([30, 60, 120, 300])
    y = 2.0 * n**-0.3
    y[-1] = 0.0  # a saturated class: zero loss has no logarithm
    r = F.per_class_slope(n, y)
    assert r["slope"] == pytest.approx(0.3) and r["n_dropped"] == 1 and r["n_points"] == 3
    assert np.isnan(F.per_class_slope(n[:2], [1.0, 0.0])["slope"])


def _seeded_summary(rng, k_real=0.5, k_syn=0.2, seeds=3, noise=0.05):
    rows = []
    for kind, src, k, gen in (("real", "real", k_real, ""), ("synthetic", "synthetic/a/g2/classname", k_syn, "a")):
        for s in range(seeds):
            for n in NS:
                loss = 3.0 * n**-k * np.exp(rng.normal(0, noise))
                rows.append(dict(arch="r", source=src, kind=kind, generator=gen, guidance=2.0 if gen else np.nan,
                                 strategy="classname" if gen else "", n=n, n_label=str(n), seed=s,
                                 eval_set="test", ood=False, loss=loss, top1=1 - loss / 3))
    return pd.DataFrame(rows)


def test_scaling_table_has_intervals_forms_and_paired_ratio(rng):
    fits = scaling_fits(_seeded_summary(rng), ["loss", "error"], {"loss": 0.2}, n_draws=1000)
    assert set(fits["metric"]) == {"loss", "error"}
    for col in ("k", "k_low", "k_high", "B", "r2", "form", "E", "ratio", "ratio_low", "ratio_high",
                "differs_from_real", "n_target", "n_target_low", "n_target_high", "seeds", "points"):
        assert col in fits.columns
    loss = fits[fits["metric"] == "loss"].set_index("kind")
    assert loss.loc["real", "points"] == 18 and loss.loc["real", "seeds"] == 3
    assert loss.loc["real", "k_low"] < 0.5 < loss.loc["real", "k_high"]
    assert loss.loc["synthetic", "ratio"] == pytest.approx(0.4, abs=0.08)
    assert loss.loc["synthetic", "ratio_high"] < 1 and loss.loc["synthetic", "differs_from_real"] == "lower"
    real_n = (3.0 / 0.2) ** (1 / 0.5)
    assert loss.loc["real", "n_target"] == pytest.approx(real_n, rel=0.3)
    same = scaling_fits(_seeded_summary(rng, k_syn=0.5), "loss", n_draws=1000).set_index("kind")
    assert same.loc["synthetic", "ratio_low"] < 1 < same.loc["synthetic", "ratio_high"]
    assert same.loc["synthetic", "differs_from_real"] == "no"


def test_grid_halfwidth_shrinks_with_seeds_and_spread():
    narrow = F.halfwidth_for_grid([30, 60, 120, 300], 1, 0.4, 3.0, 0.08, draws=300, sims=20)
    wide = F.halfwidth_for_grid([30, 75, 190, 480, 1200], 3, 0.4, 3.0, 0.08, draws=300, sims=20)
    assert wide < narrow / 2


def test_vectorised_saturating_bootstrap_matches_scipy_per_draw(rng):
    cells = {(s, int(n)): 0.3 + 6 * n**-0.7 * np.exp(rng.normal(0, 0.03)) for s in range(3) for n in NS[:4]}
    d = F.Draws.make(sorted(cells), 20, 1)
    sat = F.fit_saturating([c[1] for c in cells], list(cells.values()))
    out = F.bootstrap_saturating(d, cells, sat["_x"])
    for i in range(5):
        idx = np.repeat(np.arange(len(d.cells)), d.counts[i])
        n = np.array([d.cells[j][1] for j in idx], float)
        r = F.fit_saturating(n, np.array([cells[d.cells[j]] for j in idx]), starts=[sat["_x"]])
        np.testing.assert_allclose(out[i], [r["E"], r["B_sat"], r["k_sat"]], rtol=1e-3)
