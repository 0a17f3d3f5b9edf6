"""The summary, scaling fits, plots, findings and cost read real tables; two generators stay apart."""
import numpy as np
import pandas as pd
import pytest

from synthscale.analysis import cost_report, scaling_report
from synthscale.analysis.cost_report import cost_table, parse_benchmark, read_benchmarks, write_cost
from synthscale.analysis.scaling_report import scaling_fits
from synthscale.analysis.tables import build_summary, read_scaling, read_summary
from synthscale.study.plan import Plan
from synthscale.study.sources import parse_source


def _summary(gens=("gen",), seeds=1, noise=0.0, rng=None):
    rows = []
    specs = [("real", "real", 0.5, "", np.nan, "")]
    specs += [("synthetic", f"synthetic/{gen}/g2/classname", 0.2 + 0.05 * i, gen, 2.0, "classname")
              for i, gen in enumerate(gens)]
    for kind, src, k, gen, g, s in specs:
        for seed in range(seeds):
            for n in (30, 60, 120, 300):
                for ev, ood in (("test", False), ("test-rotated", True)):
                    loss = 3.0 * n**-k * (np.exp(rng.normal(0, noise)) if noise else 1.0)
                    rows.append(dict(arch="a", source=src, kind=kind, generator=gen, guidance=g, strategy=s,
                                     n=n, n_label=str(n), seed=seed, real_n=n if kind == "real" else 0,
                                     synthetic_n=0 if kind == "real" else n, eval_set=ev, ood=ood, loss=loss,
                                     top1=1 - loss / 3, mean_class_acc=1 - loss / 3, n_eval=10))
    return pd.DataFrame(rows)


def test_scaling_fits_per_source_and_eval_set():
    fits = scaling_fits(_summary())
    assert len(fits) == 4
    real = fits[(fits.kind == "real") & (fits.eval_set == "test")].iloc[0]
    syn = fits[(fits.kind == "synthetic") & (fits.eval_set == "test")].iloc[0]
    assert real["k"] == pytest.approx(0.5) and syn["k"] == pytest.approx(0.2)
    assert syn["ratio"] == pytest.approx(0.4)


def test_write_scaling_fits_targets_the_error_as_one_minus_top1(tmp_path):
    _summary().to_csv(tmp_path / "summary.csv", index=False)
    scaling_report.write_scaling_fits(tmp_path / "summary.csv", tmp_path / "scaling.csv", ["loss", "error"], 0.2, 0.9)
    got = read_scaling(tmp_path / "scaling.csv").set_index("metric")["target"]
    assert got["loss"].unique().tolist() == [0.2] and got["error"].unique() == pytest.approx([0.1])


def test_summary_reads_seed_column_or_defaults_to_zero(tmp_path):
    for name, seeded in (("a", True), ("b", False)):
        df = pd.DataFrame({"n_label": ["30", "30"], "eval_set": ["test", "test"], "loss": [1.0, 0.9], "top1": [0.5, 0.6]})
        if seeded:
            df["seed"] = [0, 1]
        else:
            df = df.iloc[:1]
        df.to_csv(tmp_path / f"{name}.csv", index=False)
    s = build_summary(["real", "synthetic/g/g2/classname"], [tmp_path / "a.csv", tmp_path / "b.csv"], "r", {}, 100)
    assert list(s["seed"]) == [0, 1, 0]
    s.drop(columns="seed").to_csv(tmp_path / "s.csv", index=False)
    assert (read_summary(tmp_path / "s.csv")["seed"] == 0).all()


def test_findings_state_numbers_and_compare_every_slope_with_real(rng):
    summary = _summary(gens=("a", "b"), seeds=3, noise=0.05, rng=rng)
    fits = scaling_fits(summary)
    lines = scaling_report.scaling_findings(summary, fits, n_classes=10)
    text = " ".join(lines)
    assert "chance is 0.100" in text
    import re

    for gen in ("a", "b"):
        assert re.search(rf"synthetic/{gen}/g2/classname \(3 seeds\): k = 0\.\d+ \[0\.\d+, 0\.\d+\] "
                         rf"\(t on the per-N means, 2 df\); "
                         rf"ratio to real 0\.\d+ \[0\.\d+, 0\.\d+\] \(Fieller, 4 shared N, 2 df\)", text)
    assert "lower than real's" in text
    assert "2 of 2 synthetic slopes are lower than real's" in text
    assert "mean over 3 training seeds" in text
    # every sentence carries a number from the tables
    assert all(any(ch.isdigit() for ch in line) for line in lines)
    # no fixed explanation: the same text code path on equal slopes gives no hypothesis
    same = _summary(gens=("a",), seeds=3, noise=0.05, rng=rng)
    same.loc[same["kind"] == "synthetic", "loss"] = same.loc[same["kind"] == "real", "loss"].to_numpy()
    text_same = " ".join(scaling_report.scaling_findings(same, scaling_fits(same), 10))
    assert "Hypothesis" not in text_same and "not distinguishable from real's" in text_same


