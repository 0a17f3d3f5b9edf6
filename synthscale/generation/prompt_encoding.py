"""Prompts to text conditioning through a pipeline's own encoder, each prompt encoded once and cached.

The one prompt encoder of the generation stage; three callers, each with its own output:
- sampling (`generate`): `PromptEmbeddings`, `pipe.encode_prompt` under classifier-free guidance, and
  the keyword arguments of `pipe.__call__` for a batch (SD 1.x/2.x, SDXL, SD3, Flux, PixArt, Sana and
  the workflow's own pipeline, told apart by `encode_layout`);
- fine-tuning (`PromptEncoder`): `encode_conditional`, the conditional embeddings alone, as
  the denoiser trains on them (SDXL's zeros for the empty prompt; tokenizer and text encoder for a
  pipeline without a diffusers-style `encode_prompt`);
- the tiny generator's training (`tinygen`): `encode_tokens`, a frozen text encoder's hidden states.

All three cache through `PromptCache`. A float result depends on which prompts share one forward pass
of the encoder (the kernels' blocking follows the batch size), so the cache takes a batching policy and
each caller keeps its own: which prompts are encoded together, not only which are encoded, is part of
what makes a run byte-identical to the last one.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from functools import partial
from typing import Any, Callable, Sequence

import torch

Rows = torch.Tensor | dict[str, torch.Tensor]

# --- which prompts share a forward pass ---


def _first_seen(prompts: Sequence[str], cached) -> list[list[str]]:
    return [list(dict.fromkeys(p for p in prompts if p not in cached))]


def _sorted(prompts: Sequence[str], cached) -> list[list[str]]:
    return [sorted(set(prompts) - cached.keys())]


def _each(prompts: Sequence[str], cached) -> list[list[str]]:
    return [[p] for p in dict.fromkeys(p for p in prompts if p not in cached)]


BATCHING: dict[str, Callable[[Sequence[str], Any], list[list[str]]]] = {
    "first_seen": _first_seen,  # a call's missing prompts in one pass, in the order first asked for
    "sorted": _sorted,  # a call's missing prompts in one pass, sorted
    "each": _each,  # one pass per missing prompt, in the order first asked for
}


class PromptCache:
    """`encode(prompts)` (a tensor, or a dict of tensors, batch first) row by row, cached per prompt.

    `cache(prompts)` stacks the cached rows of `prompts`, encoding first those not seen yet, grouped by
    `batching` (a key of `BATCHING`); the encoder runs without gradients. With `max_entries`, the least
    recently used prompts are dropped first. `encoded` counts the prompts encoded so far.
    """

    def __init__(
        self,
        encode: Callable[[list[str]], Rows],
        batching: str = "first_seen",
        max_entries: int | None = None,
    ):
        if batching not in BATCHING:
            raise ValueError(f"batching must be one of {sorted(BATCHING)}, got {batching!r}")
        self.encode, self.groups, self.max_entries = encode, BATCHING[batching], max_entries
        self.rows: OrderedDict[str, Rows] = OrderedDict()
        self.encoded = 0

    @torch.no_grad()
    def _add(self, prompts: list[str]) -> None:
        out = self.encode(prompts)
        self.encoded += len(prompts)
        for j, p in enumerate(prompts):
            self.rows[p] = out[j] if isinstance(out, torch.Tensor) else {k: v[j] for k, v in out.items()}
            self.rows.move_to_end(p)
        while self.max_entries is not None and len(self.rows) > self.max_entries:
            self.rows.popitem(last=False)

    def __call__(self, prompts: Sequence[str]) -> Rows:
        for group in self.groups(prompts, self.rows):
            if group:
                self._add(group)
        rows = []
        for p in prompts:
            self.rows.move_to_end(p)
            rows.append(self.rows[p])
        if isinstance(rows[0], torch.Tensor):
            return torch.stack(rows)
        return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


# --- encoding a batch through the pipeline's own encoder ---


def encode_tokens(pipe, prompts: Sequence[str], device) -> torch.Tensor:
    """The text encoder's last hidden states (B, L, D) of prompts padded to the tokenizer's length:
    for a pipeline with one tokenizer and one text encoder and no diffusers-style `encode_prompt`."""
    tok = pipe.tokenizer(
        list(prompts),
        padding="max_length",
        max_length=pipe.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    return pipe.text_encoder(tok.input_ids.to(device))[0]


def has_diffusers_encode(pipe) -> bool:
    """Whether `pipe.encode_prompt` takes diffusers' `do_classifier_free_guidance` switch."""
    enc = getattr(pipe, "encode_prompt", None)
    return enc is not None and "do_classifier_free_guidance" in set(inspect.signature(enc).parameters)


def encode_kwargs(pipe, device, guidance: bool) -> dict[str, Any]:
    """The fixed keyword arguments of `pipe.encode_prompt` besides `prompt`, read off its signature."""
    signature = inspect.signature(pipe.encode_prompt).parameters
    kwargs: dict[str, Any] = {"num_images_per_prompt": 1}
    # SD3 and Flux take the prompt once per text encoder (prompt_2, prompt_3), positionally and
    # without defaults; None means "the same prompt" to every encoder
    for name, param in signature.items():
        if name.startswith("prompt_") and name[7:].isdigit() and param.default is inspect.Parameter.empty:
            kwargs[name] = None
    if "device" in signature:
        kwargs["device"] = device
    if "do_classifier_free_guidance" in signature:
        kwargs["do_classifier_free_guidance"] = guidance
    if "clean_caption" in signature:
        kwargs["clean_caption"] = False  # needs bs4 and ftfy; our prompts are clean
    return kwargs


