"""Real + synthetic mixes (issue 9): source names, the plan, config checks, data, exchange rates, report.
The dry run of an added real_n value is in tests/workflow/test_mix_workflow.py."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from synthscale.study.config import ConfigError, check_config
from synthscale.analysis.mixing import (
    exchange_rates,
    mix_effects,
    read_rates,
    real_equivalent,
)
from synthscale.study.plan import Plan
from synthscale.study.sources import SOURCE_REGEX, parse_source, train_counts

torch.set_num_threads(1)
SET = {"generator": "tinydigits", "guidance": 2.0, "strategy": "classname"}
SYN = "synthetic/tinydigits/g2/classname"


def with_mix(raw, **mix):
    cfg = copy.deepcopy(raw)
    cfg["mix"] = mix
    return cfg


# --- source names and the plan ---


@pytest.mark.parametrize("r", ["30", "all"])
def test_mix_source_names_round_trip(r):
    name = f"mix/real{r}/{SYN}"
    src = parse_source(name)
    assert (src.kind, src.real_n, src.generator, src.guidance, src.strategy) == (
        "mix", r, "tinydigits", 2.0, "classname"
    )
    assert src.name == name and src.synthetic.name == SYN
    assert re.fullmatch(SOURCE_REGEX, name)


@pytest.mark.parametrize("bad", ["mix/real/" + SYN, "mix/realx/" + SYN, "mix/real030/" + SYN, "mix/real30/real"])
def test_bad_mix_names_are_rejected(bad):
    with pytest.raises(ValueError):
        parse_source(bad)


def test_plan_schedules_mixes_with_multiples_and_overrides(default_raw):
    cfg = check_config(with_mix(default_raw, real_n=[30, {"n": "all", "synthetic_multiples": [1]}],
                                synthetic_n=[50], synthetic_multiples=[1, 3], full_real_n=1203, sets=[SET]))
    plan = Plan(cfg)
    mix = [r for r in plan.mix_runs() if r[0].startswith("mix/")]
    assert mix == [  # the `all` entry's own amounts replace the section's (no +50, no 3x)
        (f"mix/real30/{SYN}", "50"), (f"mix/real30/{SYN}", "30"), (f"mix/real30/{SYN}", "90"),
        (f"mix/realall/{SYN}", "1203"),
    ]
    runs = plan.runs()
    assert len(runs) == len(set(runs)), "real baselines already in the N grid are not scheduled twice"
    assert ("real", "all") in runs and set(mix) <= set(runs)
    real, syn = plan.train_parts(f"mix/real30/{SYN}", "90")
    assert real == {"split": "train", "limit": 30}
    assert syn["limit"] == 90 and syn["shards"] == plan.shards("tinydigits", 2.0, "classname", 90)
    big = plan.train_parts(f"mix/realall/{SYN}", "1203")
    per_shard = cfg["generation"]["shard_size"]
    assert big[0]["limit"] is None and len(big[1]["shards"]) == -(-1203 // per_shard)  # ceil: 1203 images
    assert plan.train_parts("real", "60") == [{"split": "train", "limit": 60}]
    assert plan.train_parts(SYN, "60")[0]["limit"] == 60


def test_only_a_run_of_real_and_synthetic_parts_mixes(default_raw):
    """run_mix (script train_classifier): a mixed source's two parts get the config's mix spec; a real or
    synthetic run's one part gets none (a `prob` mix of one part is an error of the loader)."""
    from synthscale.classifier.train import run_mix

    plan = Plan(check_config(with_mix(default_raw, real_n=[30], synthetic_n=[50], sets=[SET])))
    spec = {"mode": "prob", "synthetic_prob": 0.5}
    assert run_mix(plan.train_parts(f"mix/real30/{SYN}", "50"), spec) == spec
    assert run_mix(plan.train_parts(SYN, "50"), spec) is None
    assert run_mix(plan.train_parts("real", "30"), spec) is None