def test_findings_say_undetermined_and_one_seed_where_the_design_cannot_show_more(rng):
    """One seed at 2 N for the synthetic set: its k has no interval and its ratio is undetermined;
    the sentence says so instead of calling it lower or higher than real's."""
    summary = _summary(gens=("a",), seeds=1, noise=0.05, rng=rng)
    summary = summary[(summary["kind"] == "real") | summary["n"].isin([30, 300])]
    text = " ".join(scaling_report.scaling_findings(summary, scaling_fits(summary), 10))
    assert "synthetic/a/g2/classname (1 seed): k = 0." in text
    assert "undetermined: 2 points leave no residual df" in text
    assert "undetermined against real's (no ratio interval)" in text
    assert "0 of 1 synthetic slopes are lower than real's" in text and "1 undetermined" in text
    assert "t, one seed per N: from the fit residuals, 2 df" in text  # real: 1 seed at 4 N


def test_two_generators_get_one_line_each_in_the_scaling_plot():
    """A two-generator study: each generator has its own row of panels and its own line."""
    summary = _summary(gens=("alpha", "beta"), seeds=2)
    fig = scaling_report.scaling_figure(summary, "loss", 0.1)
    axes = fig.axes
    assert len(axes) == 4  # 2 generators x 2 eval sets
    for ax in axes:
        labels = [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else None
        if labels is None:
            continue
        syn = [lab for lab in labels if ":" in lab]
        assert len(syn) == 1  # one synthetic line per panel: its generator's only set
    labels_by_row = {}
    for ax in axes:
        for c in ax.containers:  # each errorbar line is a container carrying its label
            lab = c.get_label()
            if ":" in lab:
                labels_by_row.setdefault(ax.get_title().split(" on ")[0], set()).add(lab)
    assert labels_by_row == {"alpha": {"alpha: classname, g=2"}, "beta": {"beta: classname, g=2"}}
    # the data of a generator's line are its own (the means over its 2 seeds), not a mix
    ax = axes[0]
    line = next(c for c in ax.containers if c.get_label() == "alpha: classname, g=2").lines[0]
    expected = summary[(summary.generator == "alpha") & (summary.eval_set == "test")].groupby("n")["loss"].mean()
    np.testing.assert_allclose(np.asarray(line.get_ydata(), float), expected.to_numpy())
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_guidance_strategy_keeps_generators_apart():
    summary = _summary(gens=("alpha", "beta"))
    fig = scaling_report.guidance_strategy_figure(summary)
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert ticks == ["alpha: classname", "beta: classname"]
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_guidance_strategy_cells_are_the_seed_means_at_the_largest_n():
    """Each heatmap cell (colour and annotation) is the mean top-1 over seeds of its (generator,
    strategy, guidance) at the largest N, computed here by plain loops over the rows."""
    rng = np.random.default_rng(7)
    rows, cells = [], {}
    for ev in ("test", "test-rotated"):
        for seed in (0, 1):
            for n in (30, 300):
                rows.append(dict(kind="real", source="real", generator="", strategy="", guidance=np.nan, n=n,
                                 n_label=str(n), seed=seed, eval_set=ev, top1=0.9 - 0.1 * seed))
                for gen in ("alpha", "beta"):
                    for strat in ("classname", "templates"):
                        for g in (1.0, 2.0, 4.0):
                            top1 = float(rng.uniform(0.05, 0.95))
                            rows.append(dict(kind="synthetic", source=f"synthetic/{gen}/g{g:g}/{strat}",
                                             generator=gen, strategy=strat, guidance=g, n=n, n_label=str(n),
                                             seed=seed, eval_set=ev, top1=top1))
                            if n == 300:
                                cells.setdefault((ev, f"{gen}: {strat}", g), []).append(top1)
    summary = pd.DataFrame(rows).assign(loss=1.0)
    fig = scaling_report.guidance_strategy_figure(summary)
    import matplotlib.pyplot as plt

    for ax, ev in zip(fig.axes, ("test", "test-rotated")):
        row_labels = [t.get_text() for t in ax.get_yticklabels()]
        col_labels = [float(t.get_text()) for t in ax.get_xticklabels()]
        assert sorted(row_labels) == ["alpha: classname", "alpha: templates", "beta: classname", "beta: templates"]
        assert col_labels == [1.0, 2.0, 4.0]
        want = np.array([[np.mean(cells[(ev, r, g)]) for g in col_labels] for r in row_labels])
        got = np.asarray(ax.collections[0].get_array(), float).reshape(want.shape)
        np.testing.assert_allclose(got, want, rtol=1e-12)
        assert [t.get_text() for t in ax.texts] == [f"{v:.2f}" for v in want.ravel()]
        assert ax.get_title().endswith("real at same N: 0.85")
    plt.close(fig)


def _bench(path, seconds):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
                    f"{seconds}\t0:00:01\t100\t1\t1\t1\t0\t0\t0\t{seconds}\n")