def encode_conditional(
    pipe, prompts: Sequence[str], device, zeros_for_empty: bool = False
) -> dict[str, torch.Tensor]:
    """The conditional text embeddings a denoiser trains on, in float32: `embeds` (B, L, D) and, where
    `encode_prompt` gives them, the pooled ones (`pooled`). With `zeros_for_empty`, the empty prompt's
    rows are zeros (SDXL samples its unconditional branch from zeros, so it is trained on the same)."""
    if has_diffusers_encode(pipe):
        out = pipe.encode_prompt(prompt=list(prompts), **encode_kwargs(pipe, device, guidance=False))
        if isinstance(out, torch.Tensor):
            out = (out,)
        embeds = out[0]
        pooled = out[2] if len(out) >= 4 else None
        empty = [j for j, p in enumerate(prompts) if p == ""]
        if zeros_for_empty and empty:
            embeds, pooled = embeds.clone(), pooled.clone()
            embeds[empty], pooled[empty] = 0, 0
    else:
        embeds, pooled = encode_tokens(pipe, prompts, device), None
    # frozen encoders may run in bf16 on a GPU; the denoiser takes float32 (a no-op on the CPU)
    out = {"embeds": embeds.float()}
    if pooled is not None:
        out["pooled"] = pooled.float()
    return out


# --- sampling: pipe.encode_prompt under classifier-free guidance ---

# What `encode_prompt` returns, by pipeline family, told apart by its parameters:
# PixArt-alpha/sigma, Sana: T5 embeddings with attention masks
_MASKED = ("prompt_embeds", "prompt_attention_mask", "negative_prompt_embeds", "negative_prompt_attention_mask")
# SDXL, SD3: several encoders, with pooled embeddings
_POOLED = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")
# Flux: guidance is embedded, no negative prompt; text_ids are recomputed by __call__
_NO_CFG = ("prompt_embeds", "pooled_prompt_embeds", "text_ids")
# SD 1.x/2.x and the workflow's own pipeline
_PLAIN = ("prompt_embeds", "negative_prompt_embeds")


class PromptEncoder:
    """Fine-tuning's text conditioning for the denoiser through the pipeline's own encoder, cached per
    caption (each caption encoded alone, in a batch of one). `pipe` has a UNet (fine-tuning checks
    that first: finetune.denoiser_of)."""

    def __init__(self, pipe, device: str):
        self.device = device
        self.sdxl = pipe.unet.config.addition_embed_type == "text_time"
        zeros = self.sdxl and bool(pipe.config.get("force_zeros_for_empty_prompt"))
        self.cache = PromptCache(partial(encode_conditional, pipe, device=device, zeros_for_empty=zeros), "each")

    def __call__(self, texts: Sequence[str], size: int) -> dict[str, Any]:
        rows = self.cache(texts)
        embeds = rows["embeds"]
        kwargs: dict[str, Any] = {"encoder_hidden_states": embeds}
        if self.sdxl:
            # (original size, crop top-left, target size): uncropped images at the training size
            ids = torch.tensor([size, size, 0, 0, size, size], dtype=embeds.dtype, device=self.device)
            kwargs["added_cond_kwargs"] = {"text_embeds": rows["pooled"], "time_ids": ids.repeat(len(texts), 1)}
        return kwargs


def encode_layout(pipe) -> tuple[str, ...]:
    """The names of `pipe.encode_prompt`'s outputs, read off its signature."""
    params = set(inspect.signature(pipe.encode_prompt).parameters)
    if "prompt_attention_mask" in params:
        return _MASKED
    if "negative_pooled_prompt_embeds" in params:
        return _POOLED
    if "do_classifier_free_guidance" not in params and "pooled_prompt_embeds" in params:
        return _NO_CFG
    return _PLAIN


class PromptEmbeddings:
    """`pipe.encode_prompt` once per unique prompt, cached (least recently used out first), and the
    keyword arguments of `pipe.__call__` for a batch of prompts.

    The negative prompt is the pipeline's default (empty, or zeros where the pipeline says so), so the
    negative-side tensors are the same for every prompt and are kept once.
    """

    def __init__(self, pipe, max_entries: int = 1024):
        self.pipe = pipe
        self.names = encode_layout(pipe)
        self.call_params = set(inspect.signature(pipe.__call__).parameters)
        self.kwargs = encode_kwargs(pipe, pipe._execution_device, guidance=True)
        self.negative: dict[str, torch.Tensor] | None = None
        self.cache = PromptCache(self._encode, "first_seen", max_entries)

    @property
    def encoded(self) -> int:
        return self.cache.encoded

    def _encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        out = self.pipe.encode_prompt(prompt=prompts, **self.kwargs)
        if not isinstance(out, tuple) or len(out) != len(self.names):
            raise TypeError(
                f"{type(self.pipe).__name__}.encode_prompt returned {len(out)} values; "
                f"expected {self.names}"
            )
        named = {k: v for k, v in zip(self.names, out) if k in self.call_params}
        if self.negative is None:
            self.negative = {k: v[:1] for k, v in named.items() if k.startswith("negative") and v is not None}
        return {k: v for k, v in named.items() if not k.startswith("negative")}

    def __call__(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """`prompt_embeds`, `negative_prompt_embeds` and whatever else the pipeline's `__call__` takes
        (pooled embeds, attention masks) for this batch."""
        batch = self.cache(prompts)
        for k, v in (self.negative or {}).items():
            batch[k] = v.repeat(len(prompts), *[1] * (v.dim() - 1))
        return batch
