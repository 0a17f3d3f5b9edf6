"""Workflow tests: Snakemake end to end on configs/test.yaml, incremental rebuilds, report, bad input.

The study runs once per session in a temporary working directory; the other tests dry-run against it.
"""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from helpers.workflow import dry, new_workdir, smk
from synthscale import warm

pytestmark = pytest.mark.workflow


def test_outputs_are_complete_and_real(study):
    results = study / "results-test"
    summary = pd.read_csv(results / "summary.csv")
    # 2 guidance x 1 strategy x 2 N synthetic + real at 2 N x 2 seeds (train.real_seeds), each on 2 eval sets
    assert len(summary) == (2 * 2 + 2 * 2) * 2
    assert sorted(summary.loc[summary.kind == "real", "seed"].unique()) == [0, 1]
    assert set(summary.loc[summary.kind == "synthetic", "seed"]) == {0}
    assert set(summary["eval_set"]) == {"test", "test-rotated"}
    assert summary.loc[summary.eval_set == "test-rotated", "ood"].all()
    assert summary["loss"].notna().all() and summary["top1"].between(0, 1).all()
    real = summary[(summary.kind == "real") & (summary.eval_set == "test")]
    assert real["top1"].max() > 0.2, "a real-data classifier must beat chance (0.1)"
    scaling = pd.read_csv(results / "scaling.csv")
    assert {"k", "k_low", "k_high", "B", "r2"} <= set(scaling.columns)
    assert len(scaling[scaling.metric == "loss"]) == 3 * 2  # (2 synthetic + real) sources x 2 eval sets
    for png in ["plots/scaling_loss.png", "plots/scaling_top1.png", "plots/guidance_strategy.png",
                "plots/samples/tiny_g1_classname.png", "plots/samples/tiny_g3_classname.png"]:
        assert (results / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert "Scaling ability k" in (results / "findings.html").read_text()
    log = pd.read_csv(results / "train/resnet18/real/n40/s0/log.csv")
    assert {"epoch", "train_loss", "train_acc"} <= set(log.columns)


def test_nothing_left_to_do(study):
    proc = smk(study, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr
    # every CLIP run's caption shards (a temporary output) are gone once its CLIP is trained
    models = list((study / "results-test" / "clip").glob("**/model.safetensors"))
    assert models and not list((study / "results-test" / "clip").glob("**/pairs"))


def test_adding_a_guidance_value_schedules_only_its_jobs(study):
    counts = dry(study, overrides={"guidance": [1.0, 3.0, 2.0]})
    assert counts["generate_block"] == 2  # N=40 is two shards of 20
    assert counts["train_classifier"] == 2 and counts["evaluate"] == 1  # one eval job per source
    assert counts["sample_grid"] == 1 and counts["quality"] == 1
    assert "train_generator" not in counts and "prepare_data" not in counts


def test_adding_a_strategy_schedules_only_its_jobs(study):
    counts = dry(study, overrides={"strategies": ["classname", "hypernym"]})
    assert counts["prompts"] == 1
    assert counts["generate_block"] == 4  # 2 guidance x 2 shards
    assert counts["train_classifier"] == 4 and counts["evaluate"] == 2
    assert "train_generator" not in counts


def test_raising_n_generates_only_new_shards(study):
    counts = dry(study, overrides={"n_images": [20, 40, 60]})
    assert counts["generate_block"] == 2  # one new shard per guidance value
    assert counts["train_classifier"] == 4  # two synthetic sets and the real baseline (2 seeds) at N=60
    assert counts["evaluate"] == 3
    assert "train_generator" not in counts


def test_new_recipe_retrains_but_regenerates_nothing(study):
    counts = dry(study, overrides={"train": {"lr": 0.001}})
    assert counts["train_classifier"] == 2 * 2 + 2 * 2 and counts["evaluate"] == 3  # real: 2 seeds
    assert "generate_block" not in counts and "train_generator" not in counts


def test_two_clean_runs_write_identical_shards_weights_and_metrics(study, tmp_path):
    """A second clean run, in another Snakemake process and with cold job starts (the study ran warm:
    each job a fork of synthscale.warm's server), writes the same bytes: every shard, and one
    synthetic source's classifiers (N = 20 and 40) and its eval table."""
    other = new_workdir(tmp_path / "again")
    shards = sorted((study / "results-test/synthetic").rglob("*.tar"))
    assert len(shards) == 4
    rel = [str(p.relative_to(study)) for p in shards]
    source = "synthetic/tiny/g1/classname"
    trained = [f"results-test/train/resnet18/{source}/n{n}/s0/model.safetensors" for n in (20, 40)]
    metrics = f"results-test/eval/resnet18/{source}/metrics.csv"
    smk(other, "--cores", "2", *rel, *trained, metrics, overrides={"warm_start": False})
    log = f"results-test/logs/train/resnet18/{source}/n20/s0.log"
    assert (study / log).read_text().startswith(warm.STARTED), "the study's jobs did not start warm"
    assert warm.STARTED not in (other / log).read_text(), "warm_start: false still started a job warm"
    for r in rel + trained + [metrics]:
        a = hashlib.sha256((study / r).read_bytes()).hexdigest()
        b = hashlib.sha256((other / r).read_bytes()).hexdigest()
        assert a == b, f"{r} differs between two clean runs"
    assert len(pd.read_csv(other / metrics)) == 2 * 2  # 2 N x 2 eval sets, one seed

    # a job killed mid-shard leaves only a temporary name: the rerun builds exactly that shard again
    lost = other / rel[1]
    original = lost.read_bytes()
    lost.unlink()
    (lost.parent / f".tmp-{lost.name}-killed").write_bytes(original[: len(original) // 2])
    assert dry(other, *rel) == {"generate_block": 1}
    smk(other, "--cores", "1", *rel)
    assert lost.read_bytes() == original


def test_report_builds(study):
    smk(study, "--report", "report.html")
    page = (study / "report.html").read_text(errors="replace")
    assert "scaling_loss.png" in page and "findings.html" in page


@pytest.mark.parametrize(
    "override,message",
    [
        ("train={arch: resnet_nope}", "config key train.arch: 'resnet_nope' is not a timm model name"),
        ("strategies=[classname,nonsense]", "unknown prompt strategy 'nonsense'"),
        ("dataset={kind: imagefolder, train_dir: /missing/train, test_dir: /missing/val, classes_csv: /missing/c.csv}",
         "config key dataset.train_dir: path '/missing/train' does not exist"),
    ],
)
def test_bad_input_stops_before_any_job(tmp_path, override, message):
    work = new_workdir(tmp_path / "bad")
    proc = smk(work, "--cores", "1", "--config", override, check=False)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if "synthscale:" in ln]
    assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    assert not (work / "results-test").exists(), "no job may start on a bad config"


def test_clip_only_study_trains_no_classifier(study, tmp_path):
    """train.supervised: false (a CLIP-only study, as configs/fan-clip.yaml) drops the classifier arm:
    no classifier, evaluation, summary, fits or cost; the quality stage runs with its own judge and
    without CAS; the CLIP arm is untouched."""
    import shutil

    work = tmp_path / "clip-only"
    shutil.copytree(study, work, symlinks=True)  # copy2 keeps the mtimes: nothing is stale
    off = {"train": {"supervised": False}}
    counts = dry(work, overrides=off)
    assert not {"train_classifier", "evaluate", "summary", "scaling_fits", "findings", "cost"} & set(counts), counts
    assert not {"generate_block", "train_generator", "train_clip", "evaluate_clip"} & set(counts), counts
    # the test study's judge is its own (train.real_full is off): only the summary's inputs changed
    assert counts == {"quality_summary": 1, "all": 1}, counts
    smk(work, "--cores", "2", overrides=off)
    quality = pd.read_csv(work / "results-test/quality.csv")
    assert len(quality) == 2 and quality["cas"].isna().all()
    assert quality["recognizability"].between(0, 1).all() and quality["fid"].notna().all()
    assert "CAS is not measured" in (work / "results-test/quality_findings.html").read_text()
    assert (work / "results-test/plots/quality_fid_cas.png").stat().st_size > 0
    proc = smk(work, "-n", overrides=off)
    assert "Nothing to be done" in proc.stdout + proc.stderr
