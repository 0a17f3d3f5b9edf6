"""Quality metrics: checked against independent references and on inputs whose answer is known."""

from __future__ import annotations

import copy
import json
import runpy
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import torch

import yaml

from helpers import REPO as ROOT
from helpers.data import prepared_paths
from synthscale.quality import judge as J
from synthscale.quality import metrics as M
from synthscale.analysis import quality_report
from synthscale.analysis.quality_report import per_class_slopes, trends
from synthscale.study.config import check_config
from synthscale.data.real import prepare_digits, split_shards
from synthscale.study.plan import Plan
from synthscale.data.shards import load_arrays, write_shard
from synthscale.classifier.train import create_classifier, load_classifier, predict, train_classifier

TINY = {"channels": (16, 32, 64, 128)}
RECIPE = {
    "arch": "resnet18",
    "model_kwargs": TINY,
    "epochs": 1,
    "min_steps": 60,
    "batch_size": 64,
    "lr": 0.003,
    "weight_decay": 0.05,
    "pad_crop": 1,
}


def qcfg(**over) -> dict:
    """The schema's `quality` defaults (the only copy of them), as the config check resolves them (the
    reference set: the first eval set), with small KID subsets."""
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg = copy.deepcopy(check_config(raw)["quality"])
    cfg.update(kid_subsets=10, kid_subset_size=50, **over)
    return cfg


def fid_reference(a: np.ndarray, b: np.ndarray) -> float:
    """FID written independently: numpy moments and scipy's matrix square root."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def macro_f1_reference(pred: np.ndarray, labels: np.ndarray, n_classes: int) -> float:
    """Macro-F1 from a confusion matrix in numpy, independent of sklearn."""
    cm = np.zeros((n_classes, n_classes))
    np.add.at(cm, (labels, pred), 1)
    tp = np.diag(cm)
    prec = np.divide(tp, cm.sum(0), out=np.zeros(n_classes), where=cm.sum(0) > 0)
    rec = np.divide(tp, cm.sum(1), out=np.zeros(n_classes), where=cm.sum(1) > 0)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros(n_classes), where=(prec + rec) > 0)
    return float(f1.mean())


# ---------------------------------------------------------------- fixtures: digits and a tiny judge


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: tiny convolutions gain nothing from more, and a busy 2-core CI machine
    makes torch's thread pool spin (measured 30x slower with 2 threads under load)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("digits")
    prepare_digits(out, 16, 0.33, [{"name": "test"}], shard_size=1000, seed=0, **prepared_paths(out))
    return out / "splits.json"


@pytest.fixture(scope="module")
def judge_file(digits, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("judge")
    images, labels, _ = load_arrays(split_shards(digits, "train"))
    train_classifier(images, labels, 10, RECIPE, 0, d / "model.safetensors", d / "log.csv", progress=False)
    return d / "model.safetensors"


@pytest.fixture(scope="module")
def test_set(digits):
    images, labels, _ = load_arrays(split_shards(digits, "test"))
    return images, labels


# ---------------------------------------------------------------- FID, KID, IS


def test_fid_matches_scipy_reference():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 12))
    b = rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12)) * 0.5 + 0.7
    ours, ref = M.fid_from_features(a, b), fid_reference(a, b)
    assert ref > 1.0
    assert abs(ours - ref) / ref < 1e-3


def test_fid_of_a_set_against_itself_is_zero():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(200, 8)) * 3 + 1
    assert abs(M.fid_from_features(a, a)) < 1e-6
    assert M.fid_from_features(a, a + 1.0) == pytest.approx(8.0, rel=1e-6)  # ||mu shift||^2


def test_kid_clamps_subset_size_and_is_zero_ish_for_same_set():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(30, 6)), rng.normal(size=(20, 6)) + 2
    same, _, size = M.kid_from_features(a, a, subsets=5, subset_size=1000, seed=0)
    far, _, _ = M.kid_from_features(a, b, subsets=5, subset_size=1000, seed=0)
    assert size == 20 or size == 30
    assert M.kid_from_features(a, b, 5, 1000, 0)[2] == 20
    assert far > 10 * abs(same)


def poly_mmd2_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with KID's polynomial kernel k(a, b) = (a.b / d + 1)^3, written out in numpy."""
    d = x.shape[1]
    kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
    m, n = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def test_kid_matches_a_numpy_polynomial_mmd_reference():
    # equal sizes and subsets as large as the sets: every subset is the whole set, so each draw is the
    # full-set unbiased MMD^2 and the mean is that number
    rng = np.random.default_rng(4)
    a = rng.normal(size=(40, 6))
    b = rng.normal(size=(40, 6)) * 1.3 + 0.4
    kid, std, size = M.kid_from_features(a, b, subsets=4, subset_size=1000, seed=0)
    ref = poly_mmd2_reference(a, b)
    assert size == 40 and ref > 0.1
    assert kid == pytest.approx(ref, rel=1e-5) and std == pytest.approx(0.0, abs=1e-6 * ref)
    assert M.kid_from_features(a, a, 4, 1000, 0)[0] == pytest.approx(poly_mmd2_reference(a, a), abs=1e-6)