def test_all_sets_mix_the_whole_grid(default_raw):
    plan = Plan(check_config(with_mix(default_raw, real_n=[30], synthetic_n=[30])))
    assert len([r for r in plan.mix_runs() if r[0].startswith("mix/")]) == len(plan.synthetic_grid())


def test_train_counts():
    assert train_counts("real", "all", 1203) == (1203, 0)
    assert train_counts("real", "30", 1203) == (30, 0)
    assert train_counts(SYN, "300", 1203) == (0, 300)
    assert train_counts(f"mix/real30/{SYN}", "90", 1203) == (30, 90)
    assert train_counts(f"mix/realall/{SYN}", "600", 1203) == (1203, 600)


# --- config checks ---


@pytest.mark.parametrize(
    "mix,expected",
    [
        ({"real_n": [30], "synthetic_n": [30], "sets": [{**SET, "guidance": 7.5}]}, "mix.sets.0.guidance"),
        ({"real_n": [30], "synthetic_n": [30], "sets": [{**SET, "strategy": "hypernym"}]}, "mix.sets.0.strategy"),
        ({"real_n": [30], "synthetic_n": [30], "sets": [{**SET, "generator": "sd"}]}, "mix.sets.0.generator"),
        ({"real_n": [30]}, "config key mix.synthetic_n"),
        ({"real_n": ["all"], "synthetic_multiples": [1]}, "config key mix.full_real_n"),
        ({"real_n": [30, 5000], "synthetic_n": [30], "full_real_n": 1203}, "config key mix.real_n.1: 5000"),
        ({"real_n": [30, {"n": 30}], "synthetic_n": [30]}, "config key mix.real_n: a value appears twice"),
        ({"real_n": [0], "synthetic_n": [30]}, "config key mix.real_n.0"),
        ({"real_n": [30], "synthetic_n": [30], "mode": "mixup"}, "config key mix.mode"),
        ({"real_n": [30], "synthetic_n": [30], "synthetic_prob": 1.5}, "config key mix.synthetic_prob"),
    ],
)
def test_bad_mix_config_names_the_key(default_raw, mix, expected, tmp_path):
    with pytest.raises(ConfigError, match=re.escape(expected)) as err:
        check_config(with_mix(default_raw, **mix), tmp_path)  # no prepared split there
    assert "\n" not in str(err.value)


def test_full_real_n_is_checked_against_the_manifest(default_raw, tmp_path):
    manifest = tmp_path / "results/data/digits/splits.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"classes": 10, "splits": {"train": {"count": 1000, "shards": []}}}))
    cfg = with_mix(default_raw, real_n=[30], synthetic_n=[30], full_real_n=1203)
    with pytest.raises(ConfigError, match="config key mix.full_real_n: 1203, but"):
        check_config(cfg, tmp_path)
    cfg["mix"].pop("full_real_n")
    cfg["mix"]["real_n"] = [1100]  # the manifest's count is known: more than it is an error
    with pytest.raises(ConfigError, match="config key mix.real_n.0: 1100 is more than the 1000"):
        check_config(cfg, tmp_path)
    # unset, the split's size is the manifest's: multiples of `all` count from it, and the real-only
    # grid stops at it (a real run "at 1500" would be the whole split under another name)
    cfg["mix"].update(real_n=["all"], synthetic_n=[], synthetic_multiples=[1])
    cfg["n_images"] = [30, 100, 300, 1500]
    checked = check_config(cfg, tmp_path)
    assert checked["mix"]["full_real_n"] == 1000
    plan = Plan(checked)
    assert plan.mix_amounts("all", [], [1]) == [1000]
    assert [n for s, n in plan.runs() if s == "real"] == ["30", "100", "300", "all"]
    assert ("synthetic/tinydigits/g2/classname", "1500") in plan.runs()


# --- training data ---