def test_benchmark_paths_map_to_grid_points(tmp_path):
    plan = Plan({"results": str(tmp_path), "dataset": {"name": "d"}, "train": {"arch": "r"}})
    root = tmp_path / "benchmarks"
    p = plan.benchmark("train_classifier", "synthetic/gen/g2/classname", "n300", "s1")
    assert p == f"{tmp_path}/benchmarks/train_classifier/synthetic/gen/g2/classname/n300/s1.tsv"
    point = parse_benchmark(p, root)
    assert (point["source"], point["n_label"], point["seed"]) == ("synthetic/gen/g2/classname", "300", 1)
    point = parse_benchmark(plan.benchmark("generate_block", "gen", "g1.5", "templates", "000003"), root)
    assert (point["generator"], point["guidance"], point["strategy"], point["rest"]) == ("gen", 1.5, "templates", "000003")
    assert parse_benchmark(plan.benchmark("train_classifier", "real", "nall"), root)["source"] == "real"


def test_benchmark_paths_of_mixed_and_filtered_sources(tmp_path):
    """A mix and a filtered set are sources of their own, not charged to the plain synthetic set."""
    plan = Plan({"results": str(tmp_path), "dataset": {"name": "d"}, "train": {"arch": "r"}})
    root = tmp_path / "benchmarks"
    mix = parse_benchmark(plan.benchmark("train_classifier", "mix/real30/synthetic/gen/g2/classname", "n90", "s0"), root)
    assert (mix["source"], mix["generator"], mix["n_label"]) == ("mix/real30/synthetic/gen/g2/classname", "gen", "90")
    filt = parse_benchmark(plan.benchmark("train_classifier", "synthetic/gen/g2/classname/f-conf", "n30", "s0"), root)
    assert filt["source"] == "synthetic/gen/g2/classname/f-conf" and filt["rest"] == ""


def test_benchmark_paths_read_back_the_keys_plan_builds(tmp_path):
    """parse_benchmark is Plan.benchmark's inverse over run_key and set_key, each arm's sources alike."""
    plan = Plan({"results": str(tmp_path), "dataset": {"name": "d"}, "train": {"arch": "r"}})
    root = tmp_path / "benchmarks"
    for source in ("real", "synthetic/gen/g1.5/c/f-conf", "mix/realall/synthetic/gen/g2/c", "mixed/gen/g2/c"):
        point = parse_benchmark(plan.benchmark("train_clip", plan.run_key(source, "30", 4)), root)
        assert (point["source"], point["n_label"], point["seed"], point["rest"]) == (source, "30", 4, "")
        assert point["generator"] == ("" if source == "real" else "gen")
    block = plan.set_key(parse_source("synthetic/gen/g1.5/c"), block="000100")
    assert block == "gen/g1.5/c/block-000100"
    point = parse_benchmark(plan.benchmark("generate_block", block), root)
    assert (point["source"], point["generator"], point["guidance"], point["strategy"], point["rest"]) == (
        "", "gen", 1.5, "c", "block-000100")
    point = parse_benchmark(plan.benchmark("filter_set", plan.set_key(parse_source("synthetic/gen/g2/c/f-conf"))), root)
    assert (point["generator"], point["guidance"], point["rest"]) == ("gen", 2.0, "f-conf")
    assert parse_benchmark(plan.benchmark("train_generator", "gen"), root)["rest"] == "gen"