def test_inception_score_bounds():
    uniform = np.zeros((50, 10))
    assert M.inception_score_from_logits(uniform, splits=5, seed=0)[0] == pytest.approx(1.0)
    confident = np.eye(10)[np.arange(100) % 10] * 50.0
    assert M.inception_score_from_logits(confident, splits=1, seed=0)[0] == pytest.approx(10.0, rel=1e-3)


# ---------------------------------------------------------------- recognizability and diversity


def test_recognizability_on_controlled_logits():
    labels = np.arange(100) % 10
    perfect = np.eye(10)[labels]
    rec, pc = M.recognizability(perfect, labels, 10)
    assert rec["macro_f1"] == 1.0 and (pc["f1"] == 1.0).all()
    wrong = np.eye(10)[(labels + 1) % 10]
    assert M.recognizability(wrong, labels, 10)[0]["macro_f1"] == 0.0
    rng = np.random.default_rng(0)
    noisy = rng.normal(size=(100, 10))
    assert M.recognizability(noisy, labels, 10)[0]["macro_f1"] == pytest.approx(
        macro_f1_reference(noisy.argmax(1), labels, 10)
    )


def test_diversity_of_identical_images_is_zero(judge_file, test_set):
    judge = J.load_judge({"kind": "trained"}, judge_file)
    images, labels = test_set
    same = np.repeat(images[:1], 20, axis=0)
    # exactly 0 on identical features; through the judge, batches of different sizes may differ in
    # the last float bits, so the images' diversity is 0 to rounding
    assert M.diversity(np.ones((5, 4)), np.zeros(5, int), 2)[0] == 0.0
    logits, feats = J.extract(judge, same, batch_size=7)
    mean, per_class = M.diversity(feats, np.full(20, 3), 10)
    assert mean == pytest.approx(0.0, abs=1e-9) and per_class[3] == mean and np.isnan(per_class[0])
    _, feats_all = J.extract(judge, images[:200])
    for l2 in (True, False):
        assert M.diversity(feats_all, labels[:200], 10, l2=l2)[0] > 0


def test_recognizability_of_real_test_equals_judge_test_f1(judge_file, digits, tmp_path):
    out = {k: tmp_path / f"ref.{k}" for k in ("npz", "json", "per_class")}
    metrics = M.measure_reference(qcfg(), judge_file, digits, 16, 10000, out, seed=0)
    model, _ = load_classifier(judge_file)
    images, labels, _ = load_arrays(split_shards(digits, "test"))
    logits, _ = predict(model, images)  # the evaluate stage's own code path
    own_f1 = macro_f1_reference(logits.argmax(1), labels, 10)
    assert metrics["recognizability"] == pytest.approx(own_f1, abs=1e-12)
    assert own_f1 > 0.5  # a judge that learned something: the test would pass vacuously otherwise
    assert json.loads(out["json"].read_text())["recognizability"] == pytest.approx(own_f1)
    ref = M.Reference.load(out["npz"])
    assert ref.fid_features.shape == (len(labels), 128) and ref.fid_features.dtype == np.float32


def test_extract_matches_train_predict(judge_file, test_set):
    model, _ = load_classifier(judge_file)
    images = test_set[0][:50]
    ref_logits, ref_feats = predict(model, images, batch_size=16)
    logits, feats = J.extract(J.trained_judge(model), images, batch_size=13, channels_last=True)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(feats, ref_feats, rtol=1e-4, atol=1e-4)