def test_training_parts_take_first_r_real_and_n_synthetic(tmp_path, digits_16):
    """Plan's parts resolve to loader parts: the real split's shards with limit R, then the synthetic set."""
    from synthscale.data.real import write_split
    from synthscale.data.loader import build_train_loader, epoch_size
    from synthscale.classifier.recipes import resolve_recipe
    from synthscale.data.shards import write_shard
    from synthscale.classifier.train import training_parts

    images, labels = digits_16
    names = write_split(tmp_path / "train", images[:100], labels[:100], shard_size=40)
    manifest = tmp_path / "splits.json"
    manifest.write_text(json.dumps({"classes": 10, "splits": {"train": {"shards": [f"train/{n}" for n in names], "count": 100}}}))
    syn = tmp_path / "syn.tar"
    write_shard(syn, images[100:160], [{"key": f"{i:08d}", "label": 7} for i in range(60)])
    parts, c = training_parts([{"split": "train", "limit": 45}, {"shards": [str(syn)], "limit": 20}], manifest)
    assert c == 10 and parts[0]["limit"] == 45 and len(parts[0]["shards"]) == 3 and parts[1]["limit"] == 20
    assert epoch_size(parts, {"mode": "concat"}) == 65
    recipe = resolve_recipe({"recipe": "digits", "input_size": 16})
    ys = [y for _, y in build_train_loader(parts, recipe, 0, 0, mix={"mode": "concat"}, batch_size=16, num_workers=0)]
    y = np.concatenate([t.numpy() for t in ys])
    assert len(y) == 65 and (y == 7).sum() == 20 + (labels[:45] == 7).sum()
    # more real images than the split holds: the job fails rather than train on fewer under the run's name
    with pytest.raises(ValueError, match="asks for 101 real images"):
        training_parts([{"split": "train", "limit": 101}], manifest)


# --- the order of a mix: a mixture at every worker count and rank, never a curriculum ---

N_REAL, N_SYN, SYN_ID = 600, 300, 10_000  # labels carry identities: real 0.., synthetic SYN_ID..
MIX_BATCH = 32  # a window of 4 batches is 128 draws: a random interleaving's share has sd 0.04 there


def _order_parts(kind, tmp_path, syn_shard=50):
    """600 real + 300 synthetic images whose labels are their identities. The real part holds 650 and
    keeps its first 600 (nested N); shard parts come in shards of 50 (synthetic: of `syn_shard`, so 1
    or 3 shards leave some streams without a whole synthetic shard)."""
    from helpers.data import write_digit_shards

    img = np.zeros((650, 8, 8, 3), np.uint8)
    real_y, syn_y = np.arange(650), SYN_ID + np.arange(N_SYN)
    if kind == "arrays":
        return [{"arrays": (img, real_y), "limit": N_REAL}, {"arrays": (img[:N_SYN], syn_y), "limit": None}]
    syn = f"syn{syn_shard}"
    for d in ("real", syn):
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
    return [{"shards": write_digit_shards(tmp_path / "real", img, real_y, 50), "limit": N_REAL},
            {"shards": write_digit_shards(tmp_path / syn, img[:N_SYN], syn_y, syn_shard), "limit": N_SYN}]


def _order_recipe():
    from synthscale.classifier.train import full_recipe

    return full_recipe({"arch": "resnet18", "input_size": 8, "pad_crop": 1, "shuffle_buffer": 64})


def _batch_labels(parts, workers, epoch=0, mix=None, seed=7):
    from synthscale.data.loader import build_train_loader

    loader = build_train_loader(parts, _order_recipe(), seed, epoch, mix=mix, batch_size=MIX_BATCH,
                                num_workers=workers)
    return [y.numpy() for _, y in loader]


def _window_gaps(batches):
    """Each window of 4 consecutive batches: |its synthetic share - the whole stream's share|."""
    syn = np.array([(y >= SYN_ID).sum() for y in batches])
    size = np.array([len(y) for y in batches])
    overall = syn.sum() / size.sum()
    return overall, [abs(syn[s : s + 4].sum() / size[s : s + 4].sum() - overall) for s in range(len(batches) - 3)]


