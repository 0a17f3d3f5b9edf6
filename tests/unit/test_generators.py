"""Generators: a pretrained-style Stable Diffusion pipeline (random weights, saved from configs) and the
workflow's own pixel pipeline both load through `load_generator` and sample through the same diffusers-style
path (`encode_prompt`, then `__call__` with embeddings and one generator per image)."""

from functools import partial

import numpy as np
import pytest
import torch

from synthscale.generation.generate import generate_shard, sample
from synthscale.generation.pipelines import load_generator, set_sampler
from synthscale.generation.tinygen import (
    PixelTextToImagePipeline,
    build_tiny_pipeline,
    caption_sampler,
    train_tiny_generator,
)
from synthscale.data.shards import load_arrays

ARCH = dict(unet_widths=[16, 32], layers_per_block=1, attention_head_dim=8, norm_groups=8,
            text_width=32, text_layers=1, text_heads=2, max_tokens=16)


def test_pretrained_pipeline_loads_and_samples(sd_dir):
    pipe = load_generator(str(sd_dir))
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    set_sampler(pipe, "dpm")
    out = sample(pipe, ["a photo of a tench", "goldfish"], [1, 2], guidance=2.0, steps=3)
    assert out.shape == (2, 16, 16, 3) and out.dtype == np.uint8
    again = sample(pipe, ["a photo of a tench", "goldfish"], [1, 2], guidance=2.0, steps=3)
    np.testing.assert_array_equal(out, again)


def test_missing_pipeline_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        load_generator(str(tmp_path))


def test_unknown_sampler_is_rejected(sd_dir):
    with pytest.raises(ValueError, match="unknown sampler"):
        set_sampler(load_generator(str(sd_dir)), "heun_typo")


def test_tiny_generator_trains_saves_and_reloads(tmp_path, digits_16):
    images, labels = digits_16
    captions = caption_sampler([[["zero"], ["one"], ["two"], ["three"], ["four"], ["five"], ["six"],
                                 ["seven"], ["eight"], ["nine"]]], labels)
    recipe = dict(steps=4, batch_size=8, lr=1e-3, weight_decay=0.0, uncond_prob=0.1)
    log = train_tiny_generator(images[:64], captions, ARCH, recipe, 0, tmp_path / "gen", progress=False)
    assert len(log) == 4 and all(np.isfinite(r["loss"]) for r in log)
    assert (tmp_path / "gen" / "unet" / "diffusion_pytorch_model.safetensors").exists()
    train_tiny_generator(images[:64], captions, ARCH, recipe, 0, tmp_path / "gen2", progress=False)
    a = (tmp_path / "gen" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    b = (tmp_path / "gen2" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert a == b, "generator training must be deterministic"
    pipe = load_generator(tmp_path / "gen")
    assert isinstance(pipe, PixelTextToImagePipeline)
    set_sampler(pipe, "ddim")
    out = sample(pipe, ["seven"] * 3, [5, 6, 7], guidance=1.0, steps=2)
    assert out.shape == (3, 16, 16, 1)
    # diffusers' own entry points work on it too: prompt strings, PIL output
    pil = pipe("seven", num_inference_steps=2, guidance_scale=2.0, generator=torch.Generator().manual_seed(5)).images
    assert pil[0].size == (16, 16) and pil[0].mode == "L"


def test_guidance_values_share_noise_and_prompts(tmp_path):
    pipe = build_tiny_pipeline(ARCH, 16, 1, 0)
    set_sampler(pipe, "ddim")
    prompts = [[f"class {c}", f"a {c}"] for c in range(3)]
    kw = dict(k=1, shard_size=6, class_prompts=prompts, base_seed=9, steps=2, sampler="ddim", batch_size=4,
              generator_name="tiny", class_names=["a", "b", "c"], progress=False)
    r1 = generate_shard(pipe, tmp_path / "g1.tar", guidance=1.0, **kw)
    r3 = generate_shard(pipe, tmp_path / "g3.tar", guidance=3.0, **kw)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "guidance"} for r in rs]  # noqa: E731
    assert strip(r1) == strip(r3)
    assert [r["index"] for r in r1] == list(range(6, 12)) and [r["label"] for r in r1] == [0, 1, 2] * 2
    x1, _, recs = load_arrays([tmp_path / "g1.tar"], mode="L")
    x3, _, _ = load_arrays([tmp_path / "g3.tar"], mode="L")
    assert recs[0]["guidance"] == 1.0 and recs[0]["generator"] == "tiny" and "prompt" in recs[0]
    assert recs[0]["guidance_kind"] == "cfg"
    assert not np.array_equal(x1, x3), "guidance must change the images"
    generate_shard(pipe, tmp_path / "again.tar", guidance=1.0, **kw)
    assert (tmp_path / "again.tar").read_bytes() == (tmp_path / "g1.tar").read_bytes()


