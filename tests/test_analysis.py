"""Scaling fits recover known slopes; the summary and findings read real tables."""
import numpy as np
import pandas as pd
import pytest

from synthscale.analysis import findings, fit_power_law, scaling_fits


def test_fit_recovers_known_slope(rng):
    n = np.array([100, 200, 400, 800, 1600, 3200])
    loss = 5.0 * n ** -0.27 * np.exp(rng.normal(0, 0.01, len(n)))
    fit = fit_power_law(n, loss)
    assert fit["k"] == pytest.approx(0.27, abs=0.02)
    assert fit["B"] == pytest.approx(5.0, rel=0.15)
    assert fit["k_low"] < 0.27 < fit["k_high"]
    assert fit["r2"] > 0.99


def test_fit_exact_power_law_has_zero_width_interval():
    n = np.array([10, 100, 1000])
    fit = fit_power_law(n, 2.0 * n ** -0.53)
    assert fit["k"] == pytest.approx(0.53, abs=1e-9)
    assert fit["k_high"] - fit["k_low"] == pytest.approx(0, abs=1e-9)


def test_fit_needs_two_distinct_n():
    with pytest.raises(ValueError):
        fit_power_law([10, 10], [1.0, 0.9])


def _summary():
    rows = []
    for kind, src, k, g, s in [("real", "real", 0.5, np.nan, ""), ("synthetic", "synthetic/gen/g2/classname", 0.2, 2.0, "classname")]:
        for n in (30, 60, 120, 300):
            for ev, ood in (("test", False), ("test-rotated", True)):
                loss = 3.0 * n ** -k
                rows.append(dict(arch="a", source=src, kind=kind, generator="gen" if g == g else "",
                                 guidance=g, strategy=s, n=n, n_label=str(n), eval_set=ev, ood=ood,
                                 loss=loss, top1=1 - loss / 3, mean_class_acc=1 - loss / 3, n_eval=10))
    return pd.DataFrame(rows)


def test_scaling_fits_per_source_and_eval_set():
    fits = scaling_fits(_summary())
    assert len(fits) == 4
    real = fits[(fits.kind == "real") & (fits.eval_set == "test")].iloc[0]
    syn = fits[(fits.kind == "synthetic") & (fits.eval_set == "test")].iloc[0]
    assert real["k"] == pytest.approx(0.5)
    assert syn["k"] == pytest.approx(0.2)


def test_findings_report_numbers_from_the_tables():
    summary = _summary()
    lines = findings(summary, scaling_fits(summary), n_classes=10)
    text = " ".join(lines)
    assert "real 0.50" in text and "synthetic from 0.20" in text
    assert "chance is 0.100" in text
