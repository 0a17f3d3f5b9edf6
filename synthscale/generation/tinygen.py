"""The workflow's own tiny text-to-image model: a pixel-space diffusers pipeline, built from a config
dict, trained on the real training split, and called exactly as diffusers calls its pipelines.

`PixelTextToImagePipeline` has the two entry points every diffusers text-to-image pipeline has:
`encode_prompt(prompt, device, num_images_per_prompt, do_classifier_free_guidance, negative_prompt)`
returning `(prompt_embeds, negative_prompt_embeds)` as Stable Diffusion's does, and a `__call__` that
takes `prompt_embeds`, `negative_prompt_embeds`, one `torch.Generator` per image, `num_inference_steps`,
`guidance_scale` and `output_type`. So synthscale.generation.generate samples it through the same path as Stable
Diffusion, SDXL, SD3, PixArt or Flux.
"""

from __future__ import annotations

import gzip
import os
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from diffusers import DDPMScheduler, DiffusionPipeline, ImagePipelineOutput, UNet2DConditionModel
from diffusers.image_processor import VaeImageProcessor
from diffusers.loaders import StableDiffusionLoraLoaderMixin
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from synthscale.generation.folders import write_meta
from synthscale.generation.prompt_encoding import PromptCache, encode_tokens
from synthscale.generation.loss import denoising_loss
from synthscale.data.real import split_shards
from synthscale.data.shards import image_mode
from synthscale.io import atomic_dir
from synthscale.prompts.strategies import read_prompts
from synthscale.lr_schedule import step_schedule