def test_flux_guidance_is_recorded_as_distilled_not_cfg(sd_dir, tmp_path):
    """Flux's guidance_scale feeds a distilled guidance embedding (one pass), not classifier-free guidance."""
    import json

    from synthscale.generation.pipelines import guidance_kind
    from helpers.tiny_pipelines import build_flux

    flux = load_generator(str(build_flux(tmp_path / "flux")))
    assert guidance_kind(flux) == "distilled" and guidance_kind(load_generator(str(sd_dir))) == "cfg"
    recs = generate_shard(flux, tmp_path / "f.tar", k=0, shard_size=2, class_prompts=[["a cat"], ["a dog"]],
                          base_seed=0, guidance=3.5, steps=1, sampler=None, batch_size=2, generator_name="flux",
                          class_names=["cat", "dog"], progress=False)
    _, _, stored = load_arrays([tmp_path / "f.tar"])
    assert [r["guidance_kind"] for r in recs] == [r["guidance_kind"] for r in stored] == ["distilled"] * 2
    cfg_path = tmp_path / "flux" / "transformer" / "config.json"  # schnell: no guidance embedding
    cfg_path.write_text(json.dumps(json.loads(cfg_path.read_text()) | {"guidance_embeds": False}))
    assert guidance_kind(load_generator(str(tmp_path / "flux"))) == "none"


@pytest.mark.parametrize(
    "widths,head_dim,heads",
    [([16, 32], 8, {32: 4}), ([16, 32], 16, {32: 2}), ([16, 32], 32, {32: 1}), ([16, 32], 64, {32: 1}),
     ([16, 32, 64], 16, {32: 2, 64: 4})],
)
def test_attention_head_dim_is_channels_per_head(widths, head_dim, heads):
    """`arch.attention_head_dim` means what it says (diffusers' UNet2DConditionModel reads its own
    argument of that name as a head count): every attention layer splits its width into heads of
    `attention_head_dim` channels, one head where the block is narrower."""
    arch = dict(ARCH, unet_widths=widths, attention_head_dim=head_dim, layers_per_block=2)
    pipe = build_tiny_pipeline(arch, image_size=16, channels=1, seed=0)
    seen = {}
    for name, mod in pipe.unet.named_modules():
        if type(mod).__name__ == "Attention" and "attn" in name.rsplit(".", 1)[-1]:
            width = mod.to_q.out_features
            assert width // mod.heads == min(width, head_dim), name
            seen[width] = mod.heads
    assert seen == heads


def test_frozen_text_encoder_embeddings_are_cached_per_caption():
    """Generator training encodes each distinct caption once: the cache gives what the encoder gives
    (up to float rounding) and calls the encoder only for captions it has not seen."""
    from synthscale.generation.prompt_encoding import PromptCache, encode_tokens

    pipe = build_tiny_pipeline(ARCH, image_size=16, channels=1, seed=0)
    calls = []
    pipe.text_encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    encode = partial(encode_tokens, pipe, device=pipe.unet.device)
    cache = PromptCache(encode, batching="sorted")
    first = ["seven", "", "a photo of a seven", "seven"]
    second = ["", "three", "seven", "three"]
    got = [cache(first), cache(second)]
    assert calls == [3, 1]  # 3 distinct captions, then only the new "three"
    calls.clear()
    with torch.no_grad():
        want = [encode(first), encode(second)]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
