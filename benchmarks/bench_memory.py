"""Peak RSS of each pipeline stage at two dataset sizes: does memory stay flat as N grows?

Builds synthetic ImageFolder trees (small random-ish JPEGs over `--classes` classes) of each size,
then runs each stage in a fresh subprocess and prints its peak RSS (the stage's own process, and
the largest of its worker processes), its time, and the ratio of the largest size to the smallest.
Stages: prepare (ImageFolder to shards), train (one epoch over all N through the shard DataLoader),
evaluate (the trained model on the test split and on all N training images), quality (the reference
set, then all N training images measured as a set, uncapped, with the trained model as the judge).

    python benchmarks/bench_memory.py                         # every stage at 5k and 50k images
    python benchmarks/bench_memory.py --sizes 2000 20000 --workers 2 --stages prepare

Adding a stage: write `def stage_x(ctx: Context) -> None` below (it runs inside the measured
subprocess; read the prepared shards from `ctx.prepared`, write scratch under `ctx.tmp`, take
config from `ctx.config`) and add it to STAGES. Stages run in STAGES order, after "prepare".
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@dataclass
class Context:
    data: str  # the ImageFolder root: data/train/<class>/..., data/val/<class>/..., data/classes.csv
    prepared: str  # where "prepare" writes the shards and splits.json; later stages read it
    tmp: str  # scratch for the stage
    workers: int
    config: dict[str, Any]  # the schema-filled study config (dataset, eval_sets, train, ...)


# --- stages: each runs in its own subprocess, whose peak RSS is measured ---


def stage_prepare(ctx: Context) -> None:
    from synthscale.data.imagefolder import prepare_imagefolder

    cfg = ctx.config
    prepare_imagefolder(
        ctx.prepared, cfg["dataset"], cfg["eval_sets"], cfg["dataset"]["shard_size"], cfg["seed"],
        workers=ctx.workers, manifest_path=Path(ctx.prepared) / "splits.json",
        classes_path=Path(ctx.prepared) / "classes.csv",
    )


def _model(ctx: Context) -> Path:
    """Where "train" leaves its classifier for "evaluate" and "quality" (the judge)."""
    return Path(ctx.prepared).parent / "model" / "model.safetensors"


def _pin(ctx: Context) -> None:
    import torch

    torch.set_num_threads(1)  # the training/eval process; decoding runs in ctx.workers loader workers


def stage_train(ctx: Context) -> None:
    """One epoch over every training image through the shard DataLoader (ctx.workers workers)."""
    from synthscale.classifier.train import train_model, training_parts

    _pin(ctx)
    manifest = Path(ctx.prepared) / "splits.json"
    parts, n_classes = training_parts([{"split": "train", "limit": None}], manifest)
    recipe = {**ctx.config["train"], "num_workers": ctx.workers}
    _model(ctx).parent.mkdir(parents=True, exist_ok=True)
    train_model(parts, n_classes, recipe, ctx.config["seed"], _model(ctx), Path(ctx.tmp) / "log.csv", progress=False)


def stage_evaluate(ctx: Context) -> None:
    """The trained classifier on the test split and on the whole training split (N images), streamed."""
    from synthscale.classifier.evaluate import evaluate_models

    _pin(ctx)
    evaluate_models(
        [_model(ctx)], ["n"], [0], Path(ctx.prepared) / "splits.json", ["test", "train"],
        Path(ctx.tmp) / "metrics.csv", Path(ctx.tmp) / "per_class.csv", ctx.config["train"],
        batch_size=256, num_workers=ctx.workers,
    )


def stage_quality(ctx: Context) -> None:
    """The quality stage's two jobs, with the trained classifier as the judge: the reference set
    (quality_reference: the test split) and a set measured on all N training images (quality; the
    study caps it at quality.n_images, here it is uncapped so that it grows with N)."""
    import json as _json

    from synthscale.data.real import split_shards
    from synthscale.quality.metrics import measure_reference, measure_synthetic

    _pin(ctx)
    cfg, tmp, manifest = ctx.config, Path(ctx.tmp), Path(ctx.prepared) / "splits.json"
    qcfg = cfg["quality"]
    ref = {"npz": tmp / "ref.npz", "json": tmp / "ref.json", "per_class": tmp / "ref.csv"}
    measure_reference(qcfg, _model(ctx), manifest, cfg["dataset"]["image_size"], qcfg["n_images"], ref,
                      seed=cfg["seed"])
    m = _json.loads(manifest.read_text())
    n = int(m["splits"]["train"]["count"])
    measure_synthetic(qcfg, _model(ctx), split_shards(manifest, "train"), n, int(m["classes"]),
                      cfg["dataset"]["image_size"], ref["npz"],
                      {"json": tmp / "set.json", "per_class": tmp / "set.csv"}, seed=cfg["seed"])


STAGES: dict[str, Callable[[Context], None]] = {
    "prepare": stage_prepare,
    "train": stage_train,
    "evaluate": stage_evaluate,
    "quality": stage_quality,
}


# --- the synthetic ImageFolder ---


def build_imagefolder(root: Path, n: int, classes: int, size: tuple[int, int], seed: int = 0) -> None:
    """n training JPEGs (and n/10 test ones) of `size` (w, h): a class colour plus noise."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(classes, 3))
    ids = [f"c{c:04d}" for c in range(classes)]
    for split, count in (("train", n), ("val", max(classes, n // 10))):
        for cid in ids:
            (root / split / cid).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            c = i % classes
            noise = rng.integers(-40, 41, size=(size[1], size[0], 3))
            im = Image.fromarray(np.clip(colours[c] + noise, 0, 255).astype(np.uint8))
            im.save(root / split / ids[c] / f"{i:07d}.jpg", quality=90)
    pd.DataFrame({"id": ids, "name": [f"class {c}" for c in range(classes)]}).to_csv(
        root / "classes.csv", index=False
    )


def study_config(data: Path, args: argparse.Namespace) -> dict[str, Any]:
    from synthscale.study.config import validate_schema

    cfg = {
        "dataset": {
            "name": "bench", "kind": "imagefolder", "image_size": args.image_size,
            "storage_size": args.storage_size, "shard_size": args.shard_size,
            "train_dir": str(data / "train"), "test_dir": str(data / "val"),
            "classes_csv": str(data / "classes.csv"),
            "encoding": {"format": args.format},
        },
        "eval_sets": [{"name": "test"}],
        "generators": [{"name": "g", "kind": "trained"}],
        "guidance": [1.0], "strategies": ["classname"], "n_images": [10],
        # the digits recipe, one epoch over every image, a small ResNet-18 at the image size
        "train": {"recipe": "digits", "input_size": args.image_size, "epochs": 1, "min_steps": 0, "batch_size": 128,
                  "model_kwargs": {"channels": [16, 32, 64, 128]}},
        "quality": {"batch_size": 256},
    }
    return validate_schema(cfg)


# --- measuring ---


def run_child(stage: str, ctx: Context) -> dict[str, float]:
    """Run one stage in a fresh interpreter; return its peak RSS (MB) and wall seconds."""
    ctx_file = Path(ctx.tmp) / "context.json"
    ctx_file.write_text(json.dumps(asdict(ctx)))
    out = subprocess.run(
        [sys.executable, __file__, "--child", stage, "--context", str(ctx_file)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def child_main(stage: str, ctx_file: str) -> None:
    ctx = Context(**json.loads(Path(ctx_file).read_text()))
    t0 = time.perf_counter()
    STAGES[stage](ctx)
    seconds = time.perf_counter() - t0
    # Linux reports ru_maxrss in KiB
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"rss_mb": self_mb, "worker_rss_mb": workers_mb, "seconds": seconds}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[5000, 50000])
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--source-size", type=int, nargs=2, default=[80, 60], metavar=("W", "H"))
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--storage-size", type=int, default=None)
    p.add_argument("--format", choices=["png", "jpeg", "webp"], default="jpeg")
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--workdir", default=None, help="keep the data here (default: a temp dir, removed)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--context", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child_main(args.child, args.context)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_memory-"))
    rows = []
    try:
        for n in args.sizes:
            data = work / f"n{n}" / "data"
            if not (data / "classes.csv").exists():
                t0 = time.perf_counter()
                build_imagefolder(data, n, args.classes, tuple(args.source_size))
                print(f"built {n} images in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            for stage in args.stages:
                tmp = work / f"n{n}" / f"tmp-{stage}"
                tmp.mkdir(parents=True, exist_ok=True)
                ctx = Context(str(data), str(work / f"n{n}" / "prepared"), str(tmp), args.workers,
                              study_config(data, args))
                r = run_child(stage, ctx)
                rows.append({"stage": stage, "n": n, **r})
                print(f"{stage:10s} n={n:>8d}  peak RSS {r['rss_mb']:7.1f} MB  "
                      f"workers {r['worker_rss_mb']:7.1f} MB  {r['seconds']:7.1f} s", file=sys.stderr)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'stage':10s} {'N':>8s} {'peak RSS MB':>12s} {'worker MB':>10s} {'seconds':>8s} {'img/s':>8s}")
    for r in rows:
        print(f"{r['stage']:10s} {r['n']:8d} {r['rss_mb']:12.1f} {r['worker_rss_mb']:10.1f} "
              f"{r['seconds']:8.1f} {r['n'] / r['seconds']:8.0f}")
    lo, hi = min(args.sizes), max(args.sizes)
    for stage in args.stages:
        a = next(r for r in rows if r["stage"] == stage and r["n"] == lo)
        b = next(r for r in rows if r["stage"] == stage and r["n"] == hi)
        print(f"{stage}: peak RSS at N={hi} / N={lo} = {b['rss_mb'] / a['rss_mb']:.3f} "
              f"(workers {b['worker_rss_mb'] / max(a['worker_rss_mb'], 1e-9):.3f})")


if __name__ == "__main__":
    main()
