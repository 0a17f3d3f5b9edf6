"""The one prompt encoder (`synthscale.generation.prompt_encoding`): a cached row is bit for bit what
the encoder gives when the same prompts share its forward pass, for each caller's batching policy."""

from functools import partial

import pytest
import torch

from synthscale.generation.prompt_encoding import PromptCache, encode_conditional, encode_tokens
from synthscale.generation.tinygen import build_tiny_pipeline

ARCH = dict(unet_widths=[16, 32], layers_per_block=1, attention_head_dim=8, norm_groups=8,
            text_width=32, text_layers=1, text_heads=2, max_tokens=16)
FIRST = ["seven", "", "a photo of a seven", "seven"]
SECOND = ["", "three", "seven", "three", "a three"]


@pytest.fixture(scope="module")
def pipe():
    return build_tiny_pipeline(ARCH, image_size=16, channels=1, seed=0).to("cpu")


@pytest.mark.parametrize(
    "batching, groups",
    [
        # sampling: a call's missing prompts in one pass, first-seen order
        ("first_seen", [["seven", "", "a photo of a seven"], ["three", "a three"]]),
        # the tiny generator's training: the step's new captions in one sorted pass
        ("sorted", [["", "a photo of a seven", "seven"], ["a three", "three"]]),
        # fine-tuning: one caption per pass
        ("each", [["seven"], [""], ["a photo of a seven"], ["three"], ["a three"]]),
    ],
)
@pytest.mark.parametrize("encoder", ["tokens", "conditional"])
def test_cached_rows_equal_an_uncached_encode_of_the_same_groups(pipe, batching, groups, encoder):
    if encoder == "tokens":
        encode = partial(encode_tokens, pipe, device="cpu")
    else:
        encode = partial(encode_conditional, pipe, device="cpu")
    seen = []
    cache = PromptCache(lambda prompts: seen.append(list(prompts)) or encode(prompts), batching)
    got = [cache(FIRST), cache(SECOND)]
    assert seen == groups and cache.encoded == len(set(FIRST + SECOND))
    with torch.no_grad():
        want = {}
        for group in groups:
            out = encode(group)
            rows = out if encoder == "tokens" else out["embeds"]
            want.update(zip(group, rows))
    for texts, batch in zip((FIRST, SECOND), got):
        batch = batch if encoder == "tokens" else batch["embeds"]
        assert torch.equal(batch, torch.stack([want[t] for t in texts]))


def test_least_recently_used_prompts_go_first(pipe):
    cache = PromptCache(partial(encode_tokens, pipe, device="cpu"), max_entries=2)
    cache(["a", "b"])
    cache(["a"])  # "b" is now the least recently used
    cache(["c"])
    assert list(cache.rows) == ["a", "c"] and cache.encoded == 3
    cache(["b"])
    assert cache.encoded == 4


def test_an_unknown_batching_policy_is_refused(pipe):
    with pytest.raises(ValueError, match="batching"):
        PromptCache(partial(encode_tokens, pipe, device="cpu"), batching="random")


def test_fine_tunings_encoder_is_each_caption_alone(pipe):
    """`PromptEncoder` (fine-tuning's): the denoiser's keyword arguments, each caption's row what
    `encode_conditional` gives it alone, each caption encoded once; no SDXL time ids for a plain UNet."""
    from synthscale.generation.prompt_encoding import PromptEncoder

    enc = PromptEncoder(pipe, "cpu")
    with torch.no_grad():
        got = enc(FIRST, 16)
        again = enc(SECOND, 16)
        want = [encode_conditional(pipe, [t], device="cpu")["embeds"][0] for t in FIRST]
    assert set(got) == {"encoder_hidden_states"} and not enc.sdxl
    assert all(torch.equal(a, b) for a, b in zip(got["encoder_hidden_states"], want))
    assert enc.cache.encoded == len(set(FIRST + SECOND)) and again["encoder_hidden_states"].shape[0] == len(SECOND)