def test_cost_table_from_benchmarks_and_without_them(tmp_path):
    summary = _summary(gens=("gen",))
    root = tmp_path / "benchmarks"
    plan = Plan({"results": str(tmp_path), "dataset": {"name": "d"}, "train": {"arch": "r"}})
    empty = cost_table(summary, read_benchmarks(root), 0.1)
    assert empty["total_h"].isna().all()
    assert cost_report.cost_findings(empty)[0].startswith("No benchmark recorded")
    for k in range(2):
        _bench(tmp_path / plan.benchmark("generate_block", "gen", "g2", "classname", f"{k:06d}").split(str(tmp_path) + "/")[1], 360)
    for src in ("real", "synthetic/gen/g2/classname"):
        for n in (30, 300):
            _bench(tmp_path / plan.benchmark("train_classifier", src, f"n{n}", "s0").split(str(tmp_path) + "/")[1], 180)
    for seed, seconds in ((1, 90), (2, 270)):  # more real seeds: the same mean cost per replicate, more in all
        _bench(tmp_path / plan.benchmark("train_classifier", "real", "n30", f"s{seed}").split(str(tmp_path) + "/")[1], seconds)
    _bench(tmp_path / plan.benchmark("train_classifier", "real", "nall", "s0").split(str(tmp_path) + "/")[1], 720)
    _bench(tmp_path / "benchmarks" / "train_clip" / "synthetic" / "gen" / "g2" / "classname" / "n30.tsv", 999)  # CLIP arm
    _bench(tmp_path / "benchmarks" / "train_generator" / "gen.tsv", 900)
    table = cost_table(summary, read_benchmarks(root), 0.1).set_index("source")
    syn, real = table.loc["synthetic/gen/g2/classname"], table.loc["real"]
    assert syn["generation_h"] == pytest.approx(0.2) and syn["training_h"] == pytest.approx(0.1)
    assert syn["total_h"] == pytest.approx(0.3) and real["total_h"] == pytest.approx(0.1)
    assert real["training_total_h"] == pytest.approx(1440 / 3600)  # n30 s0-s2, n300 s0 and nall
    assert syn["generator_training_h"] == pytest.approx(0.25)
    top1 = summary[(summary.source == "real") & (summary.n == 300) & (summary.eval_set == "test")]["top1"].mean()
    assert real["gain_per_hour"] == pytest.approx((top1 - 0.1) / 0.1)
    s_csv = tmp_path / "summary.csv"
    summary.to_csv(s_csv, index=False)
    (tmp_path / "manifest.json").write_text('{"classes": 10}')
    out = write_cost(s_csv, root, tmp_path / "manifest.json", tmp_path / "cost.csv", tmp_path / "cost.png", tmp_path / "cost.html")
    assert len(out) == 2 and (tmp_path / "cost.png").stat().st_size > 1000
    assert "compute seconds" in (tmp_path / "cost.html").read_text()


