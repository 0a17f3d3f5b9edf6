"""An ImageFolder with bad files through preparation, training and evaluation, as a study runs them.

The folder is built here: ~1,000 small JPEGs over 12 colour classes, one truncated JPEG and one text
file named .jpg in the training split, a full eval set, and an eval set that covers 5 of the classes
with one of its class folders empty (ImageNet-R/-A style). Preparation, training (the digits recipe,
a few dozen steps, through the shard DataLoader) and evaluation are the functions the rules call.
"""
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from helpers.data import prepared_paths
from synthscale.data.real import read_manifest
from synthscale.classifier.evaluate import evaluate_models
from synthscale.data.imagefolder import prepare_imagefolder
from synthscale.classifier.train import load_classifier, save_classifier, train_model, training_parts

torch.set_num_threads(1)

C, PER_CLASS, PER_EVAL = 12, 80, 8
IDS = [f"colour{k:02d}" for k in range(C)]
SUBSET = IDS[:5]  # the subset eval set covers these; the last one's folder is empty
OUTSIDE = C - 1  # a class outside the subset
# well-separated colours: each class is one corner/edge point of the RGB cube
COLOURS = np.array([[r, g, b] for r in (30, 225) for g in (30, 225) for b in (30, 128, 225)])[:C]
TRUNCATED = f"{IDS[3]}/{IDS[3]}_0007.jpg"
NOT_IMAGE = f"{IDS[5]}/{IDS[5]}_0011.jpg"


def _save(rng, c, path):
    noise = rng.integers(-20, 21, size=(24, 32, 3))
    Image.fromarray(np.clip(COLOURS[c] + noise, 0, 255).astype(np.uint8)).save(path, quality=90)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data = root / "data"
    rng = np.random.default_rng(0)
    for split, n, classes in (("train", PER_CLASS, IDS), ("val", PER_EVAL, IDS), ("sub", PER_EVAL, SUBSET[:-1])):
        for cid in classes:
            (data / split / cid).mkdir(parents=True)
            for i in range(n):
                _save(rng, IDS.index(cid), data / split / cid / f"{cid}_{i:04d}.jpg")
    (data / "sub" / SUBSET[-1]).mkdir()
    bad = data / "train" / TRUNCATED
    bad.write_bytes(bad.read_bytes()[:200])
    (data / "train" / NOT_IMAGE).write_text("<html>a download error page, not an image</html>\n")
    pd.DataFrame({"id": IDS, "name": [f"colour {k}" for k in range(C)]}).to_csv(data / "classes.csv", index=False)
    return root, data


@pytest.fixture(scope="module")
def prepared(study):
    root, data = study
    ds = {"name": "colours", "kind": "imagefolder", "image_size": 16, "channels": 3, "storage_size": None,
          "center_crop": True, "encoding": {"format": "jpeg", "quality": 90}, "max_bad_fraction": 0.01,
          "train_dir": str(data / "train"), "test_dir": str(data / "val"), "classes_csv": str(data / "classes.csv")}
    evs = [{"name": "test"}, {"name": "sub", "root": str(data / "sub"), "classes": SUBSET}]
    out = root / "prepared"
    logger = logging.getLogger("synthscale.data.imagefolder")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        manifest = prepare_imagefolder(out, ds, evs, shard_size=128, seed=0, workers=2, **prepared_paths(out))
    finally:
        logger.removeHandler(handler)
    return out, manifest, [r.getMessage() for r in records]


RECIPE = {"recipe": "digits", "input_size": 16, "model_kwargs": {"channels": [8, 16, 32, 64]},
          "epochs": 1, "min_steps": 40, "batch_size": 32}


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory):
    out, _, _ = prepared
    d = tmp_path_factory.mktemp("model")
    parts, n_classes = training_parts([{"split": "train", "limit": None}], out / "splits.json")
    log = train_model(parts, n_classes, RECIPE, 0, d / "model.safetensors", d / "log.csv", progress=False)
    return d / "model.safetensors", log


