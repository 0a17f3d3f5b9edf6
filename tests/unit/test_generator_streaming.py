"""The tiny generator's training set streams: only the real images a run draws are read, and the run
is the one it was on the whole split loaded (also under a train_shift, which draws per image)."""
import numpy as np
import pytest
import torch

from synthscale.data.real import apply_shift
from synthscale.data.shards import load_arrays, shard_name, write_shard
from synthscale.generation.tinygen import caption_sampler, generator_training_set, images_used, train_tiny_generator

torch.set_num_threads(1)

ARCH = dict(unet_widths=[16, 32], layers_per_block=1, attention_head_dim=8, norm_groups=8,
            text_width=32, text_layers=1, text_heads=2, max_tokens=16)
RECIPE = dict(steps=3, batch_size=8, lr=1e-3, weight_decay=0.0, uncond_prob=0.2)
PROMPTS = [[[f"digit {c}", f"a {c}"] for c in range(10)], [[f"the number {c}"] for c in range(10)]]


@pytest.fixture(scope="module")
def shards(tmp_path_factory, digits_16):
    images, labels = digits_16
    d = tmp_path_factory.mktemp("gen_shards")
    paths = []
    for k, s in enumerate(range(0, 300, 100)):
        recs = [{"key": f"{i:08d}", "label": int(labels[i])} for i in range(s, s + 100)]
        paths.append(str(d / shard_name(k)))
        write_shard(paths[-1], list(images[s : s + 100]), recs)
    return paths


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))


@pytest.mark.parametrize("shift", [None, {"kind": "rotate", "degrees": 30}])
def test_streamed_training_set_gives_the_same_generator(shards, tmp_path, shift):
    images, labels, _ = load_arrays(shards, mode="L")
    if shift:
        images = apply_shift(images, shift, 5)
    captions = caption_sampler(PROMPTS, labels)
    train_tiny_generator(images, captions, ARCH, RECIPE, 5, tmp_path / "whole", progress=False)

    rows, captions2 = generator_training_set(shards, "L", PROMPTS, RECIPE, 5, shift)
    used = images_used(300, captions2, RECIPE, 5)
    assert rows.shape == images.shape and len(rows.rows) == len(used) <= RECIPE["steps"] * RECIPE["batch_size"]
    np.testing.assert_array_equal(rows[used], images[used])
    with pytest.raises(IndexError):
        rows[np.setdiff1d(np.arange(300), used)[:1]]
    train_tiny_generator(rows, captions2, ARCH, RECIPE, 5, tmp_path / "streamed", progress=False)
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "streamed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
