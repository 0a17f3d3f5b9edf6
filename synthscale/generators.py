"""Text-to-image generators: load one (Hub id, local path, or trained here), train a tiny one, sample.

Every generator, pretrained or trained by the workflow, goes through `load_generator` and `sample`:
`sample` is one classifier-free-guidance loop over the components every diffusers text-to-image
pipeline has (tokenizer, text_encoder, unet, scheduler, and a vae for latent models).
"""

from __future__ import annotations

import gzip
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    UNet2DConditionModel,
)
from tqdm.auto import tqdm
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from synthscale.io import atomic_dir

SAMPLERS: dict[str, type] = {
    "ddim": DDIMScheduler,
    "ddpm": DDPMScheduler,
    "dpm": DPMSolverMultistepScheduler,
    "euler": EulerDiscreteScheduler,
    "pndm": PNDMScheduler,
}


class PixelTextToImagePipeline(DiffusionPipeline):
    """A pixel-space text-to-image pipeline: tokenizer, text encoder, UNet and scheduler, no VAE.

    It is a plain diffusers pipeline, so `save_pretrained` writes the usual folder (model_index.json
    plus one subfolder per component, weights as safetensors) and `from_pretrained` reads it back.
    """

    def __init__(self, tokenizer, text_encoder, unet, scheduler):
        super().__init__()
        self.register_modules(
            tokenizer=tokenizer, text_encoder=text_encoder, unet=unet, scheduler=scheduler
        )

    @torch.no_grad()
    def __call__(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        guidance: float = 2.0,
        steps: int = 20,
    ) -> np.ndarray:
        return sample(self, prompts, seeds, guidance=guidance, steps=steps)


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
        attention_head_dim=arch["attention_head_dim"],
        norm_num_groups=arch["norm_groups"],
        # Imagen-style: a pooled text embedding joins the timestep embedding, so every ResNet block
        # sees the prompt, not only the cross-attention layers; conditioning is learned much sooner
        addition_embed_type="text" if arch.get("pooled_text", True) else None,
        addition_embed_type_num_heads=arch["text_heads"],
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=True
    )
    return PixelTextToImagePipeline(tokenizer, text_encoder, unet, scheduler)


def encode_prompts(pipe, prompts: Sequence[str]) -> torch.Tensor:
    tok = pipe.tokenizer(
        list(prompts),
        padding="max_length",
        max_length=pipe.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    device = pipe.unet.device
    return pipe.text_encoder(tok.input_ids.to(device))[0]


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

    `captions(rng, index)` returns a caption for training image `index`; a fraction
    `recipe["uncond_prob"]` of captions is replaced by "" so classifier-free guidance works.
    The run is seeded and the step count fixed, so it is deterministic for a pinned thread count.
    Writes a diffusers pipeline folder atomically and returns the loss log.
    """
    n, h, w, c = images.shape
    pipe = build_tiny_pipeline(arch, image_size=h, channels=c, seed=seed)
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
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
    steps = recipe["steps"]
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / steps)),
    )
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    noise_sched = pipe.scheduler
    pipe.unet.train()
    pipe.text_encoder.train(text_scale > 0)
    log: list[dict[str, float]] = []
    bar = tqdm(range(steps), desc="train generator", disable=not progress, mininterval=2)
    for step in bar:
        idx = rng.integers(0, n, size=recipe["batch_size"])
        texts = [
            "" if rng.random() < recipe["uncond_prob"] else captions(rng, int(i)) for i in idx
        ]
        x0 = x_all[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (len(idx),), generator=gen)
        xt = noise_sched.add_noise(x0, noise, t)
        pred = pipe.unet(xt, t, encoder_hidden_states=encode_prompts(pipe, texts)).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        log.append({"step": step, "loss": loss.item(), "lr": sched.get_last_lr()[0]})
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean([r['loss'] for r in log[-50:]]):.4f}")
    pipe.unet.eval()
    pipe.text_encoder.eval()
    with atomic_dir(out_dir) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        (Path(tmp) / "synthscale.json").write_text(
            json.dumps({"arch": arch, "recipe": recipe, "seed": seed, "images": n}, indent=1)
        )
    return log


def load_generator(
    source: str | os.PathLike,
    trained_here: bool = False,
    device: str = "cpu",
    dtype: str = "float32",
):
    """Load a text-to-image pipeline from a Hub id or a local folder, safetensors only.

    `trained_here` selects the workflow's own pixel-space pipeline class; anything else goes through
    `DiffusionPipeline.from_pretrained`, which picks the class named in model_index.json.
    """
    kwargs = dict(use_safetensors=True, dtype=getattr(torch, dtype))
    local = Path(source)
    if (local.exists() or trained_here) and not (local / "model_index.json").exists():
        raise FileNotFoundError(f"generator folder {source} has no model_index.json")
    cls = PixelTextToImagePipeline if trained_here else DiffusionPipeline
    pipe = cls.from_pretrained(str(source), **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def set_sampler(pipe, name: str) -> None:
    """Swap the pipeline's scheduler for the named sampler, keeping its noise schedule."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")
    pipe.scheduler = SAMPLERS[name].from_config(pipe.scheduler.config)


def initial_noise(shape: tuple[int, ...], seeds: Sequence[int]) -> torch.Tensor:
    """One noise tensor per image, drawn on the CPU from the image's own seed (device-independent)."""
    return torch.stack(
        [torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    )


@torch.no_grad()
def sample(
    pipe,
    prompts: Sequence[str],
    seeds: Sequence[int],
    guidance: float,
    steps: int,
    height: int | None = None,
    width: int | None = None,
) -> np.ndarray:
    """Classifier-free-guided sampling; returns uint8 images (B, H, W, C).

    Works for latent pipelines (Stable Diffusion: a `vae` component) and pixel-space ones.
    Image b starts from noise seeded by seeds[b] alone, so guidance values are paired.
    """
    unet, sched = pipe.unet, pipe.scheduler
    vae = getattr(pipe, "vae", None)
    factor = 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 1
    size = unet.config.sample_size * factor
    height, width = height or size, width or size
    shape = (unet.config.in_channels, height // factor, width // factor)
    x = initial_noise(shape, seeds).to(unet.device, unet.dtype)
    cond = encode_prompts(pipe, prompts)
    use_cfg = guidance != 1.0
    if use_cfg:
        cond = torch.cat([encode_prompts(pipe, [""] * len(prompts)), cond])
    sched.set_timesteps(steps, device=unet.device)
    x = x * sched.init_noise_sigma
    step_gen = torch.Generator(device=unet.device).manual_seed(int(seeds[0]))
    step_kwargs = {"generator": step_gen} if "generator" in _step_params(sched) else {}
    for t in sched.timesteps:
        inp = torch.cat([x, x]) if use_cfg else x
        inp = sched.scale_model_input(inp, t)
        eps = unet(inp, t, encoder_hidden_states=cond).sample
        if use_cfg:
            e_u, e_c = eps.chunk(2)
            eps = e_u + guidance * (e_c - e_u)
        x = sched.step(eps, t, x, **step_kwargs).prev_sample
    if vae is not None:
        x = vae.decode(x / vae.config.scaling_factor).sample
    x = ((x.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def _step_params(sched) -> set[str]:
    import inspect

    return set(inspect.signature(sched.step).parameters)


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