class PixelTextToImagePipeline(DiffusionPipeline, StableDiffusionLoraLoaderMixin):
    """A pixel-space text-to-image pipeline: tokenizer, text encoder, UNet and scheduler, no VAE.

    It is a plain diffusers pipeline, so `save_pretrained` writes the usual folder (model_index.json
    plus one subfolder per component, weights as safetensors) and `from_pretrained` reads it back;
    LoRA weights load and save through diffusers' Stable Diffusion LoRA mixin (`unet`, `text_encoder`).
    """

    model_cpu_offload_seq = "text_encoder->unet"

    def __init__(self, tokenizer, text_encoder, unet, scheduler):
        super().__init__()
        self.register_modules(
            tokenizer=tokenizer, text_encoder=text_encoder, unet=unet, scheduler=scheduler
        )
        self.image_processor = VaeImageProcessor(vae_scale_factor=1, do_resize=False)

    @torch.no_grad()
    def encode_prompt(
        self,
        prompt: str | list[str],
        device=None,
        num_images_per_prompt: int = 1,
        do_classifier_free_guidance: bool = True,
        negative_prompt: str | list[str] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Text embeddings (B, L, D) of the prompts and, under guidance, of the negative prompts ("")."""
        device = device or self._execution_device
        if prompt_embeds is None:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            prompt_embeds = encode_tokens(self, prompts, device)
        if do_classifier_free_guidance and negative_prompt_embeds is None:
            b = prompt_embeds.shape[0]
            neg = negative_prompt if negative_prompt is not None else ""
            neg = [neg] * b if isinstance(neg, str) else list(neg)
            negative_prompt_embeds = encode_tokens(self, neg, device)
        prompt_embeds = prompt_embeds.repeat_interleave(num_images_per_prompt, 0)
        if negative_prompt_embeds is not None:
            negative_prompt_embeds = negative_prompt_embeds.repeat_interleave(num_images_per_prompt, 0)
        return prompt_embeds, negative_prompt_embeds

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 20,
        guidance_scale: float = 2.0,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        """Classifier-free-guided sampling, as diffusers' Stable Diffusion pipeline does it.

        Guidance is applied whenever `guidance_scale != 1` (0 gives the unconditional model). With a
        list of generators, image b's initial noise and every stochastic sampler step draw from
        `generator[b]` alone, so an image does not depend on its batch.
        """
        device = self._execution_device
        cfg = guidance_scale != 1.0
        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt, device, num_images_per_prompt, cfg, negative_prompt,
            prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
        )
        batch = prompt_embeds.shape[0]
        unet = self.unet
        height = height or unet.config.sample_size
        width = width or unet.config.sample_size
        shape = (batch, unet.config.in_channels, height, width)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=prompt_embeds.dtype)
        cond = torch.cat([negative_prompt_embeds, prompt_embeds]) if cfg else prompt_embeds
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        x = latents * self.scheduler.init_noise_sigma
        step_kwargs = {"generator": generator} if _takes(self.scheduler.step, "generator") else {}
        for t in self.progress_bar(self.scheduler.timesteps):
            inp = torch.cat([x, x]) if cfg else x
            inp = self.scheduler.scale_model_input(inp, t)
            eps = unet(inp, t, encoder_hidden_states=cond, return_dict=False)[0]
            if cfg:
                e_u, e_c = eps.chunk(2)
                eps = e_u + guidance_scale * (e_c - e_u)
            x = self.scheduler.step(eps, t, x, **step_kwargs, return_dict=False)[0]
        image = x if output_type == "latent" else self.image_processor.postprocess(x, output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=image) if return_dict else (image,)


def _takes(fn, name: str) -> bool:
    import inspect

    return name in inspect.signature(fn).parameters


def clip_tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    """CLIP's BPE tokenizer built offline from the vocabulary that open_clip ships."""
    import open_clip.tokenizer as oct

    bpe = Path(oct.__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
    merges = gzip.open(bpe).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    vocab = list(oct.bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(
        vocab={v: i for i, v in enumerate(vocab)},
        merges=[tuple(m.split()) for m in merges],
        model_max_length=model_max_length,
    )


def attention_heads(widths: Sequence[int], head_dim: int) -> tuple[int, ...]:
    """Attention heads per UNet block for `head_dim` channels per head (one head where a block is
    narrower). diffusers' UNet2DConditionModel reads its `attention_head_dim` argument as the number
    of heads (a misnomer kept for old checkpoints), so the pipeline is built with these counts."""
    return tuple(max(1, w // head_dim) for w in widths)


def build_tiny_pipeline(arch: dict[str, Any], image_size: int, channels: int, seed: int):
    """A small pixel-space text-to-image pipeline with random weights, from a plain config dict."""
    torch.manual_seed(seed)
    tokenizer = clip_tokenizer(arch["max_tokens"])
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=arch["text_width"],
            intermediate_size=arch["text_width"] * 4,
            num_hidden_layers=arch["text_layers"],
            num_attention_heads=arch["text_heads"],
            max_position_embeddings=arch["max_tokens"],
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    widths = tuple(arch["unet_widths"])
    unet = UNet2DConditionModel(
        sample_size=image_size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=widths,
        layers_per_block=arch["layers_per_block"],
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(widths) - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (len(widths) - 1) + ("UpBlock2D",),
        cross_attention_dim=arch["text_width"],
        attention_head_dim=attention_heads(widths, arch["attention_head_dim"]),
        norm_num_groups=arch["norm_groups"],
        # Imagen-style: a pooled text embedding joins the timestep embedding, so every ResNet block
        # sees the prompt, not only the cross-attention layers; conditioning is learned much sooner
        addition_embed_type="text" if arch.get("pooled_text", True) else None,
        addition_embed_type_num_heads=arch["text_heads"],
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=True
    )
    pipe = PixelTextToImagePipeline(tokenizer, text_encoder, unet, scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def images_used(n: int, captions: Callable[[np.random.Generator, int], str], recipe: dict[str, Any],
                seed: int) -> np.ndarray:
    """The training-image indices a `train_tiny_generator` run reads, sorted and unique: its own
    seeded draws (indices, then per image the unconditional coin and the caption), without a model.
    At most steps x batch_size images, however large the split."""
    rng = np.random.default_rng(seed)
    used: set[int] = set()
    for _ in range(recipe["steps"]):
        idx, _texts = _draw_batch(rng, n, captions, recipe)
        used.update(int(i) for i in idx)
    return np.asarray(sorted(used), dtype=np.int64)


class ImageRows:
    """Some rows of an (N, H, W, C) uint8 image set, indexed by their positions in the whole set."""

    def __init__(self, n: int, positions: np.ndarray, rows: np.ndarray):
        self.positions, self.rows = np.asarray(positions, dtype=np.int64), rows
        self.shape = (int(n), *rows.shape[1:])

    def __getitem__(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx)
        k = np.searchsorted(self.positions, idx)
        if np.any(k >= len(self.positions)) or np.any(self.positions[np.minimum(k, len(self.positions) - 1)] != idx):
            raise IndexError("an image outside the loaded rows was asked for")
        return self.rows[k]


def train_tiny_generator(
    images: np.ndarray,
    captions: Callable[[np.random.Generator, int], str],
    arch: dict[str, Any],
    recipe: dict[str, Any],
    seed: int,
    out_dir: str | os.PathLike,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train the tiny pipeline on uint8 images (N, H, W, C) with captions drawn per step.

    `images` is an array or `ImageRows`: only the rows `images_used` names are read, so a large
    real split need not be held (the script loads those rows alone).

    `captions(rng, index)` returns a caption for training image `index`; a fraction
    `recipe["uncond_prob"]` of captions is replaced by "" so classifier-free guidance works.
    The run is seeded and the step count fixed, so it is deterministic for a pinned thread count.
    Writes a diffusers pipeline folder atomically and returns the loss log.
    """
    n, h, w, c = images.shape
    pipe = build_tiny_pipeline(arch, image_size=h, channels=c, seed=seed)
    opt, params, text_scale = _generator_optimizer(pipe, recipe)
    steps = recipe["steps"]
    sched = step_schedule(opt, steps, warmup=max(1, steps // 20))
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    pipe.unet.train()
    pipe.text_encoder.train(text_scale > 0)
    embed = _caption_embedder(pipe, text_scale)
    log: list[dict[str, float]] = []
    bar = tqdm(range(steps), desc="train generator", disable=not progress, mininterval=2)
    for step in bar:
        idx, texts = _draw_batch(rng, n, captions, recipe)
        loss = _denoising_batch_loss(pipe, embed, images[idx], texts, gen, recipe.get("snr_gamma"))
        _optimizer_step(loss, opt, sched, params)
        log.append({"step": step, "loss": loss.item(), "lr": sched.get_last_lr()[0]})
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean([r['loss'] for r in log[-50:]]):.4f}")
    pipe.unet.eval()
    pipe.text_encoder.eval()
    _save_generator(pipe, out_dir, {"arch": arch, "recipe": recipe, "seed": seed, "images": n})
    return log


def _generator_optimizer(pipe: PixelTextToImagePipeline, recipe: dict[str, Any]):
    """AdamW over the UNet and, when `recipe["text_lr_scale"]` > 0, the text encoder at that
    fraction of the rate (else it is frozen). Returns (optimizer, its parameters, the scale)."""
    # A text encoder trained from scratch at the UNet's rate collapses: early on its random features
    # only add noise to the denoiser, so training flattens them before the UNet learns to read them.
    # `text_lr_scale` slows it down; 0 freezes it (as Stable Diffusion freezes CLIP).
    text_scale = recipe.get("text_lr_scale", 0.0)
    pipe.text_encoder.requires_grad_(text_scale > 0)
    groups = [{"params": list(pipe.unet.parameters()), "lr": recipe["lr"]}]
    if text_scale > 0:
        groups.append({"params": list(pipe.text_encoder.parameters()), "lr": recipe["lr"] * text_scale})
    params = [p for g in groups for p in g["params"]]
    opt = torch.optim.AdamW(groups, lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    return opt, params, text_scale


def _caption_embedder(pipe: PixelTextToImagePipeline, text_scale: float) -> Callable[[list[str]], torch.Tensor]:
    """Captions to text-encoder states: encoded at every step while the encoder trains, else cached."""
    # a frozen text encoder gives each caption the same embedding at every step: encode each
    # distinct caption once, when first drawn (the captions are a few hundred strings), with the step's
    # new captions in one sorted batch
    encode = partial(encode_tokens, pipe, device=pipe.unet.device)
    return encode if text_scale > 0 else PromptCache(encode, batching="sorted")


def _draw_batch(
    rng: np.random.Generator, n: int, captions: Callable[[np.random.Generator, int], str], recipe: dict[str, Any]
) -> tuple[np.ndarray, list[str]]:
    """A step's image indices, then per image the unconditional coin and, unless it came up, the
    caption: (indices, captions with "" for the unconditional ones)."""
    idx = rng.integers(0, n, size=recipe["batch_size"])
    texts = [
        "" if rng.random() < recipe["uncond_prob"] else captions(rng, int(i)) for i in idx
    ]
    return idx, texts


def _optimizer_step(loss: torch.Tensor, opt: torch.optim.Optimizer, sched, params: list) -> None:
    """Backward, gradient norm clipped to 1, one optimizer and one schedule step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()


def _denoising_batch_loss(
    pipe: PixelTextToImagePipeline, embed: Callable[[list[str]], torch.Tensor], rows: np.ndarray,
    texts: list[str], gen: torch.Generator, snr_gamma: float | None,
) -> torch.Tensor:
    """The denoising loss of one batch of uint8 image rows (B, H, W, C) and their captions, with
    the noise and timesteps drawn from `gen`."""
    noise_sched = pipe.scheduler
    # uint8 rows to [-1, 1] per batch (the same values as converting every image first)
    x0 = torch.from_numpy(np.asarray(rows)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.randint(0, noise_sched.config.num_train_timesteps, (len(x0),), generator=gen)
    xt = noise_sched.add_noise(x0, noise, t)
    pred = pipe.unet(xt, t, encoder_hidden_states=embed(texts)).sample
    return denoising_loss(pred, noise, t, noise_sched, snr_gamma)


def _save_generator(pipe: PixelTextToImagePipeline, out_dir: str | os.PathLike, record: dict[str, Any]) -> None:
    """The pipeline folder, written atomically, with the run's record in synthscale.json."""
    with atomic_dir(out_dir) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        write_meta(tmp, record)


def caption_sampler(
    strategy_prompts: Sequence[Sequence[Sequence[str]]], labels: np.ndarray
) -> Callable[[np.random.Generator, int], str]:
    """Captions for generator training: a random strategy, then a random prompt of the image's class.

    `strategy_prompts[s][c]` lists strategy s's prompts for class c.
    """
    if not strategy_prompts:
        raise ValueError("a trained generator needs at least one caption strategy")

    def caption(rng: np.random.Generator, index: int) -> str:
        prompts = strategy_prompts[int(rng.integers(len(strategy_prompts)))][int(labels[index])]
        return prompts[int(rng.integers(len(prompts)))]

    return caption


def train_generator_on_split(
    manifest: str | os.PathLike,
    channels: int,
    prompt_files: Sequence[str | os.PathLike],
    spec: dict[str, Any],
    seed: int,
    out_dir: str | os.PathLike,
) -> list[dict[str, float]]:
    """The rule train_generator: `train_tiny_generator` (config entry `spec`: its arch, recipe and
    train_shift) on the manifest's train split, captioned by the prompt files' strategies. Only the real
    images the run draws are read (a shift, for a base that misses the target distribution, goes over
    the whole split in order)."""
    images, captions = generator_training_set(
        split_shards(manifest, "train"),
        image_mode(channels),
        [read_prompts(p) for p in prompt_files],
        spec["recipe"],
        seed,
        spec.get("train_shift"),
    )
    return train_tiny_generator(images, captions, spec["arch"], spec["recipe"], seed, out_dir)


def generator_training_set(
    shards: Sequence[str | os.PathLike],
    mode: str,
    strategy_prompts: Sequence[Sequence[Sequence[str]]],
    recipe: dict[str, Any],
    seed: int,
    shift: dict[str, Any] | None = None,
) -> tuple[ImageRows, Callable[[np.random.Generator, int], str]]:
    """(images, captions) for `train_tiny_generator` from a split's shards, streaming: the labels
    first, then only the images the run will draw (`images_used`: at most steps x batch_size), under
    the generator's `train_shift` (applied in order over the whole split, as `apply_shift` does).
    The same run as on the whole split loaded, with memory bounded by the rows it reads."""
    from synthscale.data.real import shift_each
    from synthscale.data.loader import read_shard
    from synthscale.data.shards import decode_image

    def samples():
        for url in shards:
            yield from read_shard(url)

    def decode(sample: tuple[bytes, int, int]) -> np.ndarray:
        return decode_image(sample[0], mode)

    labels = np.asarray([label for _, label, _ in samples()], dtype=np.int64)
    captions = caption_sampler(strategy_prompts, labels)
    used = images_used(len(labels), captions, recipe, seed)
    want, rows = set(used.tolist()), []
    shift = shift or {"kind": "none"}
    if shift["kind"] == "none":  # decode only the rows the run reads
        rows = [decode(f) for i, f in enumerate(samples()) if i in want]
    else:  # a rotation draws per image in order: shift the whole stream, keep the rows
        rows = [im for i, im in enumerate(shift_each((decode(f) for f in samples()), shift, seed)) if i in want]
    return ImageRows(len(labels), used, np.stack(rows)), captions
