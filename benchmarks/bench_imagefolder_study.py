"""A whole ImageFolder study through Snakemake at two sizes: every rule's peak RSS, as a new user runs it.

Builds an ImageFolder of small JPEGs (bench_memory.build_imagefolder: `--classes` colour classes,
`--source-size` pixels) for each size, writes a study config over configs/test.yaml that points
`dataset` at it (kind imagefolder, JPEG shards at `--image-size`; the tiny trained generator, one
guidance value, one strategy; training, evaluation and quality as the test study runs them, plus
the real baseline on the whole split), runs `snakemake --cores 2`, then prints each rule's largest
`max_rss` from Snakemake's benchmark files (results/benchmarks/**.tsv) and the ratio between the sizes.

    python benchmarks/bench_imagefolder_study.py --sizes 5000 50000
    python benchmarks/bench_imagefolder_study.py --sizes 2000 5000 --workdir /tmp/study  # keep the runs

Snakemake's max_rss sums the RSS of the job's process tree, so loader workers count with the pages
they share with their parent.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_memory import build_imagefolder  # noqa: E402

from synthscale.study.config import check_config  # noqa: E402
from synthscale.study.plan import Plan, benchmark_parts  # noqa: E402


def study_config(data: Path, args: argparse.Namespace) -> dict:
    """Overrides laid over configs/test.yaml: the ImageFolder as the dataset, the smallest grid."""
    return {
        "study": "imagefolder-bench",
        "results": "results",
        "warm_start": False,  # each job in its own process: Snakemake's max_rss is then the job's
        "dataset": {
            "name": "bench", "kind": "imagefolder", "image_size": args.image_size, "channels": 3,
            "train_dir": str(data / "train"), "test_dir": str(data / "val"),
            "classes_csv": str(data / "classes.csv"), "shard_size": args.shard_size,
            "encoding": {"format": "jpeg", "quality": 90},
        },
        "eval_sets": [{"name": "test"}],
        "guidance": [2.0],
        "strategies": ["classname"],
        "n_images": args.n_synthetic,
        "generation": {"sampler": "ddim", "steps": 4, "batch_size": 50, "shard_size": 100, "seed": 7},
        "train": {"epochs": 1, "min_steps": 20, "batch_size": 128, "real_baseline": True, "real_full": True,
                  "num_workers": args.workers},
        "quality": {"batch_size": 256},
        "clip": {"enabled": False},
        "mix": {"real_n": [], "sets": "all", "full_real_n": None},
        "resources": {"default": {"threads": 1, "mem_mb": 2000, "runtime": 60},
                      "prepare": {"threads": 2, "mem_mb": 2000, "runtime": 60}},
    }


def study_plan(work: Path, overrides: dict) -> Plan:
    """The study's Plan as Snakemake builds it in `work`: config.yaml, configs/test.yaml, the overrides."""
    from snakemake.utils import update_config

    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    for layer in (yaml.safe_load((ROOT / "configs" / "test.yaml").read_text()), overrides):
        update_config(cfg, layer)
    return Plan(check_config(cfg, work))


def max_rss(benchmarks: Path) -> dict[str, float]:
    """Each rule's largest max_rss (MB) over its jobs' Snakemake benchmark files under `benchmarks`."""
    out: dict[str, float] = defaultdict(float)
    for tsv in benchmarks.rglob("*.tsv"):
        rule = benchmark_parts(tsv, benchmarks)[0]
        with tsv.open() as f:
            for row in csv.DictReader(f, delimiter="\t"):
                try:
                    out[rule] = max(out[rule], float(row["max_rss"]))
                except (KeyError, ValueError):
                    continue
    return dict(out)


def run_study(work: Path, n: int, args: argparse.Namespace) -> tuple[dict[str, float], float]:
    data = work / "data"
    if not (data / "classes.csv").exists():
        t0 = time.perf_counter()
        build_imagefolder(data, n, args.classes, tuple(args.source_size))
        print(f"built {n} images in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    shutil.copy(ROOT / "config.yaml", work / "config.yaml")
    overrides = study_config(data, args)
    (work / "study.yaml").write_text(yaml.safe_dump(overrides))
    plan = study_plan(work, overrides)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(work), "--cores", "2",
           "--configfile", str(ROOT / "configs" / "test.yaml"), str(work / "study.yaml")]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    (work / "snakemake.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        sys.exit(f"snakemake failed at N={n} (log: {work / 'snakemake.log'}):\n{proc.stderr[-3000:]}")
    print(f"study at N={n}: {seconds:.0f} s", file=sys.stderr)
    return max_rss(work / plan.benchmarks_dir), seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[5000, 50000])
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--source-size", type=int, nargs=2, default=[48, 40], metavar=("W", "H"))
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--n-synthetic", type=int, nargs="+", default=[100, 200],
                   help="the grid's N (two at least: the scaling fit and findings need two)")
    p.add_argument("--workers", type=int, default=0, help="train.num_workers")
    p.add_argument("--workdir", default=None, help="keep the runs here (default: a temp dir, removed)")
    args = p.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_study-"))
    rss: dict[int, dict[str, float]] = {}
    secs: dict[int, float] = {}
    try:
        for n in args.sizes:
            rss[n], secs[n] = run_study(work / f"n{n}", n, args)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    lo, hi = min(args.sizes), max(args.sizes)
    rules = sorted(set().union(*rss.values()))
    print(f"\n{'rule':24s}" + "".join(f" {'N=' + str(n):>10s}" for n in args.sizes) + f" {'ratio':>7s}   (max_rss MB)")
    for rule in rules:
        vals = [rss[n].get(rule, float("nan")) for n in args.sizes]
        ratio = rss[hi].get(rule, float("nan")) / rss[lo].get(rule, float("nan"))
        print(f"{rule:24s}" + "".join(f" {v:10.1f}" for v in vals) + f" {ratio:7.3f}")
    worst = max(max(r.values()) for r in rss.values())
    print(f"largest job peak RSS: {worst:.0f} MB; wall: " + ", ".join(f"N={n} {secs[n]:.0f} s" for n in args.sizes))


if __name__ == "__main__":
    main()