def _assert_mixture(batches, where):
    overall, gaps = _window_gaps(batches)
    assert len(gaps) >= 3, where
    assert 0 < overall < 1, where
    worst = int(np.argmax(gaps))
    assert gaps[worst] <= 0.15, (
        f"{where}: batches {worst}-{worst + 3} have a synthetic share {gaps[worst]:.2f} away from the "
        f"stream's {overall:.2f} (a curriculum, not a mixture)"
    )


def _assert_each_image_once(labels):
    expected = np.concatenate([np.arange(N_REAL), SYN_ID + np.arange(N_SYN)])
    assert np.array_equal(np.sort(labels), expected), "concat reads every image of every part exactly once"


@pytest.mark.parametrize("kind", ["arrays", "shards"])
@pytest.mark.parametrize("workers", [0, 2])
def test_concat_mix_interleaves_its_parts(tmp_path, kind, workers):
    """600 real + 300 synthetic: every window of 4 batches has about a third synthetic images (the
    first batches are not all real, the last not all synthetic), every image comes exactly once an
    epoch, the order repeats for the same (seed, epoch) and changes with the epoch."""
    parts = _order_parts(kind, tmp_path)
    batches = _batch_labels(parts, workers)
    _assert_mixture(batches, f"{kind}, {workers} workers")
    labels = np.concatenate(batches)
    _assert_each_image_once(labels)
    assert abs((labels >= SYN_ID).mean() - N_SYN / (N_REAL + N_SYN)) < 1e-9
    again = np.concatenate(_batch_labels(parts, workers))
    assert np.array_equal(again, labels), "the same (seed, epoch) gives the same order"
    other = _batch_labels(parts, workers, epoch=1)
    _assert_mixture(other, f"{kind}, {workers} workers, epoch 1")
    assert not np.array_equal(np.concatenate(other), labels)


@pytest.mark.parametrize("syn_shard", [300, 100])
def test_concat_mix_is_balanced_when_shards_do_not_split_evenly(tmp_path, syn_shard):
    """300 synthetic images in 1 (or 3) shards over 2 workers: each worker reads half of them (not
    one worker all), so every window of 4 batches holds about a third synthetic images, each image once."""
    parts = _order_parts("shards", tmp_path, syn_shard)
    assert len(parts[1]["shards"]) == N_SYN // syn_shard
    batches = _batch_labels(parts, 2)
    _assert_mixture(batches, f"synthetic in {N_SYN // syn_shard} shard(s), 2 workers")
    _assert_each_image_once(np.concatenate(batches))
    _assert_workers_balanced(batches, 2, "2 workers")


def _assert_workers_balanced(batches, workers, where):
    """The loader takes batches from its workers in turn: each worker's batches (every `workers`-th)
    hold the parts in their global share, and the workers give the same number of batches."""
    for w in range(workers):
        mine = np.concatenate(batches[w::workers])
        share = (mine >= SYN_ID).mean()
        assert abs(share - N_SYN / (N_REAL + N_SYN)) < 0.01, f"{where}: worker {w}'s synthetic share is {share:.2f}"
    assert len(batches) % workers == 0, f"{where}: the workers' epochs differ in length"


@pytest.mark.parametrize("workers", [0, 2])
def test_prob_mix_is_a_mixture_too(tmp_path, workers):
    parts = _order_parts("arrays", tmp_path)
    batches = _batch_labels(parts, workers, mix={"mode": "prob", "synthetic_prob": 1 / 3})
    _assert_mixture(batches, f"prob, {workers} workers")
    assert sum(len(y) for y in batches) == N_REAL


