"""Classifier training beats chance on real digits; evaluation metrics are right on known logits."""
import numpy as np
import pytest

from synthscale.train import evaluate_logits, load_classifier, predict, train_classifier

RECIPE = {
    "arch": "resnet18",
    "model_kwargs": {"channels": [16, 32, 64, 128]},
    "epochs": 15,
    "min_steps": 60,
    "batch_size": 64,
    "lr": 0.003,
    "weight_decay": 0.05,
    "pad_crop": 1,
}


def test_training_beats_chance_on_digits(tmp_path, digits_16):
    images, labels = digits_16
    images = np.repeat(images, 3, axis=-1)
    train_x, train_y, test_x, test_y = images[:400], labels[:400], images[1000:1300], labels[1000:1300]
    log = train_classifier(train_x, train_y, 10, RECIPE, 0, tmp_path / "m.safetensors", tmp_path / "log.csv", progress=False)
    assert list(log.columns[:4]) == ["epoch", "step", "train_loss", "train_acc"]
    assert log["train_loss"].iloc[-1] < log["train_loss"].iloc[0]
    model, meta = load_classifier(tmp_path / "m.safetensors")
    assert meta["arch"] == "resnet18" and meta["n_classes"] == 10
    logits, feats = predict(model, test_x)
    assert feats.shape == (300, 128)
    metrics, per_class = evaluate_logits(logits, test_y, 10)
    assert metrics["top1"] > 0.5, f"top-1 {metrics['top1']} is not far above chance (0.1)"
    assert len(per_class) == 10


def test_training_is_deterministic(tmp_path, digits_16):
    images, labels = digits_16
    images = np.repeat(images[:100], 3, axis=-1)
    recipe = {**RECIPE, "epochs": 1, "min_steps": 4}
    for name in ("a", "b"):
        train_classifier(images, labels[:100], 10, recipe, 1, tmp_path / f"{name}.safetensors", tmp_path / f"{name}.csv", progress=False)
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


def test_evaluate_logits_on_known_values():
    logits = np.array([[5.0, 0, 0], [0, 5.0, 0], [5.0, 0, 0], [0, 0, 5.0]])
    labels = np.array([0, 1, 1, 2])
    metrics, per_class = evaluate_logits(logits, labels, 3)
    assert metrics["top1"] == pytest.approx(0.75)
    assert metrics["mean_class_acc"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert per_class["count"].tolist() == [1, 2, 1]
    assert per_class.loc[1, "loss"] > per_class.loc[0, "loss"]
