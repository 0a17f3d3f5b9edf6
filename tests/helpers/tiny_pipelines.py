"""Tiny diffusers text-to-image pipelines with random weights, built from configs and saved to disk as a
Hub checkpoint would be (safetensors), with tokenizers built offline: Stable Diffusion 1.x, SDXL (two
text encoders, pooled embeddings, added time conditions) and PixArt-alpha (a T5 encoder, attention
masks, a transformer denoiser), Stable Diffusion 3 (two CLIP encoders and a T5, an MMDiT, flow matching)
and Flux (CLIP + T5, packed latents, embedded guidance, flow matching). Used by the tests and by
benchmarks/bench_generation.py."""
from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    PixArtAlphaPipeline,
    PixArtTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

from synthscale.generation.tinygen import clip_tokenizer


def tiny_vae(latent_channels: int = 4, **kw) -> AutoencoderKL:
    return AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=latent_channels,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         norm_num_groups=8, **kw)


def clip_text(tok, width: int, layers: int = 2, projection: bool = False):
    cfg = CLIPTextConfig(vocab_size=len(tok), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                         num_attention_heads=2, max_position_embeddings=tok.model_max_length, projection_dim=width,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)


def build_sd(path: Path, widths=(16, 32), sample_size: int = 8, text_width: int = 32, seed: int = 0,
             text_layers: int = 2) -> Path:
    """Stable Diffusion 1.x: a CLIP text encoder, a UNet and a VAE (16 px images at the defaults)."""
    torch.manual_seed(seed)
    tok = clip_tokenizer(16)
    unet = UNet2DConditionModel(sample_size=sample_size, in_channels=4, out_channels=4, block_out_channels=tuple(widths),
                                layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=text_width,
                                attention_head_dim=8, norm_num_groups=8)
    pipe = StableDiffusionPipeline(vae=tiny_vae(), text_encoder=clip_text(tok, text_width, text_layers), tokenizer=tok,
                                   unet=unet,
                                   scheduler=DDIMScheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(path, safe_serialization=True)
    return Path(path)


def build_sdxl(path: Path, seed: int = 0) -> Path:
    """SDXL: CLIPTextModel + CLIPTextModelWithProjection (pooled), a UNet with text_time added conditions."""
    torch.manual_seed(seed)
    tok, tok2 = clip_tokenizer(16), clip_tokenizer(16)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                                layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                                use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
                                projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=64,
                                norm_num_groups=8)
    pipe = StableDiffusionXLPipeline(vae=tiny_vae(), text_encoder=clip_text(tok, 32),
                                     text_encoder_2=clip_text(tok2, 32, projection=True), tokenizer=tok,
                                     tokenizer_2=tok2, unet=unet, scheduler=EulerDiscreteScheduler())
    pipe.save_pretrained(path, safe_serialization=True)
    return Path(path)


def t5_tokenizer() -> T5TokenizerFast:
    """A small T5 (SentencePiece-style Unigram) tokenizer built offline over lowercase letters and words."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    words = ("a photo of the digit number zero one two three four five six seven eight nine picture "
             "handwritten").split()
    vocab = ["<pad>", "</s>", "<unk>"] + [chr(c) for c in range(97, 123)] + ["▁" + w for w in words] + ["▁"]
    t = Tokenizer(models.Unigram([(w, -1.0 if len(w) > 1 else -5.0) for w in vocab], unk_id=2))
    t.pre_tokenizer = pre_tokenizers.Metaspace()
    t.decoder = decoders.Metaspace()
    return T5TokenizerFast(tokenizer_object=t, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", extra_ids=0)


def build_pixart(path: Path, seed: int = 0) -> Path:
    """PixArt-alpha: a T5 encoder (attention masks), a DiT-style transformer denoiser and a VAE."""
    torch.manual_seed(seed)
    tok = t5_tokenizer()
    text = T5EncoderModel(T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                   pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id))
    transformer = PixArtTransformer2DModel(sample_size=8, num_layers=2, patch_size=2, attention_head_dim=8,
                                           num_attention_heads=3, caption_channels=32, in_channels=4,
                                           cross_attention_dim=24, out_channels=8, attention_bias=True,
                                           activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
                                           norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6)
    pipe = PixArtAlphaPipeline(tokenizer=tok, text_encoder=text, vae=tiny_vae(), transformer=transformer,
                               scheduler=DDIMScheduler())
    pipe.save_pretrained(path, safe_serialization=True)
    return Path(path)


def tiny_t5(tok: T5TokenizerFast, width: int) -> T5EncoderModel:
    return T5EncoderModel(T5Config(vocab_size=len(tok), d_model=width, d_kv=8, d_ff=2 * width, num_layers=2,
                                   num_heads=4, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id))


def build_sd3(path: Path, seed: int = 0) -> Path:
    """Stable Diffusion 3: two CLIP encoders with projections (pooled), a T5, an MMDiT denoiser over 16
    latent channels, a VAE with a shift factor and the flow-matching Euler scheduler."""
    torch.manual_seed(seed)
    tok, tok2, tok3 = clip_tokenizer(16), clip_tokenizer(16), t5_tokenizer()
    # the CLIP token embeddings (32 + 32) are padded to the T5 width and joined along the sequence
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=16, out_channels=16, num_layers=2,
                                        attention_head_dim=8, num_attention_heads=4, joint_attention_dim=64,
                                        caption_projection_dim=32, pooled_projection_dim=64, pos_embed_max_size=16)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=tiny_vae(16, shift_factor=0.06, scaling_factor=1.5),
        text_encoder=clip_text(tok, 32, projection=True), tokenizer=tok,
        text_encoder_2=clip_text(tok2, 32, projection=True), tokenizer_2=tok2,
        text_encoder_3=tiny_t5(tok3, 64), tokenizer_3=tok3,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return Path(path)


def build_flux(path: Path, seed: int = 0) -> Path:
    """Flux (dev-style): a CLIP encoder (pooled), a T5, a transformer over 2x2-packed latents with rotary
    position ids and embedded guidance, a VAE with a shift factor and the flow-matching Euler scheduler."""
    torch.manual_seed(seed)
    tok, tok2 = clip_tokenizer(16), t5_tokenizer()
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=[4, 4, 8])
    pipe = FluxPipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=tiny_vae(4, shift_factor=0.06, scaling_factor=1.5),
        text_encoder=clip_text(tok, 32), tokenizer=tok, text_encoder_2=tiny_t5(tok2, 32), tokenizer_2=tok2,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return Path(path)


BUILDERS = {"sd": build_sd, "sdxl": build_sdxl, "pixart": build_pixart, "sd3": build_sd3, "flux": build_flux}


def build_families(root: Path) -> dict[str, Path]:
    """One folder per family in BUILDERS, under `root`: {family: folder}."""
    return {name: build(root / name) for name, build in BUILDERS.items()}
