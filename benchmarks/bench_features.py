"""Images per second of the judge's one-pass feature extraction (logits + features) on this machine.

Not a timed test: CI machines vary. Run `python benchmarks/bench_features.py [--n 2000] [--threads 1]`.
It times `synthscale.quality.judge.extract` on the default study's judge shape (timm resnet18 with
channels (16, 32, 64, 128), 16x16 images), with and without channels_last, over a few batch sizes.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from synthscale.quality.judge import extract, trained_judge
from synthscale.classifier.train import create_classifier


def bench(n: int, size: int, batch_sizes: list[int], threads: int, repeats: int) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_classifier("resnet18", 10, {"channels": (16, 32, 64, 128)})
    judge = trained_judge(model)
    images = np.random.default_rng(0).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    extract(judge, images[:64])  # warm-up: allocator and kernel selection
    print(f"torch {torch.__version__}, {threads} thread(s), {n} images of {size}x{size}")
    for channels_last in (False, True):
        for bs in batch_sizes:
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                extract(judge, images, batch_size=bs, channels_last=channels_last)
                best = min(best, time.perf_counter() - t0)
            print(f"channels_last={channels_last!s:5} batch={bs:4d}: {n / best:9.0f} images/s")
        judge.model.to(memory_format=torch.contiguous_format)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    bench(a.n, a.size, a.batch_sizes, a.threads, a.repeats)


if __name__ == "__main__":
    main()