def _rank_batches(rank, tmp, runs):
    """One gloo rank: its batches for each (kind, parts, workers) in `runs`, saved for the test."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=2)
    try:
        for kind, parts, workers in runs:
            batches = _batch_labels(parts, workers)
            np.savez(Path(tmp) / f"{kind}-{workers}-rank{rank}.npz", *batches)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_concat_mix_interleaves_on_every_rank(tmp_path):
    """Two gloo ranks (2 processes): each rank's batches are a mixture, and the ranks together read
    every image exactly once an epoch (arrays split by sample, shards by balanced sample ranges)."""
    import torch.multiprocessing as mp

    parts = {kind: _order_parts(kind, tmp_path) for kind in ("arrays", "shards")}
    runs = [("arrays", parts["arrays"], 0), ("arrays", parts["arrays"], 2), ("shards", parts["shards"], 0),
            ("shards", parts["shards"], 2)]  # 6 synthetic shards over 4 streams: whole shards split 2/2/1/1
    mp.spawn(_rank_batches, args=(str(tmp_path), runs), nprocs=2, join=True)
    for kind, _, workers in runs:
        labels = []
        for rank in range(2):
            with np.load(tmp_path / f"{kind}-{workers}-rank{rank}.npz") as z:
                batches = [z[f"arr_{i}"] for i in range(len(z.files))]
            _assert_mixture(batches, f"{kind}, {workers} workers, rank {rank} of 2")
            if workers:
                _assert_workers_balanced(batches, workers, f"{kind}, rank {rank} of 2")
            labels.append(np.concatenate(batches))
        _assert_each_image_once(np.concatenate(labels))


def test_mixed_run_resumes_bit_identically(tmp_path):
    """A two-part concat mix through a loader worker, stopped mid-epoch and resumed: the weights of the
    uninterrupted run, bit for bit (the interleaving replays from the epoch's seed)."""
    from helpers.data import make_data, write_digit_shards
    from helpers.training import RECIPE, assert_same_weights

    from synthscale.classifier.train import train_model
    from synthscale.preemption import Preempted

    images, labels = make_data(72)
    for d in ("real", "syn"):
        (tmp_path / d).mkdir()
    parts = [{"shards": write_digit_shards(tmp_path / "real", images[:48], labels[:48], 24), "limit": 40},
             {"shards": write_digit_shards(tmp_path / "syn", images[48:], labels[48:], 12), "limit": 20}]
    recipe = {**RECIPE, "num_workers": 1, "input_size": 16, "shuffle_buffer": 8}
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = tmp_path / "ref"
        train_model(parts, 10, recipe, 3, ref / "m.safetensors", ref / "log.csv", progress=False)
        run = tmp_path / "run"
        kwargs = dict(model_path=run / "m.safetensors", log_path=run / "log.csv", checkpoint_path=run / "c.pt",
                      progress=False)
        with pytest.raises(Preempted, match="stopped at step 6/"):  # 4 steps an epoch: mid-epoch 2
            train_model(parts, 10, recipe, 3, stop_after_steps=6, **kwargs)
        train_model(parts, 10, recipe, 3, **kwargs)
    finally:
        torch.set_num_threads(old)
    assert_same_weights(ref / "m.safetensors", run / "m.safetensors")


# --- exchange rate ---


def test_real_equivalent_reads_the_curve_in_log_n():
    n, acc = [10, 100, 1000], [0.2, 0.5, 0.8]
    est, lo, hi, cens = real_equivalent(n, acc, 0.65)
    assert est == pytest.approx(np.sqrt(100 * 1000)) and (lo, hi, cens) == (100, 1000, "")
    assert real_equivalent(n, acc, 0.5)[0] == pytest.approx(100)
    assert real_equivalent(n, acc, 0.1)[3] == "below" and np.isnan(real_equivalent(n, acc, 0.1)[0])
    assert real_equivalent(n, acc, 0.9)[3] == "above"
    # loss falls with N: the same reading with lower as better
    assert real_equivalent(n, [2.0, 1.0, 0.5], 0.75, higher_is_better=False)[0] == pytest.approx(np.sqrt(1e5))
    # a dip in the real curve is pooled before inverting, so the reading is unique
    est, lo, hi, _ = real_equivalent([10, 30, 100, 300], [0.2, 0.5, 0.4, 0.8], 0.6)
    assert 100 <= est <= 300 and (lo, hi) == (100, 300)


def _summary(seeds=(0,), jitter=0.0):
    """A study: real at 10/100/1000 (=all), synthetic-only, mixes at scarce and full real, two eval sets."""
    rng = np.random.default_rng(0)
    rows = []

    def add(source, kind, n_label, real_n, syn_n, top1_test, top1_ood):
        for seed in seeds:
            for ev, t, ood in [("test", top1_test, False), ("test-rotated", top1_ood, True)]:
                t = t + jitter * rng.standard_normal()
                rows.append({"source": source, "kind": kind, "n_label": n_label, "real_n": real_n,
                             "synthetic_n": syn_n, "n": real_n + syn_n, "eval_set": ev, "ood": ood,
                             "top1": t, "loss": 3 * (1 - t), "seed": seed})

    add("real", "real", "10", 10, 0, 0.2, 0.1)
    add("real", "real", "100", 100, 0, 0.5, 0.3)
    add("real", "real", "all", 1000, 0, 0.8, 0.5)
    add(SYN, "synthetic", "100", 0, 100, 0.35, 0.3)
    add(f"mix/real10/{SYN}", "mix", "10", 10, 10, 0.35, 0.25)
    add(f"mix/real10/{SYN}", "mix", "30", 10, 30, 0.5, 0.3)
    add(f"mix/realall/{SYN}", "mix", "1000", 1000, 1000, 0.75, 0.55)
    return pd.DataFrame(rows)


def test_exchange_rates_from_one_seed():
    rates = exchange_rates(_summary())
    top = rates[(rates.metric == "top1") & (rates.eval_set == "test")].set_index(["source", "synthetic_n"])
    alone = top.loc[(SYN, 100)]
    assert alone["real_equivalent"] == pytest.approx(np.sqrt(1000)) and alone["worth"] == pytest.approx(np.sqrt(1000))
    assert alone["rate"] == pytest.approx(np.sqrt(1000) / 100) and alone["interval"] == "bracket"
    assert (alone["real_equivalent_low"], alone["real_equivalent_high"]) == (10, 100)
    scarce = top.loc[(f"mix/real10/{SYN}", 30)]  # 10 real + 30 synthetic reach real-100 accuracy
    assert scarce["real_equivalent"] == pytest.approx(100) and scarce["worth"] == pytest.approx(90)
    assert scarce["rate"] == pytest.approx(3.0)
    full = top.loc[(f"mix/realall/{SYN}", 1000)]  # below the full real set: synthetic data cost accuracy
    assert full["worth"] < 0 and full["censored"] == ""
    ood_full = rates[(rates.metric == "top1") & (rates.eval_set == "test-rotated") & (rates.real_n == 1000)]
    assert ood_full["censored"].iloc[0] == "above"  # better than anything on the real curve
    loss = rates[(rates.metric == "loss") & (rates.eval_set == "test")].set_index(["source", "synthetic_n"])
    assert loss.loc[(SYN, 100), "real_equivalent"] == pytest.approx(np.sqrt(1000))


def test_exchange_rate_interval_bootstraps_over_seeds():
    rates = exchange_rates(_summary(seeds=(0, 1, 2, 3), jitter=0.02), draws=200)
    row = rates[(rates.metric == "top1") & (rates.eval_set == "test") & (rates.kind == "synthetic")].iloc[0]
    assert row["interval"] == "bootstrap" and row["seeds"] == 4
    assert row["real_equivalent_low"] < row["real_equivalent"] < row["real_equivalent_high"]


def test_effects_findings_and_figures(tmp_path):
    from synthscale.analysis.mix_report import findings, plot_augmentation, plot_exchange, plot_scarce_real

    summary = _summary()
    mix = {"real_n": [10, "all"], "synthetic_multiples": [1, 3]}
    effects = mix_effects(summary, mix)
    e = effects[effects.eval_set == "test"].set_index("synthetic_n")
    assert e.loc[30, "delta_top1"] == pytest.approx(0.3) and e.loc[30, "amount"] == "+3x"
    assert e.loc[10, "amount"] == "+1x" and bool(e.loc[1000, "real_all"])
    # one seed everywhere: no estimate of one run's noise, so no change is called helped or hurt
    assert (effects["verdict"] == "undetermined").all() and effects["noise"].isna().all()
    rates = exchange_rates(summary)
    # the tables survive their CSV round trip
    effects.to_csv(tmp_path / "e.csv", index=False)
    rates.to_csv(tmp_path / "r.csv", index=False)
    effects, rates = read_rates(tmp_path / "e.csv"), read_rates(tmp_path / "r.csv")
    lines = findings(effects, rates)
    text = "\n".join(lines)
    assert "Scarce real (10 real images), test: adding 30 synthetic images (+3x" in text
    assert "from 0.200 to 0.500 (+0.300)" in text and "undetermined" in text
    assert "Full real (1000 real images), test: adding 1000 synthetic images" in text
    assert ": helped." not in text and ": hurt." not in text
    assert all(re.search(r"\d", s) for s in lines), "every finding states a number"
    for fn, args in [(plot_scarce_real, (summary, mix)), (plot_augmentation, (summary,))]:
        fn(*args, tmp_path / f"{fn.__name__}.png", 0.1)
    plot_exchange(rates, tmp_path / "exchange.png")
    for p in ["plot_scarce_real.png", "plot_augmentation.png", "exchange.png"]:
        assert (tmp_path / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from synthscale.analysis.mix_report import write_mix_findings, write_mix_plots

    page = tmp_path / "mix" / "findings.html"
    write_mix_findings(tmp_path / "e.csv", tmp_path / "r.csv", "st", page)
    # the files it reads, named by their folder and name: the same text wherever the results lie
    assert f"computed from {tmp_path.name}/e.csv and {tmp_path.name}/r.csv of this run" in page.read_text()
    summary.to_csv(tmp_path / "s.csv", index=False)
    (tmp_path / "manifest.json").write_text('{"classes": 10}')
    out = {k: tmp_path / f"m_{k}.png" for k in ("scarce", "augment", "exchange")}
    write_mix_plots(tmp_path / "s.csv", tmp_path / "r.csv", mix, tmp_path / "manifest.json", out)
    assert all(p.stat().st_size > 1000 for p in out.values())


def test_summary_carries_real_and_synthetic_counts(tmp_path):
    from synthscale.analysis.tables import build_summary

    paths = []
    for i, labels in enumerate([["30", "all"], ["30"], ["30", "90"]]):
        p = tmp_path / f"m{i}.csv"
        pd.DataFrame({"n_label": labels, "eval_set": "test", "loss": 1.0, "top1": 0.5}).to_csv(p, index=False)
        paths.append(p)
    out = build_summary(["real", SYN, f"mix/real30/{SYN}"], paths, "resnet18", {"test": False}, 1203)
    got = out[["source", "kind", "real_n", "synthetic_n", "n"]].values.tolist()
    assert got == [
        ["real", "real", 30, 0, 30], ["real", "real", 1203, 0, 1203], [SYN, "synthetic", 0, 30, 30],
        [f"mix/real30/{SYN}", "mix", 30, 30, 60], [f"mix/real30/{SYN}", "mix", 30, 90, 120],
    ]



def test_mix_rows_leave_the_synthetic_scaling_analysis_alone():
    from synthscale.analysis.scaling_report import scaling_findings as findings, scaling_fits

    summary = _summary().assign(arch="resnet18", generator="", guidance=np.nan, strategy="")
    plain = summary[summary["kind"] != "mix"]
    assert findings(summary, pd.DataFrame(), 10) == findings(plain, pd.DataFrame(), 10)
    fits = scaling_fits(summary)
    assert len(fits) and not fits["source"].str.startswith("mix/").any()
    assert fits.equals(scaling_fits(plain))


def test_a_mix_worse_than_its_real_part_is_said_to_hurt():
    from synthscale.analysis.mix_report import _fmt_worth

    row = pd.Series({"censored": "", "worth": -23.0, "worth_low": -30.0, "worth_high": 0.0, "rate": -0.13,
                     "real_n": 60, "real_equivalent_low": 30.0, "real_equivalent_high": 60.0})
    text = _fmt_worth(row)
    assert "like 37 real images" in text and "fewer than the 60" in text and "-23" not in text
    good = _fmt_worth(pd.Series({**row.to_dict(), "worth": 25.0, "worth_low": -5.0, "worth_high": 40.0, "rate": 0.4}))
    assert good.startswith("25 real images [0, 40]")


def test_noise_is_the_comparisons_own_seed_sd_else_pooled_with_t_quantiles():
    """Real-only seeds at real_n 10 (5 seeds) and 100 (3 seeds, noisier), one mixed run per point: at
    real_n 10 one run's noise is the seed sd of its own 5 real-only runs (4 df), the threshold
    t(0.975, 4) * sd * sqrt(1 + 1/5), computed here by hand; the full set (one real-only run) takes the
    sd pooled over both N (6 df). A delta inside the threshold is within noise, beyond it helped or hurt."""
    from scipy import stats

    from synthscale.analysis.mix_report import findings

    one = _summary()
    parts = [one]
    for n_label, devs in (("10", (0.035, -0.035, 0.07, -0.07)), ("100", (0.14, -0.14))):
        extra = one[(one["source"] == "real") & (one["n_label"] == n_label)]
        parts += [extra.assign(seed=s, top1=extra["top1"] + d) for s, d in zip(range(1, 5), devs)]
    summary = pd.concat(parts, ignore_index=True)
    effects = mix_effects(summary, {"real_n": [10, "all"], "synthetic_multiples": [1, 3]})
    test = summary[(summary.source == "real") & (summary.eval_set == "test")]
    a, b = test[test.n_label == "10"]["top1"], test[test.n_label == "100"]["top1"]
    own = a.std(ddof=1)
    pooled = np.sqrt((4 * a.var(ddof=1) + 2 * b.var(ddof=1)) / 6)
    scarce = effects[(effects.real_n == 10) & (effects.eval_set == "test")].set_index("synthetic_n")
    expected = stats.t.ppf(0.975, 4) * own * np.sqrt(1 + 1 / 5)
    assert scarce["noise_df"].tolist() == [4, 4] and scarce["noise_sd"].tolist() == pytest.approx([own] * 2)
    assert scarce["noise"].tolist() == pytest.approx([expected] * 2)
    assert set(scarce["noise_from"]) == {"this N"}
    for _, row in scarce.iterrows():
        d = row["top1"] - a.mean()
        assert row["delta_top1"] == pytest.approx(d)
        assert row["verdict"] == ("within noise" if abs(d) <= expected else "helped" if d > 0 else "hurt")
    assert set(scarce["verdict"]) == {"within noise", "helped"}  # +0.15 inside, +0.30 beyond
    # the full set has one real-only run: the pooled sd, one run against one run
    full = effects[(effects.real_all) & (effects.eval_set == "test")].iloc[0]
    assert full["noise_from"] == "pooled" and full["noise_df"] == 6
    assert full["noise"] == pytest.approx(stats.t.ppf(0.975, 6) * pooled * np.sqrt(2))
    text = "\n".join(findings(effects, exchange_rates(summary)))
    assert "from real-only seeds at N = 10 (4 df)" in text and "from real-only seeds at N = 10, 100 (6 df)" in text


def test_monotone_single_seed_curve_gives_undetermined_not_helped():
    """The old floor (largest reversal of the real-only curve) was 0 on a monotone curve, so a tiny
    change counted as helped or hurt; with no seed replicates there is no noise estimate at all."""
    summary = _summary()
    summary.loc[summary.source.str.startswith("mix/real10"), "top1"] += 0.001 - 0.15
    effects = mix_effects(summary, {"real_n": [10, "all"], "synthetic_multiples": [1, 3]})
    assert set(effects["verdict"]) == {"undetermined"}