def test_generation_is_charged_per_image_a_source_trains_on(tmp_path):
    """A set over-generated to twice the grid's largest N (for a filter) costs each image what a set
    generated to N costs: the source training on N images is charged for N, not for the set, and the
    findings say which sources train on part of a larger set."""
    summary = _summary(gens=("gen", "big"))  # largest N 300
    plan = Plan({"results": str(tmp_path), "dataset": {"name": "d"}, "train": {"arch": "r"}})
    jobs = {"gen": 2, "big": 4}  # jobs of 150 images: 300 and 600 images, each job 360 s
    for gen, k in jobs.items():
        for b in range(k):
            _bench(tmp_path / plan.benchmark("generate_block", gen, "g2", "classname", f"{b:06d}").split(str(tmp_path) + "/")[1], 360)
        _bench(tmp_path / plan.benchmark("train_classifier", f"synthetic/{gen}/g2/classname", "n300", "s0").split(str(tmp_path) + "/")[1], 180)
    root = tmp_path / "benchmarks"
    table = cost_table(summary, read_benchmarks(root), 0.1, images_per_job=150).set_index("source")
    exact, over = table.loc["synthetic/gen/g2/classname"], table.loc["synthetic/big/g2/classname"]
    assert over["generation_set_h"] == pytest.approx(2 * exact["generation_set_h"])
    assert over["generation_h"] == pytest.approx(exact["generation_h"]) == pytest.approx(0.2)
    assert (over["used_images"], over["generated_images"]) == (300, 600)
    filtered = summary[summary["source"] == "synthetic/big/g2/classname"].assign(source="synthetic/big/g2/classname/f-conf")
    f_row = cost_table(filtered, read_benchmarks(root), 0.1, images_per_job=150).set_index("source").iloc[0]
    assert f_row["generation_h"] == pytest.approx(over["generation_set_h"])  # its filter read all 600
    whole = cost_table(summary, read_benchmarks(root), 0.1).set_index("source")  # per-job size unknown
    assert whole.loc["synthetic/big/g2/classname", "generation_h"] == pytest.approx(0.4)
    lines = cost_report.cost_findings(table.reset_index())
    assert any("synthetic/big/g2/classname 300 of 600" in s for s in lines)
    assert not any("synthetic/gen/g2/classname 300" in s for s in lines)


def test_one_n_value_gives_an_empty_scaling_table_and_findings_without_slopes(tmp_path):
    """A study with a single n_images value has nothing to fit: scaling.csv is empty, and the findings
    still report accuracy (no slope sentences)."""
    from synthscale.io import write_csv

    one_n = _summary()[lambda d: d["n"] == 300]
    fits = scaling_fits(one_n)
    assert fits.empty
    write_csv(tmp_path / "scaling.csv", fits)
    back = read_scaling(tmp_path / "scaling.csv")
    assert back.empty
    lines = scaling_report.scaling_findings(one_n, back, 10)
    assert lines and any("N=300" in s for s in lines) and not any("Scaling ability" in s for s in lines)


def test_report_entries_read_the_class_count_and_train_size_from_the_manifest(tmp_path):
    """write_findings, write_scaling_plot, write_guidance_plot and write_summaries take the manifest's
    path: what they write is what the old calls with its class count and train split size wrote."""
    from synthscale.analysis.report import write_html
    from synthscale.analysis.tables import write_summaries

    manifest = tmp_path / "manifest.json"
    manifest.write_text('{"classes": 10, "splits": {"train": {"count": 100}}}')
    summary = _summary(gens=("a", "b"), seeds=3, noise=0.05, rng=np.random.default_rng(0))
    summary.to_csv(tmp_path / "summary.csv", index=False)
    scaling_fits(summary).to_csv(tmp_path / "scaling.csv", index=False)
    scaling_report.write_findings(tmp_path / "summary.csv", tmp_path / "scaling.csv", manifest, "st", tmp_path / "f.html")
    old = scaling_report.scaling_findings(
        read_summary(tmp_path / "summary.csv"), read_scaling(tmp_path / "scaling.csv"), 10
    )
    write_html(tmp_path / "old.html", "Findings: st", old)
    assert (tmp_path / "f.html").read_bytes() == (tmp_path / "old.html").read_bytes()
    scaling_report.write_scaling_plot(tmp_path / "summary.csv", "loss", tmp_path / "loss.png", manifest)
    scaling_report.write_guidance_plot(tmp_path / "summary.csv", tmp_path / "guidance.png")
    assert (tmp_path / "loss.png").stat().st_size > 1000 and (tmp_path / "guidance.png").stat().st_size > 1000
    metrics = tmp_path / "m.csv"
    pd.DataFrame({"n_label": ["all"], "eval_set": ["test"], "loss": [1.0], "top1": [0.5], "seed": [0]}).to_csv(
        metrics, index=False
    )
    per_class = tmp_path / "pc.csv"
    pd.DataFrame({"n_label": ["all"], "eval_set": ["test"], "class": [0], "acc": [0.5], "seed": [0]}).to_csv(
        per_class, index=False
    )
    write_summaries(["real"], [metrics], [per_class], "r", {}, manifest, tmp_path / "s.csv", tmp_path / "p.csv")
    assert read_summary(tmp_path / "s.csv")["n"].tolist() == [100], "n_label all: the manifest's train count"
