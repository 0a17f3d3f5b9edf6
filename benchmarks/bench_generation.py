"""Images/s of synthscale's generation path against the plain loop, on the same pipeline, steps, guidance
and device, at the study's batch size. Prints figures; asserts nothing.

- plain: one prompt per `pipe()` call, fp32, diffusers' default settings (what a first script does);
- synthscale: `generate_images` as a generation job runs it: `encode_prompt` once per unique prompt,
  batches of `generation.batch_size` with one generator per image, the config's dtype (auto: bf16 on a
  GPU), channels_last, VAE slicing, optional torch.compile (`--compile MODE`, batches padded to one shape).

On a GPU it also prints the denoiser's achieved FLOP/s (FLOPs counted with torch.utils.flop_counter on one
denoiser call) as a fraction of the device's dense bf16 peak (MFU).

    python benchmarks/bench_generation.py                       # tiny SD, this CPU, config.yaml's batch/steps
    python benchmarks/bench_generation.py --arch sd15 --device cuda --images 64 --batch-size 16 --steps 20
    python benchmarks/bench_generation.py --pipeline path/to/pipeline --device cuda
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from synthscale.study.config import load_config  # noqa: E402
from synthscale.generation.generate import ImageSpec, PromptEmbeddings, generate_images, image_spec  # noqa: E402
from synthscale.generation.pipelines import denoiser, load_generator, resolve_dtype, set_sampler, speed_up  # noqa: E402

# dense bf16 tensor-core peaks, TFLOP/s (vendor data sheets)
PEAK_BF16 = {"H200": 989, "H100 SXM": 989, "H100 80GB HBM3": 989, "H100 PCIe": 756, "H100": 989,
             "A100": 312, "L40S": 362, "A10G": 70, "L4": 121, "RTX 4090": 165}


def build(arch: str, folder: Path) -> Path:
    """A pipeline with random weights: `tiny` (the tests' SD 1.x, 16 px) or `sd15` (Stable Diffusion
    1.5's architecture at 512 px: its UNet, VAE and CLIP ViT-L text encoder configs)."""
    from helpers.tiny_pipelines import build_sd

    if arch == "tiny":
        return build_sd(folder)
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from synthscale.generation.tinygen import clip_tokenizer

    tok = clip_tokenizer(77)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=768, intermediate_size=3072,
                                        num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
                                        hidden_act="quick_gelu", bos_token_id=tok.bos_token_id,
                                        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)  # the defaults are SD 1.x's UNet
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=2, sample_size=512)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
                                   scheduler=PNDMScheduler(skip_prk_steps=True), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def specs_for(cfg: dict, n: int) -> list[ImageSpec]:
    """The study's prompts: class names and templates of ten classes, as image i would get them."""
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    prompts = [[f"a photo of the number {c}", f"a drawing of a {c}", f"{c}"] for c in names]
    return [image_spec(i, prompts, cfg["generation"]["seed"]) for i in range(n)]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def plain_loop(source, specs, steps, guidance, device) -> float:
    pipe = load_generator(source, device=device, dtype="float32")
    pipe(specs[0].prompt, num_inference_steps=steps, guidance_scale=guidance, output_type="np")  # warm-up
    sync(device)
    t0 = time.perf_counter()
    for s in specs:
        pipe(s.prompt, num_inference_steps=steps, guidance_scale=guidance,
             generator=torch.Generator().manual_seed(s.seed), output_type="np")
    sync(device)
    return len(specs) / (time.perf_counter() - t0)


def synthscale_path(source, specs, steps, guidance, device, dtype, batch_size, compile_mode, sampler):
    pipe = load_generator(source, device=device, dtype=dtype)
    set_sampler(pipe, sampler)
    speed_up(pipe, compile_mode=compile_mode)
    emb = PromptEmbeddings(pipe)
    pad = compile_mode is not None
    generate_images(pipe, specs[:batch_size], guidance, steps, batch_size, emb, pad=pad)  # warm-up/compile
    sync(device)
    t0 = time.perf_counter()
    generate_images(pipe, specs, guidance, steps, batch_size, emb, pad=pad)
    sync(device)
    return len(specs) / (time.perf_counter() - t0), pipe


def denoiser_flops(pipe, batch: int, guidance: float) -> float:
    """FLOPs of one denoiser call at the batch's shape (CFG doubles the batch), by torch's counter."""
    from torch.utils.flop_counter import FlopCounterMode

    captured = {}
    net = denoiser(pipe)
    handle = net.register_forward_pre_hook(lambda m, a, kw: captured.setdefault("x", (a, kw)), with_kwargs=True)
    generate_images(pipe, specs_for({"generation": {"seed": 0}}, batch), guidance, 1, batch)
    handle.remove()
    args, kwargs = captured["x"]
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        getattr(net, "_orig_mod", net)(*args, **kwargs)
    return float(fc.get_total_flops())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "config.yaml"))
    ap.add_argument("--arch", choices=["tiny", "sd15"], default="tiny")
    ap.add_argument("--pipeline", help="a local pipeline folder (or Hub id) instead of a random one")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--images", type=int, default=None, help="default: the study's batch size")
    ap.add_argument("--batch-size", type=int, default=None, help="default: generation.batch_size")
    ap.add_argument("--steps", type=int, default=None, help="default: generation.steps")
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--compile", default=None, help="torch.compile mode for synthscale's path")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    g = cfg["generation"]
    bs = args.batch_size or g["batch_size"]
    steps = args.steps or g["steps"]
    n = args.images or bs
    specs = specs_for(cfg, n)
    with tempfile.TemporaryDirectory() as tmp:
        source = args.pipeline or build(args.arch, Path(tmp) / args.arch)
        print(f"{args.pipeline or args.arch}: {n} images, {steps} steps, guidance {args.guidance:g}, "
              f"batch {bs}, device {args.device}, {args.threads} thread(s)")
        plain = plain_loop(source, specs, steps, args.guidance, args.device)
        print(f"plain loop (one prompt per call, fp32, defaults): {plain:8.2f} images/s")
        fast, pipe = synthscale_path(source, specs, steps, args.guidance, args.device, args.dtype, bs,
                                     args.compile, g["sampler"] if args.pipeline is None and args.arch == "tiny" else None)
        dtype = resolve_dtype(args.dtype, args.device)
        print(f"synthscale path ({str(dtype).removeprefix('torch.')}, batch {bs}"
              f"{', compile ' + args.compile if args.compile else ''}): {fast:8.2f} images/s")
        print(f"speed-up: {fast / plain:.2f}x")
        flops = denoiser_flops(pipe, bs, args.guidance)
        per_image = flops / bs * steps
        print(f"denoiser: {flops / 1e9:.2f} GFLOP per call at batch {bs}; {per_image / 1e9:.2f} GFLOP per image "
              f"({steps} steps{', CFG' if args.guidance > 1 else ''})")
        achieved = per_image * fast
        print(f"achieved denoiser FLOP/s (synthscale path): {achieved / 1e12:.4f} TFLOP/s")
        if args.device.startswith("cuda"):
            name = torch.cuda.get_device_name()
            peak = args.peak_tflops or next((v for k, v in PEAK_BF16.items() if k in name), None)
            if peak:
                print(f"MFU on {name}: {achieved / (peak * 1e12):.1%} of {peak:g} TFLOP/s dense bf16")
            else:
                print(f"unknown peak for {name}: pass --peak-tflops")


if __name__ == "__main__":
    main()
