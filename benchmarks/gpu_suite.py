"""The GPU suite: what the project's own code paths achieve on one GPU, in at most 10 minutes, offline.

    uv run python benchmarks/gpu_suite.py --out gpu_suite.json            # one GPU (CUDA)
    uv run python benchmarks/gpu_suite.py --tiny --out gpu_suite.json     # CPU: every path, tiny (CI)

Every model is built from a config with random weights (the same cost as the released weights):
- generation: an SD-1.5-size pipeline (UNet 320/640/1280/1280 with 768-wide cross-attention, SD's
  VAE, a 12-layer 768-wide CLIP text encoder with the BPE tokenizer open_clip ships) through
  synthscale.generation.generate.generate_images at 512 px, 50 DDIM steps, classifier-free guidance, batch 32
  and 64, eager and compiled: images/s, and the UNet's share of the bf16 peak (its FLOPs counted by
  torch.utils.flop_counter.FlopCounterMode on one UNet forward, times steps, over the batch's time);
- ResNet-50 at 224 px from JPEG shards (~20k smooth synthetic 256 px JPEGs, made first in parallel)
  through the project's loader and synthscale.classifier.train.train_model: images/s in the second epoch,
  against the same model and optimiser training on one batch resident on the device (the ceiling);
- open_clip ViT-B-16 through synthscale.clip.train.train_clip (open_clip_train): samples/s from its log
  and the model FLOP utilisation (FLOPs of one training step counted as above);
- one training step through synthscale.classifier.train.run_distributed (torchrun) with world size 1.

It writes one JSON (`--out`) of every figure with the device name, date and versions, rewritten
after each section, so a run stopped by its time limit keeps what it measured. Without CUDA it runs
at tiny size (`--tiny`): the same code paths, for CI (tests/unit/test_gpu_suite.py). The peak FLOP/s comes
from a table by device name (dense bf16: H100/H200 SXM 989 TFLOP/s, A100 312) or `--peak-tflops`.
benchmarks/run_gpu_suite.sh runs it once on a GPU machine with a time limit, keeping JSON and logs.
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import logging
import math
import os
import platform
import re
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

# dense bf16 tensor-core peak, TFLOP/s, by a substring of torch.cuda.get_device_name()
# dense bf16 peaks by device-name substring, the most specific first (torch names the SXM parts
# "NVIDIA H100 80GB HBM3" and "NVIDIA H200"; the PCIe and NVL parts say so)
PEAK_BF16_TFLOPS = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H200 NVL": 835.0, "H200": 989.0, "H100": 989.0,
                    "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "L4": 121.0}
# CPU runs (--tiny) have no meaningful peak; a nominal one keeps the figures defined
NOMINAL_CPU_TFLOPS = 1.0

FULL = {
    "size": 512, "steps": 50, "guidance": 7.5, "gen_batches": [32, 64],
    "unet": {"block_out_channels": (320, 640, 1280, 1280), "cross_attention_dim": 768, "layers_per_block": 2,
             "attention_head_dim": 8},
    "vae": {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2},
    "text": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "jpegs": 20_000, "jpeg_size": 256, "shard_size": 1000,
    "resnet": {"arch": "resnet50", "model_kwargs": {}, "input_size": 224, "batch": 256, "workers": 15,
               "resident_steps": 30},
    "clip": {"model": "ViT-B-16", "model_config": None, "batch": 256, "workers": 12, "precision": "amp_bf16"},
    "classes": 1000,
}
TINY = {
    "size": 32, "steps": 2, "guidance": 7.5, "gen_batches": [2, 4],
    "unet": {"block_out_channels": (32, 64), "cross_attention_dim": 32, "layers_per_block": 1,
             "attention_head_dim": 8, "norm_num_groups": 8},
    "vae": {"block_out_channels": (16, 32), "layers_per_block": 1, "norm_num_groups": 8},
    "text": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    "jpegs": 256, "jpeg_size": 48, "shard_size": 64,
    "resnet": {"arch": "resnet18", "model_kwargs": {"channels": [8, 16, 32, 64]}, "input_size": 32, "batch": 32,
               "workers": 2, "resident_steps": 3},
    "clip": {"model": "gpu-suite-tiny-clip", "batch": 32, "workers": 0, "precision": "fp32",
             "model_config": {"embed_dim": 32,
                              "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                                             "patch_size": 8},
                              "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2,
                                           "layers": 1}}},
    "classes": 10,
}
SECTIONS = ("generation", "resnet50", "clip", "ddp", "generation_compiled")


def figure_names(cfg: dict[str, Any]) -> list[str]:
    """Every figure the suite reports for a size config (FULL or TINY)."""
    names = [
        "jpeg_make_img_per_s",
        "resnet50_loader_img_per_s", "resnet50_resident_img_per_s", "resnet50_loader_share_of_ceiling",
        "clip_samples_per_s", "clip_gflops_per_sample", "clip_mfu",
        "ddp_world1_seconds",
        "unet_gflops_per_image_step",
    ]
    for b in cfg["gen_batches"]:
        for mode in ("eager", "compiled"):
            names += [f"generation_b{b}_{mode}_img_per_s", f"generation_b{b}_{mode}_unet_mfu"]
    return names


def peak_flops(device: str, override_tflops: float | None) -> tuple[float, str]:
    """(peak FLOP/s, where it came from)."""
    if override_tflops:
        return override_tflops * 1e12, "--peak-tflops"
    if device == "cuda":
        name = torch.cuda.get_device_name()
        known = table_peak(name)
        if known is None:
            raise SystemExit(f"no bf16 peak known for {name!r}: pass --peak-tflops")
        return known
    return NOMINAL_CPU_TFLOPS * 1e12, "nominal CPU value (pass --peak-tflops)"


def table_peak(device_name: str) -> tuple[float, str] | None:
    """(peak FLOP/s, "table (key)") for a CUDA device name, from the most specific matching key."""
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key in device_name:
            return tflops * 1e12, f"table ({key})"
    return None


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def count_flops(fn: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


# --- synthetic JPEG shards -------------------------------------------------------------------------


def _smooth_jpeg(args: tuple[int, int]) -> bytes:
    """A smooth random image (bilinear upsampling of 8x8 noise, so JPEG sizes are photo-like)."""
    from PIL import Image

    i, size = args
    rng = np.random.default_rng(i)
    small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    buf = io.BytesIO()
    small.resize((size, size), Image.BILINEAR).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_jpeg_shards(folder: Path, cfg: dict[str, Any], workers: int) -> tuple[list[str], float]:
    """cfg["jpegs"] JPEGs in shards of cfg["shard_size"] (keys are positions, labels i mod classes)."""
    from synthscale.data.shards import shard_name, write_shard

    folder.mkdir(parents=True, exist_ok=True)
    n, s = cfg["jpegs"], cfg["shard_size"]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max(1, workers)) as pool:
        images = list(pool.map(_smooth_jpeg, [(i, cfg["jpeg_size"]) for i in range(n)], chunksize=64))
    rate = n / (time.perf_counter() - t0)
    paths = []
    for k in range(math.ceil(n / s)):
        idx = range(k * s, min(n, (k + 1) * s))
        path = folder / shard_name(k)
        recs = [{"key": f"{i:08d}", "index": i, "label": i % cfg["classes"]} for i in idx]
        write_shard(path, [images[i] for i in idx], recs, fmt="jpeg")
        paths.append(str(path))
    return paths, rate


def class_table(n: int):
    import pandas as pd

    return pd.DataFrame({"index": range(n), "id": [f"c{k}" for k in range(n)], "name": [f"thing {k}" for k in range(n)],
                         "description": ["a thing"] * n, "hypernym": ["object"] * n})


# --- ResNet-50: loader + train_model against a resident batch -----------------------------------------


def resnet_recipe(cfg: dict[str, Any], device: str) -> dict[str, Any]:
    from synthscale.classifier.recipes import resolve_recipe

    r = cfg["resnet"]
    base = resolve_recipe({"recipe": "imagenet-resnet50"})
    return resolve_recipe({
        "recipe": "imagenet-resnet50", "arch": r["arch"], "model_kwargs": r["model_kwargs"],
        "input_size": r["input_size"], "epochs": 2, "min_steps": 0, "batch_size": r["batch"],
        "micro_batch_size": r["batch"], "num_workers": r["workers"], "amp": device == "cuda",
        "channels_last": device == "cuda",
        # the recipe's lr is for its own batch: scaled linearly (Goyal et al.), so a smaller batch
        # does not diverge and lose the figure
        "lr": base["lr"] * r["batch"] / base["batch_size"],
    })


def bench_resnet(shards: list[str], cfg: dict[str, Any], device: str, work: Path) -> dict[str, float]:
    from synthscale.classifier.train import create_classifier, make_optimizer, train_model

    recipe = resnet_recipe(cfg, device)
    n = cfg["jpegs"]
    log = train_model([{"shards": shards, "count": n}], cfg["classes"], recipe, 0, work / "resnet.safetensors",
                      work / "resnet_log.csv", device=device, progress=False)
    # epoch 2: workers started, cuDNN tuned; `seconds` is cumulative from the start of training
    loader_rate = n / float(log["seconds"].iloc[1] - log["seconds"].iloc[0])

    model = create_classifier(recipe["arch"], cfg["classes"], recipe["model_kwargs"]).to(device)
    if recipe["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, recipe)
    b, size = recipe["micro_batch_size"], recipe["input_size"]
    x = torch.randn(b, 3, size, size, device=device)
    if recipe["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, cfg["classes"], (b,), device=device)
    amp = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bool(recipe["amp"]))

    def step():
        opt.zero_grad(set_to_none=True)
        with amp:
            loss = torch.nn.functional.cross_entropy(model(x).float(), y, label_smoothing=recipe["label_smoothing"])
        loss.backward()
        opt.step()

    model.train()
    for _ in range(3):
        step()
    sync(device)
    k = cfg["resnet"]["resident_steps"]
    t0 = time.perf_counter()
    for _ in range(k):
        step()
    sync(device)
    resident = k * b / (time.perf_counter() - t0)
    return {"resnet50_loader_img_per_s": loader_rate, "resnet50_resident_img_per_s": resident,
            "resnet50_loader_share_of_ceiling": loader_rate / resident}


# --- CLIP through train_clip ---------------------------------------------------------------------------


def clip_train_recipe(cfg: dict[str, Any]) -> dict[str, Any]:
    c = cfg["clip"]
    return {"model": c["model"], "model_config": c["model_config"], "epochs": 1, "min_steps": 0,
            "batch_size": c["batch"], "lr": 5e-4, "wd": 0.2, "warmup": 10, "workers": c["workers"],
            "precision": c["precision"], "shard_size": max(cfg["shard_size"], cfg["jpegs"] // 16),
            "log_every_n_steps": 5, "save_frequency": 1, "extra_args": [], "launcher": [],
            "caption_strategies": ["classname"]}


def clip_step_flops(cfg: dict[str, Any], device: str, work: Path) -> float:
    """FLOPs of one CLIP training step (forward, contrastive loss, backward) per sample."""
    import open_clip

    from synthscale.clip.train import register_model

    c = cfg["clip"]
    register_model(c["model"], c["model_config"], work / "clip_configs")
    model = open_clip.create_model(c["model"]).to(device)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    b = 4
    images = torch.randn(b, 3, size, size, device=device)
    text = torch.randint(0, 49408, (b, model.context_length), device=device)
    loss_fn = open_clip.ClipLoss()

    def step():
        image_features, text_features, logit_scale = model(images, text)[:3]
        loss_fn(image_features, text_features, logit_scale).backward()

    return count_flops(step) / b


CLIP_LOG_LINE = re.compile(r"Train Epoch: (\d+) \[\s*(\d+)/\s*\d+ .*?Batch \(t\): ([0-9.]+)")


def clip_rate_from_log(text: str, global_batch: int) -> float | None:
    """Training samples/s from open_clip_train's log, the step-weighted mean step time of each epoch's
    log intervals after its first. open_clip_train logs "Train Epoch: E [<samples so far>/<epoch>
    ...] ... Batch (t): <mean step s of the interval>" at its first step and every log_every_n_steps,
    and at the epoch's last step, whose interval may be a few steps only; the first interval is the one
    step that pays for start-up. Each interval weighs by the samples it took (the difference of the
    counts over `global_batch`, the samples of one step); None when no epoch logged a second interval."""
    samples, seconds = 0, 0.0
    last: tuple[int, int] | None = None
    for m in CLIP_LOG_LINE.finditer(text):
        epoch, done, mean = int(m[1]), int(m[2]), float(m[3])
        if last is not None and last[0] == epoch and done > last[1]:
            samples += done - last[1]
            seconds += mean * (done - last[1]) / global_batch  # the interval's steps x its mean step time
        last = (epoch, done)
    return None if seconds <= 0 else samples / seconds


def bench_clip(shards: list[str], cfg: dict[str, Any], device: str, work: Path, peak: float) -> dict[str, float]:
    from synthscale.clip.pairs import clip_parts, write_clip_pairs
    from synthscale.clip.schedule import clip_loaders
    from synthscale.clip.train import train_clip

    recipe = clip_train_recipe(cfg)
    n = cfg["jpegs"]
    model_path = work / "clip" / "model.safetensors"
    levels = {name: logging.getLogger(name).level for name in [None, *logging.root.manager.loggerDict]}
    # the caption shards are a CPU job of their own (rule clip_pairs): written before the clock starts
    pairs = write_clip_pairs(work / "clip" / "pairs", clip_parts("real", n, shards, [], 0),
                             class_table(cfg["classes"]), recipe, 0, clip_loaders(recipe))  # as rule clip_pairs
    t0 = time.perf_counter()
    log = work / "clip" / "train.log"
    train_clip(pairs, recipe, 0, model_path, device=device, log_path=log,
               config_path=work / "clip" / "model_config.json", work_dir=work / "clip" / "work")
    wall = time.perf_counter() - t0
    for name in [None, *logging.root.manager.loggerDict]:  # open_clip_train sets every logger to INFO
        logging.getLogger(name).setLevel(levels.get(name, logging.NOTSET))
    samples_per_s = clip_rate_from_log(log.read_text() if log.exists() else "", recipe["batch_size"]) or n / wall
    flops = clip_step_flops(cfg, device, work)
    return {"clip_samples_per_s": samples_per_s, "clip_gflops_per_sample": flops / 1e9,
            "clip_mfu": flops * samples_per_s / peak, "clip_wall_seconds": wall}


# --- one step through run_distributed ----------------------------------------------------------------


def bench_ddp(shards: list[str], cfg: dict[str, Any], device: str, work: Path) -> dict[str, float]:
    from synthscale.classifier.train import run_distributed

    recipe = {**resnet_recipe(cfg, device), "epochs": 1, "num_workers": min(2, cfg["resnet"]["workers"])}
    b = recipe["micro_batch_size"]
    spec = {"parts": [{"shards": shards[:2], "count": 2 * cfg["shard_size"], "limit": b}], "n_classes": cfg["classes"],
            "recipe": recipe, "seed": 0, "model_path": str(work / "ddp" / "model.safetensors"),
            "log_path": str(work / "ddp" / "log.csv"), "device": device, "progress": False}
    t0 = time.perf_counter()
    run_distributed(spec, 1, work / "ddp" / "spec.json")
    seconds = time.perf_counter() - t0
    if not (work / "ddp" / "model.safetensors").exists():
        raise RuntimeError("run_distributed wrote no model")
    return {"ddp_world1_seconds": seconds}


# --- generation: an SD-1.5-size pipeline through generate_images ---------------------------------------


def build_sd_pipeline(cfg: dict[str, Any], device: str, dtype: torch.dtype):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from synthscale.generation.tinygen import clip_tokenizer

    torch.manual_seed(0)
    n = len(cfg["unet"]["block_out_channels"])
    m = len(cfg["vae"]["block_out_channels"])
    unet = UNet2DConditionModel(
        sample_size=cfg["size"] // 2 ** (m - 1), in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1), **cfg["unet"],
    )
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, down_block_types=("DownEncoderBlock2D",) * m,
                        up_block_types=("UpDecoderBlock2D",) * m, sample_size=cfg["size"], **cfg["vae"])
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, **cfg["text"]))
    # SD 1.5's scheduler config
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=clip_tokenizer(77), unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype)


def bench_generation(cfg: dict[str, Any], device: str, peak: float, mode: str, compile_backend: str,
                     emit: Callable[[dict[str, float]], None]) -> None:
    """Eager (`mode` "eager") or compiled denoiser; each figure goes to `emit` as soon as it is measured."""
    from synthscale.generation.generate import ImageSpec, PromptEmbeddings, generate_images
    from synthscale.generation.pipelines import denoiser, speed_up

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    pipe = build_sd_pipeline(cfg, device, dtype)
    speed_up(pipe)  # channels_last, VAE slicing: the generation job's settings (compile below)
    unet = denoiser(pipe)
    size, steps, lat = cfg["size"], cfg["steps"], cfg["size"] // pipe.vae_scale_factor
    storage = min(256, size)

    def unet_forward():
        with torch.no_grad():
            unet(torch.randn(2, 4, lat, lat, device=device, dtype=dtype), torch.tensor([500, 500], device=device),
                 encoder_hidden_states=torch.randn(2, 77, unet.config.cross_attention_dim, device=device, dtype=dtype))

    per_image_step = count_flops(unet_forward)  # 2 UNet rows (CFG) per image per step
    emit({"unet_gflops_per_image_step": per_image_step / 1e9})
    for b in cfg["gen_batches"]:
        if mode == "compiled":  # one static graph per batch size, as a generation job has
            torch._dynamo.reset()
            unet.compile(backend=compile_backend)
        specs = [ImageSpec(i, i % 10, f"a photo of thing {i % 10}", 1000 + i) for i in range(b)]
        emb = PromptEmbeddings(pipe)
        # warm-up (compilation, cuDNN autotuning) at the same shapes, few steps
        generate_images(pipe, specs, cfg["guidance"], 2, b, emb, height=size, width=size, storage_size=storage,
                        pad=True)
        sync(device)
        t0 = time.perf_counter()
        generate_images(pipe, specs, cfg["guidance"], steps, b, emb, height=size, width=size, storage_size=storage,
                        pad=True)
        sync(device)
        seconds = time.perf_counter() - t0
        emit({f"generation_b{b}_{mode}_img_per_s": b / seconds,
              f"generation_b{b}_{mode}_unet_mfu": per_image_step * steps * b / seconds / peak})


# --- driver ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("gpu_suite.json"))
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (automatic without CUDA)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the device, TFLOP/s")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    ap.add_argument("--compile-backend", default=None, help="torch.compile backend (default: inductor on "
                    "CUDA, eager at tiny size on CPU, where inductor's C++ build alone takes minutes)")
    ap.add_argument("--budget-s", type=float, default=570.0, help="skip what would start after this many seconds")
    args = ap.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tiny = args.tiny or device == "cpu"
    cfg = TINY if tiny else FULL
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    backend = args.compile_backend or ("inductor" if device == "cuda" else "eager")
    peak, peak_from = peak_flops(device, args.peak_tflops)
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    import diffusers
    import open_clip
    import timm

    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device == "cuda" else f"cpu: {platform.processor() or platform.machine()}",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__, "cuda": torch.version.cuda, "diffusers": diffusers.__version__,
        "timm": timm.__version__, "open_clip": open_clip.__version__, "python": platform.python_version(),
        "cpu_count": os.cpu_count(), "tiny": tiny, "peak_bf16_tflops": peak / 1e12, "peak_from": peak_from,
        "compile_backend": backend, "config": json.loads(json.dumps(cfg, default=list)),
        "figures": {}, "seconds": {}, "errors": {}, "skipped": [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1, sort_keys=True))
        tmp.replace(args.out)

    t_start = time.perf_counter()
    tmp = tempfile.TemporaryDirectory(prefix="gpu_suite-") if args.work is None else None
    work = Path(tmp.name) if tmp else args.work
    work.mkdir(parents=True, exist_ok=True)
    try:
        shards: list[str] = []
        if {"resnet50", "clip", "ddp"} & set(sections):
            shards, rate = make_jpeg_shards(work / "jpeg", cfg, os.cpu_count() or 1)
            result["figures"]["jpeg_make_img_per_s"] = rate
            save()
        def emit(figures: dict[str, float]) -> None:
            result["figures"].update(figures)
            for k, v in figures.items():
                print(f"{k}: {v:.4g}", flush=True)
            save()

        jobs = {
            "generation": lambda: bench_generation(cfg, device, peak, "eager", backend, emit),
            "resnet50": lambda: emit(bench_resnet(shards, cfg, device, work)),
            "clip": lambda: emit(bench_clip(shards, cfg, device, work, peak)),
            "ddp": lambda: emit(bench_ddp(shards, cfg, device, work)),
            "generation_compiled": lambda: bench_generation(cfg, device, peak, "compiled", backend, emit),
        }
        for name in sections:
            if time.perf_counter() - t_start > args.budget_s:
                result["skipped"].append(name)
                print(f"== {name}: skipped (past --budget-s {args.budget_s:g})", flush=True)
                continue
            print(f"== {name}", flush=True)
            t0 = time.perf_counter()
            try:
                jobs[name]()
            except Exception as err:  # a failed section is reported; the others still run
                traceback.print_exc()
                result["errors"][name] = f"{type(err).__name__}: {err}"
            result["seconds"][name] = round(time.perf_counter() - t0, 2)
            save()
    finally:
        if tmp:
            tmp.cleanup()
    result["seconds"]["total"] = round(time.perf_counter() - t_start, 2)
    missing = [k for k in figure_names(cfg) if k not in result["figures"]]
    result["missing"] = missing
    save()
    print(f"wrote {args.out} ({len(result['figures'])} figures, {result['seconds']['total']:.0f} s"
          + (f"; errors in {sorted(result['errors'])}" if result["errors"] else "") + ")", flush=True)
    return 1 if result["errors"] or missing else 0


if __name__ == "__main__":
    sys.exit(main())
