"""CPU seconds of one filter job of the default study's shape, from a cold start.

Not a timed test. Run `python benchmarks/bench_filter.py [--shards 2] [--shard-size 300]`.
It writes `--shards` random 16x16 shards (the default study over-generates 2 x 300 images for its
`conf` filter), builds the default judge shape (timm resnet18, channels 16-128), and times
`synthscale.quality.filtering.run_filter` with a judge scorer: process CPU time and wall time, including the
imports a Snakemake job pays.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

T0_CPU, T0_WALL = time.process_time(), time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from synthscale.quality.filtering import JudgeScorer, run_filter  # noqa: E402
from synthscale.quality.judge import trained_judge  # noqa: E402
from synthscale.data.shards import write_shard  # noqa: E402
from synthscale.classifier.train import create_classifier  # noqa: E402


def main(shards: int, shard_size: int, threshold: float) -> None:
    torch.set_num_threads(1)
    imports = time.process_time() - T0_CPU
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = []
        for k in range(shards):
            idx = range(k * shard_size, (k + 1) * shard_size)
            images = rng.integers(0, 256, (shard_size, 16, 16, 1), dtype=np.uint8)
            recs = [{"key": f"{i:08d}", "index": i, "label": i % 10, "prompt": "x"} for i in idx]
            src.append(tmp / f"in-{k}.tar")
            write_shard(src[-1], list(images), recs)
        torch.manual_seed(0)
        judge = trained_judge(create_classifier("resnet18", 10, {"channels": (16, 32, 64, 128)}))
        spec = {"kind": "judge", "threshold": threshold, "overgenerate": float(shards), "batch_size": 256}
        c0, w0 = time.process_time(), time.perf_counter()
        counts = run_filter(src, spec, "bench", [tmp / "out-0.tar"], tmp / "counts.json", shard_size, 10,
                            JudgeScorer(judge, 16), progress=False)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    print(f"imports: {imports:.1f} CPU s; filtering {counts['seen']} images (kept {counts['kept']}): "
          f"{cpu:.2f} CPU s, {wall:.2f} s wall; whole job: {time.process_time() - T0_CPU:.1f} CPU s, "
          f"{time.perf_counter() - T0_WALL:.1f} s wall")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--shard-size", type=int, default=300)
    ap.add_argument("--threshold", type=float, default=0.0)
    a = ap.parse_args()
    main(a.shards, a.shard_size, a.threshold)