def test_bad_files_are_counted_and_named_in_manifest_and_log(prepared):
    out, m, messages = prepared
    train = m["splits"]["train"]
    assert train["n_bad"] == 2
    assert sorted(Path(p).relative_to(Path(p).parents[1]).as_posix() for p in train["bad_files"]) == sorted(
        [TRUNCATED, NOT_IMAGE])
    assert train["count"] == C * PER_CLASS - 2 and train["per_class"][3] == train["per_class"][5] == PER_CLASS - 1
    for name in (TRUNCATED, NOT_IMAGE):
        assert any(name in msg and "unreadable" in msg for msg in messages), (name, messages)
    assert any("skipped 2 unreadable image(s)" in msg for msg in messages)
    assert read_manifest(out / "splits.json") == m


def test_empty_eval_class_folder_is_reported(prepared):
    _, m, messages = prepared
    sub = m["splits"]["sub"]
    assert sub["empty_classes"] == [SUBSET[-1]] and sub["classes"] == list(range(5))
    assert sub["count"] == 4 * PER_EVAL and sub["per_class"][4] == 0 and sub["n_bad"] == 0
    assert any("eval set sub" in msg and SUBSET[-1] in msg for msg in messages)


def test_training_streams_the_good_images_and_learns(prepared, trained):
    _, m, _ = prepared
    path, log = trained
    _, meta = load_classifier(path)
    assert meta["n_train"] == m["splits"]["train"]["count"] == C * PER_CLASS - 2
    assert meta["n_classes"] == C and log["step"].iloc[-1] >= RECIPE["min_steps"]
    assert np.isfinite(log["train_loss"]).all() and log["train_loss"].iloc[-1] < log["train_loss"].iloc[0]


def test_subset_eval_masks_its_logits(prepared, trained, tmp_path):
    """A model that scores a class outside the subset highest on every image: the full eval set gets
    it wrong (except on that class), the subset set never predicts it, so it scores as the honest model."""
    out, m, _ = prepared
    path, _ = trained
    model, meta = load_classifier(path)
    with torch.no_grad():
        model.get_classifier().bias[OUTSIDE] += 1e4
    biased = tmp_path / "biased" / "model.safetensors"
    biased.parent.mkdir()
    save_classifier(model, biased, meta)
    df = evaluate_models([path, biased], ["honest", "biased"], [0, 0], out / "splits.json", ["test", "sub"],
                         tmp_path / "metrics.csv", tmp_path / "per_class.csv", RECIPE, batch_size=64)
    r = df.set_index(["n_label", "eval_set"])
    assert r.loc[("honest", "test"), "n_eval"] == C * PER_EVAL and r.loc[("honest", "sub"), "n_eval"] == 4 * PER_EVAL
    # the training went through: the colours are learnt well above chance (1/12)
    assert r.loc[("honest", "test"), "top1"] > 0.5
    # full set: every prediction is the outside class
    assert r.loc[("biased", "test"), "top1"] == pytest.approx(1 / C)
    # subset: the outside class never competes, the subset's logits are untouched
    for key in ("top1", "loss", "mean_class_acc"):
        assert r.loc[("biased", "sub"), key] == pytest.approx(r.loc[("honest", "sub"), key], abs=1e-9)
    assert r.loc[("honest", "sub"), "top1"] >= r.loc[("honest", "test"), "top1"] - 0.25
    pc = pd.read_csv(tmp_path / "per_class.csv")
    sub = pc[(pc.eval_set == "sub") & (pc.n_label == "biased")].set_index("class_index")
    assert sub.loc[list(range(4)), "count"].tolist() == [PER_EVAL] * 4
    assert sub.loc[4:, "count"].sum() == 0 and sub.loc[4:, "accuracy"].isna().all()  # the empty folder
