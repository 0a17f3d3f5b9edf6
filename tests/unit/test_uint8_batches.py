"""uint8 batches (train.uint8_batches; auto = on CUDA): workers hand over uint8 images and the device
normalises them. The property a user relies on: the batches, and so the trained weights, are the float
path's, at a quarter of the bytes through shared memory and host-to-device copies."""

import random

import numpy as np
import pytest
import torch

from synthscale.data.loader import TrainLoader
from synthscale.data.transforms import DeviceNormalize, uint8_batches
from synthscale.classifier.train import full_recipe, train_model

from helpers.data import write_digit_shards
from helpers.require import require_or_skip
from helpers.training import assert_same_weights

BASE = {
    "arch": "resnet18",
    "model_kwargs": {"channels": [8, 16, 32, 64]},
    "epochs": 2,
    "min_steps": 6,
    "batch_size": 32,
    "lr": 0.003,
    "input_size": 16,
    "shuffle_buffer": 40,
}
# the digits recipe's fast path (pad-crop on the array) and timm's full path (random-resized crop,
# flips, RandAugment: PIL operations, then ToTensor/Normalize or uint8)
RECIPES = {
    "fast": {**BASE, "pad_crop": 2},
    "timm": {**BASE, "pad_crop": 1, "scale": [0.5, 1.0], "ratio": [0.8, 1.25], "hflip": 0.5,
             "auto_augment": "rand-m9-mstd0.5", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
}


@pytest.fixture(scope="module")
def shards(tmp_path_factory, digits_16):
    images, labels = digits_16
    return write_digit_shards(tmp_path_factory.mktemp("u8"), images[:200], labels[:200], 50)


def _batches(parts, recipe, seed=3):
    with TrainLoader(parts, recipe, seed, batch_size=16, num_workers=0) as loader:
        return [(x, y) for e in range(2) for x, y in loader.epoch(e)]


def test_auto_is_on_for_cuda_only():
    assert uint8_batches({"uint8_batches": "auto"}, "cuda:0") and uint8_batches({}, "cuda")
    assert not uint8_batches({"uint8_batches": "auto"}, "cpu")
    assert uint8_batches({"uint8_batches": True}, "cpu") and not uint8_batches({"uint8_batches": False}, "cuda")


@pytest.mark.parametrize("kind", sorted(RECIPES))
def test_uint8_batches_normalised_on_the_device_are_the_float_batches(shards, kind):
    recipe = full_recipe(RECIPES[kind])
    parts = [{"shards": shards, "limit": 150}]
    floats = _batches(parts, {**recipe, "uint8_batches": False})
    bytes_ = _batches(parts, {**recipe, "uint8_batches": True})
    finish = DeviceNormalize(recipe, "cpu")
    assert len(floats) == len(bytes_) > 10
    for (xf, yf), (xb, yb) in zip(floats, bytes_):
        assert xb.dtype == torch.uint8 and xf.dtype == torch.float32
        assert xb.element_size() * 4 == xf.element_size()
        assert torch.equal(yf, yb)
        assert torch.equal(finish(xb), xf), "the same float32 arithmetic: bit-identical"
    # the batches are augmented, not constant: two epochs differ
    assert not torch.equal(floats[0][0], floats[len(floats) // 2][0])


def test_training_on_uint8_batches_reaches_the_float_weights(tmp_path, shards, one_thread):
    for flag in (False, True):
        recipe = {**RECIPES["fast"], "uint8_batches": flag}
        out = tmp_path / f"{flag}.safetensors"
        train_model([{"shards": shards, "limit": 120}], 10, recipe, 0, out, tmp_path / f"{flag}.csv", progress=False)
    assert_same_weights(tmp_path / "False.safetensors", tmp_path / "True.safetensors")


def test_the_device_table_is_the_float_arithmetic_for_every_value():
    """Every (value, channel) through the table is ToTensor + Normalize's float32 result, for the
    digits and the ImageNet statistics."""
    from torchvision.transforms import functional as TF

    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(2, 3, 16, 16).contiguous()
    for kind in RECIPES:
        recipe = full_recipe(RECIPES[kind])
        want = TF.normalize(x.float().div(255), recipe["mean"], recipe["std"])
        assert torch.equal(DeviceNormalize(recipe, "cpu")(x), want)


def test_cuda_batches_equal_the_cpu_float_batches():
    if not torch.cuda.is_available():
        require_or_skip("cuda", "no CUDA device here: the table's lookup on a GPU (CPU: the test above)")
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(2, 3, 16, 16).contiguous()
    for kind in RECIPES:
        recipe = full_recipe(RECIPES[kind])
        on_cpu = DeviceNormalize(recipe, "cpu")(x)
        assert torch.equal(DeviceNormalize(recipe, "cuda")(x.cuda()).cpu(), on_cpu)


def test_random_erasing_moves_to_the_device_and_is_seeded():
    recipe = full_recipe({**BASE, "re_prob": 1.0, "uint8_batches": True})
    finish = DeviceNormalize(recipe, "cpu")
    x = torch.full((6, 3, 16, 16), 200, dtype=torch.uint8)
    random.seed(5)
    torch.manual_seed(5)
    a = finish(x.clone())
    random.seed(5)
    torch.manual_seed(5)
    b = finish(x.clone())
    assert torch.equal(a, b), "seeded per step by the trainer: reproducible"
    plain = (200 / 255 - 0.5) / 0.5
    for img in a:
        erased = img == 0  # timm's 'const' mode fills zeros after normalisation
        assert erased.any() and (~erased).any(), "every image (probability 1) has a box erased"
        assert torch.allclose(img[~erased], torch.tensor(plain))
    # without erasing in the recipe the device only normalises
    assert DeviceNormalize(full_recipe(BASE), "cpu").erase is None
    np.testing.assert_allclose(DeviceNormalize(full_recipe(BASE), "cpu")(x).numpy(), plain, rtol=1e-6)