def test_judge_module_in_torchmetrics_agrees_with_one_pass(judge_file, test_set):
    """torchmetrics running the judge itself (feature=JudgeFeatures) gives the one-pass FID."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    judge = J.load_judge({"kind": "trained"}, judge_file)
    images, _ = test_set
    real, fake = images[:150], images[150:300]
    _, fr = J.extract(judge, real)
    _, ff = J.extract(judge, fake)
    ours = M.fid_from_features(fr, ff)
    for normalize in (False, True):
        fid = FrechetInceptionDistance(feature=J.JudgeFeatures(judge), normalize=normalize)
        for x, is_real in ((real, True), (fake, False)):
            t = torch.as_tensor(x).permute(0, 3, 1, 2)
            fid.update(t.float() / 255 if normalize else t, real=is_real)
        assert float(fid.compute()) == pytest.approx(ours, rel=1e-3, abs=1e-4)


# ---------------------------------------------------------------- weights: honoured, or a clear failure


@pytest.fixture
def no_downloads(monkeypatch):
    """Any attempt to reach the network fails the test."""

    def boom(*a, **k):
        raise AssertionError("a download was attempted")

    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    monkeypatch.setattr(urllib.request, "urlopen", boom)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", boom)
    monkeypatch.setattr(torch.hub, "download_url_to_file", boom)
    monkeypatch.setattr(tfi, "load_state_dict_from_url", boom)
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", boom)


def test_missing_inception_weights_fail_clearly(no_downloads, tmp_path):
    with pytest.raises(FileNotFoundError, match="quality.inception_weights.*nothing is downloaded"):
        J.load_inception(tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="quality.inception_weights is not set"):
        J.load_inception(None)
    with pytest.raises(FileNotFoundError, match="quality.inception_weights"):
        M.open_models(qcfg(features="inception", inception_weights=str(tmp_path / "x.pth")), None, "cpu")


def test_inception_weights_path_is_honoured(no_downloads, tmp_path, monkeypatch):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    # build a randomly initialised Inception once (no weights) to write a weights file of our own
    with monkeypatch.context() as m:
        m.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
        m.setattr(
            "torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url", lambda *a, **k: {}
        )
        torch.manual_seed(0)
        donor = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    state = {k: v.half() if v.is_floating_point() else v for k, v in donor.state_dict().items()}
    path = tmp_path / "inception.pth"
    torch.save(state, path)
    model = J.load_inception(path)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k].to(v.dtype))
    images = np.random.default_rng(0).integers(0, 255, size=(3, 16, 16, 1), dtype=np.uint8)
    logits, feats = J.extract_inception(model, images, batch_size=2)
    assert feats.shape == (3, 2048) and logits.shape == (3, 1008)
    # a pickled object that is not a plain tensor dict is refused before torch-fidelity unpickles it
    bad = tmp_path / "bad.pth"
    torch.save({"x": SimpleNamespace(a=1)}, bad)
    with pytest.raises(ValueError, match="not a plain tensor state dict"):
        J.load_inception(bad)


def test_timm_judge_weights_honoured_and_missing_fails(no_downloads, tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(3)
    donor = create_classifier("resnet18", 10, TINY)
    path = tmp_path / "judge.safetensors"
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(path))
    spec = {"kind": "timm", "name": "resnet18", "weights": str(path),
            "model_kwargs": {"channels": [16, 32, 64, 128], "num_classes": 10}}
    judge = J.load_judge(spec, None)
    for k, v in donor.state_dict().items():
        torch.testing.assert_close(judge.model.state_dict()[k], v)
    assert judge.mean != (0.5, 0.5, 0.5)  # timm's ImageNet normalisation, from its pretrained_cfg
    with pytest.raises(FileNotFoundError, match="quality.judge.weights.*nothing is downloaded"):
        J.load_judge({**spec, "weights": str(tmp_path / "nope.safetensors")}, None)
    # a larger, non-square image goes through timm's eval transform (resize to size / crop_pct, centre
    # crop), not squashed to the input size
    import timm
    from PIL import Image

    ref_model = timm.create_model("resnet18", pretrained=False, channels=(16, 32, 64, 128), num_classes=10)
    data_cfg = timm.data.resolve_data_config({}, model=ref_model)
    assert data_cfg["crop_pct"] < 1.0
    want_tf = timm.data.create_transform(**data_cfg, is_training=False)
    image = np.random.default_rng(0).integers(0, 256, (1, 300, 200, 3), dtype=np.uint8)
    want = want_tf(Image.fromarray(image[0]))[None]
    got = judge.preprocess(image)
    assert got.shape == want.shape == (1, 3, *data_cfg["input_size"][1:])
    torch.testing.assert_close(got, want)
    # uint8 NCHW tensors through torchmetrics' feature module take the same path
    torch.testing.assert_close(judge.preprocess(torch.from_numpy(image)), want)


# ---------------------------------------------------------------- streaming, summary, findings


def test_streamed_metrics_equal_one_shot_metrics():
    """Per-batch accumulation gives the metrics of the whole arrays (diversity vs numpy's std)."""
    rng = np.random.default_rng(5)
    feats = rng.normal(size=(300, 16)).astype(np.float32) * 2 + 1
    labels = np.arange(300) % 10
    ref_feats = rng.normal(size=(200, 16)).astype(np.float32)
    cfg = qcfg()
    acc = M.SetMetrics(10, cfg, seed=0, reference=M.Reference(ref_feats, ref_feats[:, :10], np.arange(200) % 10))
    for s in range(0, 300, 64):
        acc.update(feats[s : s + 64, :10], feats[s : s + 64], labels[s : s + 64], feats[s : s + 64], feats[s : s + 64, :10])
    metrics, per_class = acc.compute()
    x = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    expect = np.mean([x[labels == c].astype(np.float64).std(axis=0).mean() for c in range(10)])
    assert metrics["diversity"] == pytest.approx(expect, rel=1e-6)
    assert metrics["fid"] == pytest.approx(fid_reference(ref_feats.astype(float), feats.astype(float)), rel=1e-3)
    assert metrics["recognizability"] == pytest.approx(macro_f1_reference(feats[:, :10].argmax(1), labels, 10))
    assert metrics["kid_subset_size"] == 50 and metrics["n_images"] == 300


def test_per_class_slope_recovers_power_law_and_drops_saturated_points():
    rows = []
    for seed in (0, 1):
        for n in (30, 60, 120, 300):
            for c in range(3):
                loss = (1 + c) * n ** -(0.1 * (c + 1))
                if c == 2 and n == 300 and seed == 1:
                    loss = 0.0  # saturated: dropped, not clipped
                rows.append({"source": "s", "class_index": c, "n": n, "n_label": str(n), "seed": seed,
                             "loss": loss, "eval_set": "test"})
            rows.append({"source": "s", "class_index": 0, "n": n, "n_label": str(n), "seed": seed,
                         "loss": 99.0, "eval_set": "ood"})
    s = per_class_slopes(pd.DataFrame(rows), "test")
    np.testing.assert_allclose(s["slope"], [0.1, 0.2, 0.3], rtol=1e-9)
    assert list(s["n_dropped"]) == [0, 0, 1] and list(s["n_points"]) == [8, 8, 7]


def _table(div_sign: float, rec_sign: float) -> pd.DataFrame:
    rows = []
    for strat in ("a", "b"):
        for g in (1.0, 2.0, 4.0):
            rows.append({"generator": "gen", "guidance": g, "strategy": strat, "n_images": 10,
                         "recognizability": 0.5 + rec_sign * 0.1 * g, "diversity": 1 + div_sign * 0.1 * g,
                         "fid": 10 * g, "cas": 0.5})
    return pd.DataFrame(rows)


def _findings(df, reference=None):
    return " ".join(quality_report.quality_findings(df, trends(df), reference, float("nan"), 0, None))


def test_findings_follow_the_numbers():
    assert "trend shows on this study" in _findings(_table(-1, +1))
    fails = _findings(_table(+1, +1))
    assert "does not show" in fails and "diversity falls with guidance in 0 of 2" in fails
    assert "recognizability rises in 2" in fails
    part = _table(-1, +1)
    part.loc[part["strategy"] == "b", "diversity"] *= -1  # diversity rises on one line only
    assert "only in part" in _findings(part)
    # a hypothesis about diversity appears only when every set is more diverse than the real images
    assert "Hypothesis" in _findings(_table(-1, +1), {"diversity": 0.1, "recognizability": 0.9})
    assert "Hypothesis" not in _findings(_table(-1, +1), {"diversity": 5.0, "recognizability": 0.9})


def test_a_quality_record_names_its_set_and_only_a_filtered_set_its_filter():
    """set_fields (script quality, rules quality and filter_quality): generator, guidance as a number,
    strategy, and a filter only where the set has one."""
    from synthscale.quality.metrics import set_fields

    assert set_fields("gen", "2", "s") == {"generator": "gen", "guidance": 2.0, "strategy": "s"}
    assert set_fields("gen", "2", "s", None) == set_fields("gen", 2.0, "s")
    assert set_fields("gen", "2", "s", "conf") == {"generator": "gen", "guidance": 2.0, "strategy": "s", "filter": "conf"}


def test_plan_quality_paths_and_recipe():
    cfg = {"results": "res", "dataset": {"name": "digits"}, "n_images": [30, 300],
           "train": {"arch": "resnet18", "lr": 0.003, "real_full": True},
           "quality": {"n_images": 10000, "judge": {"kind": "trained", "recipe": {"lr": 0.01}}}}
    plan = Plan(cfg)
    assert plan.quality_n == 300
    cfg["quality"]["n_images"] = 60
    assert plan.quality_n == 60
    assert plan.judge_recipe() == {"arch": "resnet18", "lr": 0.01}
    assert plan.quality_json("gen", 2.0, "s") == "res/quality/gen/g2/s.json"
    assert plan.quality_per_class("gen", "{guidance}", "s") == "res/quality/gen/g{guidance}/s_per_class.csv"
    assert plan.quality_reference()["npz"] == "res/quality/real_digits.npz"



# keys of `train` that are the study's, not the training's (synthscale.classifier.recipes.JUDGE_KEYS)
STUDY_ONLY_TRAIN_KEYS = {"seeds", "real_seeds", "supervised", "real_baseline", "real_full", "eval_batch_size",
                         "eval_workers", "checkpoint_minutes"}


def test_every_train_key_is_the_judges_or_the_studys():
    """A new key of the schema's `train` must be classified: in the judge's recipe (its change retrains
    the judge) or one that the judge's training provably does not read."""
    from synthscale.classifier.recipes import JUDGE_KEYS

    schema = yaml.safe_load((ROOT / "schemas" / "config.schema.yaml").read_text())
    keys = set(schema["properties"]["train"]["properties"])
    assert keys == (set(JUDGE_KEYS) | STUDY_ONLY_TRAIN_KEYS) and not set(JUDGE_KEYS) & STUDY_ONLY_TRAIN_KEYS


def test_judge_recipe_changes_exactly_when_the_judges_training_would():
    """Rule train_judge's params: a change to a key the training reads (warmup_frac, optimizer, the
    loader's workers...) changes them, so Snakemake reruns the judge; the study's keys do not."""
    from synthscale.classifier.recipes import judge_recipe, resolve_recipe

    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    train = check_config(cfg)["train"]  # resolved, with every study key
    base = judge_recipe(train, {"lr": 0.01})
    assert base["lr"] == 0.01 and base == {**resolve_recipe({"recipe": train["recipe"]}), **base}
    for key, value in [("warmup_frac", 0.3), ("optimizer", "sgd"), ("num_workers", 2), ("hflip", 0.5),
                       ("recipe", "imagenet-resnet50"), ("input_size", 32)]:
        assert judge_recipe({**train, key: value}, {"lr": 0.01}) != base, key
    for key in STUDY_ONLY_TRAIN_KEYS:
        assert judge_recipe({**train, key: "changed"}, {"lr": 0.01}) == base, key
    assert judge_recipe({**train, "lr": 0.5}, {"lr": 0.01}) == base  # the judge's own lr wins


def test_train_judge_trains_what_the_whole_train_section_trained(digits, tmp_path):
    """The judge from its cut recipe (Plan.judge_recipe) has the same weights, byte for byte, and log
    (but for its wall-clock seconds) as from the whole `train` section under the overrides (what the
    script trained before)."""
    from synthscale.classifier.recipes import judge_recipe
    from synthscale.classifier.train import train_model, training_parts

    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    train = check_config(cfg)["train"]
    over = {"epochs": 1, "min_steps": 3}
    J.train_judge(digits, judge_recipe(train, over), 0, tmp_path / "a.safetensors", tmp_path / "a.csv")
    parts, n_classes = training_parts([{"split": "train", "limit": None}], digits)
    train_model(parts, n_classes, {**train, **over}, 0, tmp_path / "b.safetensors", tmp_path / "b.csv",
                progress=False)
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    logs = [pd.read_csv(tmp_path / f"{r}.csv").drop(columns="seconds") for r in "ab"]
    pd.testing.assert_frame_equal(*logs)


# ---------------------------------------------------------------- the scripts, on small fixtures


class Smk(SimpleNamespace):
    """Enough of Snakemake's `snakemake` object for a script: attributes, and [key] on outputs."""

    def __getitem__(self, key):
        return getattr(self, key)


def run_script(name: str, **parts) -> None:
    parts.setdefault("log", [])
    parts.setdefault("config", {})
    smk = Smk(**{k: Smk(**v) if isinstance(v, dict) else v for k, v in parts.items()})
    runpy.run_path(str(ROOT / "scripts" / name), init_globals={"snakemake": smk})


def test_scripts_end_to_end(judge_file, digits, test_set, tmp_path):
    """Reference, two 'synthetic' sets (real test images, one with its labels scrambled) and the summary."""
    threads = 1
    images, labels = test_set
    classes = digits.parent / "classes.csv"
    cfg = qcfg()
    ref = {k: str(tmp_path / f"real.{k}") for k in ("npz", "json", "per_class")}
    common = dict(quality=cfg, image_size=16, seed=0, device="cpu", threads=threads, n_images=cfg["n_images"])
    run_script("quality_reference.py",
               input={"judge": [str(judge_file)], "manifest": str(digits), "classes": str(classes)},
               output=ref, params=common)
    sets, per_class, sources = [], [], []
    for g, lab in ((1.0, labels[:120]), (4.0, (labels[:120] + 1) % 10)):
        shard = tmp_path / f"g{g:g}" / "shard-000000.tar"
        write_shard(shard, images[:120], [{"key": f"{i:06d}", "label": int(v)} for i, v in enumerate(lab)])
        out = {"json": str(tmp_path / f"g{g:g}.json"), "per_class": str(tmp_path / f"g{g:g}_pc.csv")}
        run_script("quality.py",
                   input={"judge": [str(judge_file)], "shards": [str(shard)], "reference": ref["npz"],
                          "manifest": str(digits), "classes": str(classes)},
                   output=out, params={**common, "n_images": 100},
                   wildcards=SimpleNamespace(generator="gen", guidance=f"{g:g}", strategy="s"))
        sets.append(out["json"])
        per_class.append(out["per_class"])
        sources.append(["gen", g, "s"])
    m1, m4 = (json.loads(Path(p).read_text()) for p in sets)
    assert m1["n_images"] == 100 and m1["kid_subset_size"] == 50 and m1["guidance"] == 1.0
    assert m1["recognizability"] > 0.5 > m4["recognizability"]
    # same images, class groups only renamed: FID and diversity agree; only recognizability moves
    assert m1["fid"] == pytest.approx(m4["fid"]) and m1["diversity"] == pytest.approx(m4["diversity"])
    pc = pd.read_csv(per_class[0])
    assert list(pc.columns[:6]) == ["class_index", "precision", "recall", "f1", "support", "diversity"]
    assert pc["name"].iloc[0] == "zero"

    # the analysis tables the summary reads: top-1 per (source, N, seed), per-class losses
    rows, pcs = [], []
    for i, src in enumerate(sources):
        name = f"synthetic/gen/g{src[1]:g}/s"
        for seed in (0, 1):
            for n in (30, 60):
                top1 = 0.8 - 0.1 * i + 0.02 * (seed - 0.5) if n == 60 else 0.3
                rows.append({"source": name, "kind": "synthetic", "generator": "gen", "guidance": src[1],
                             "strategy": "s", "n": n, "n_label": str(n), "seed": seed, "eval_set": "test",
                             "ood": False, "loss": 1.0, "top1": top1})
                pcs += [{"source": name, "class_index": c, "n": n, "n_label": str(n), "seed": seed,
                         "eval_set": "test", "loss": n ** -0.5 * (c + 1)} for c in range(10)]
    rows.append({"source": "real", "kind": "real", "generator": "", "guidance": np.nan, "strategy": "", "n": 60,
                 "n_label": "60", "seed": 0, "eval_set": "test", "ood": False, "loss": 1.0, "top1": 0.9})
    pd.DataFrame(rows).to_csv(tmp_path / "summary.csv", index=False)
    pd.DataFrame(pcs).to_csv(tmp_path / "per_class.csv", index=False)
    outputs = {k: str(tmp_path / "summary" / v) for k, v in {
        "table": "quality.csv", "per_class": "quality_per_class.csv", "tradeoff": "t.png",
        "fid_cas": "f.png", "per_class_plot": "p.png", "findings": "findings.html"}.items()}
    run_script("quality_summary.py",
               input={"sets": sets, "per_class": per_class, "reference": ref["json"],
                      "summary": str(tmp_path / "summary.csv"), "eval_per_class": str(tmp_path / "per_class.csv")},
               output=outputs, params={"eval_set": "test", "output_keys": list(outputs), "generators": []})
    table = pd.read_csv(outputs["table"])
    assert len(table) == 2 and list(table["cas"]) == pytest.approx([0.8, 0.7])
    assert list(table["cas_seeds"]) == [2, 2] and table["cas_sd"].iloc[0] == pytest.approx(np.std([0.79, 0.81], ddof=1))
    assert table.loc[0, "guidance"] == 1.0
    pcs = pd.read_csv(outputs["per_class"])
    assert pcs["slope"].to_numpy() == pytest.approx(0.5)
    text = Path(outputs["findings"]).read_text()
    assert "Best CAS 0.800" in text and "real images at the same N reach 0.900" in text
    assert "Real test images score recognizability" in text
    for k in ("tradeoff", "fid_cas", "per_class_plot"):
        assert Path(outputs[k]).stat().st_size > 1000


def test_a_rise_then_fall_is_not_called_a_rise():
    """Recognizability up from guidance 1 to 2 and down at 4 (the default study's shape) is no trend."""
    df = _table(-1, +1)
    df.loc[df["guidance"] == 4.0, "recognizability"] = 0.55  # between g=1 (0.6) and g=2 (0.7)
    t = trends(df)
    assert (t["trend_recognizability"] == 0).all() and (t["recognizability_peak"] == 2.0).all()
    text = _findings(df)
    assert "does not show" in text and "peaks below the largest guidance (4) in 2 of 2 lines" in text


def test_per_class_slope_figure_is_the_same_for_the_same_table(tmp_path):
    """The regression band is a bootstrap: drawn twice from one table, the figure is byte-identical."""
    from synthscale.analysis.quality_report import plot_per_class_slope

    rng = np.random.default_rng(0)
    table = pd.DataFrame({"f1": rng.uniform(0, 1, 40), "slope": rng.normal(0.1, 0.2, 40),
                          "guidance": rng.choice([1.0, 2.0], 40), "generator": rng.choice(["a", "b"], 40),
                          "strategy": "classname"})
    plot_per_class_slope(table, tmp_path / "a.png", 0.2)
    plot_per_class_slope(table, tmp_path / "b.png", 0.2)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_a_rules_judge_inputs_go_to_the_judge_as_they_come(judge_file, tmp_path):
    """judge_file: a rule's judge inputs (Plan.judge_inputs: one file or none) or a path; load_judge
    takes either, so the scripts pass `snakemake.input.judge` through."""
    assert J.judge_file([str(judge_file)]) == str(judge_file) and J.judge_file(judge_file) == judge_file
    assert J.judge_file([]) is None and J.judge_file(None) is None
    a, b = J.load_judge({"kind": "trained"}, [str(judge_file)]), J.load_judge({"kind": "trained"}, judge_file)
    assert a.meta == b.meta
    with pytest.raises(FileNotFoundError, match="do not exist"):
        J.load_judge({"kind": "trained"}, [])
