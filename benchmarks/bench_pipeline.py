"""Throughput of the study's heavy steps on this machine: generator training, sampling, classifier
training. Prints figures; it asserts nothing (speed targets live here, not in tests).

    uv run python benchmarks/bench_pipeline.py [--threads 1] [--config config.yaml]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from synthscale.study.config import load_config
from synthscale.generation.generate import sample
from synthscale.generation.pipelines import set_sampler
from synthscale.generation.prompt_encoding import encode_tokens
from synthscale.generation.tinygen import build_tiny_pipeline
from synthscale.classifier.train import train_classifier


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default="config.yaml")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--images", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    gen = next(g for g in cfg["generators"] if g["kind"] == "trained")
    size, ch = cfg["dataset"]["image_size"], cfg["dataset"]["channels"]
    pipe = build_tiny_pipeline(gen["arch"], size, ch, 0)
    n_params = sum(p.numel() for p in pipe.unet.parameters()) / 1e6
    print(f"threads={args.threads}  generator UNet {n_params:.2f}M parameters, {size}x{size}x{ch}")

    bs = gen["recipe"]["batch_size"]
    x = torch.randn(bs, ch, size, size)
    opt = torch.optim.AdamW(pipe.unet.parameters(), 1e-3)
    t0, steps = time.perf_counter(), 5
    for _ in range(steps):
        t = torch.randint(0, 1000, (bs,))
        loss = torch.nn.functional.mse_loss(pipe.unet(x, t, encoder_hidden_states=encode_tokens(pipe, ["seven"] * bs, pipe.unet.device)).sample, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    dt = (time.perf_counter() - t0) / steps
    print(f"generator training: {1 / dt:.2f} steps/s at batch {bs} "
          f"({gen['recipe']['steps']} steps = {gen['recipe']['steps'] * dt / 60:.1f} min)")

    g = cfg["generation"]
    set_sampler(pipe, g["sampler"])
    for guidance in (1.0, 2.0):
        t0 = time.perf_counter()
        sample(pipe, ["a photo of the number seven"] * args.images, list(range(args.images)), guidance, g["steps"])
        rate = args.images / (time.perf_counter() - t0)
        print(f"sampling: {rate:.1f} images/s ({g['sampler']}, {g['steps']} steps, guidance {guidance:g}"
              f"{', CFG doubles the batch' if guidance != 1 else ', no CFG pass'})")

    rng = np.random.default_rng(0)
    n = max(cfg["n_images"])
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    labels = np.arange(n) % 10
    recipe = {**cfg["train"]}
    t0 = time.perf_counter()
    log = train_classifier(images, labels, 10, recipe, 0, "/tmp/bench_model.safetensors", "/tmp/bench_log.csv", progress=False)
    dt = time.perf_counter() - t0
    print(f"classifier training: {cfg['train']['arch']} on N={n}: {int(log['step'].iloc[-1])} steps in {dt:.1f} s "
          f"({log['step'].iloc[-1] / dt:.1f} steps/s)")


if __name__ == "__main__":
    main()
