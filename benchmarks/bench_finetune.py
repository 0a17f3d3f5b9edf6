"""How many fine-tuning steps make a visible difference, and what they cost (the default study's choice).

Trains the default study's tiny generator on thickened digits (its `train_shift`: the off-the-shelf
base), fine-tunes it on the real train split for each step count, samples class-name prompts and
prints the judge's accuracy, the mean ink (thick strokes show as more ink) and the CPU seconds.
Needs a prepared study folder (its data and classname prompts), e.g. after
`snakemake --cores 2 results/prompts/digits/classname.jsonl`:

    python benchmarks/bench_finetune.py --results results --steps 100 200 400
"""

from __future__ import annotations

import argparse
import resource
import tempfile
from pathlib import Path

import numpy as np
import torch

from synthscale.study.config import load_config
from synthscale.study.plan import Plan
from synthscale.data.real import apply_shift, split_shards
from synthscale.generation.finetune import finetune_generator
from synthscale.generation.generate import sample
from synthscale.generation.pipelines import set_sampler
from synthscale.generation.tinygen import PixelTextToImagePipeline, caption_sampler, train_tiny_generator
from synthscale.prompts.strategies import read_prompts
from synthscale.data.shards import load_arrays
from synthscale.classifier.train import load_classifier, predict, train_classifier


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="config.yaml")
    ap.add_argument("--results", default="results")
    ap.add_argument("--steps", type=int, nargs="+", default=[100, 200, 400])
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0])
    ap.add_argument("--seed", type=int, default=None,
                    help="the generators' training seed (default: the config's); the judge keeps the config's")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.config)
    spec = next(g for g in cfg["generators"] if g["kind"] == "trained")
    ft_spec = next(g for g in cfg["generators"] if g["kind"] == "finetuned")
    plan = Plan({**cfg, "results": args.results})  # the study folder's paths, as the workflow spells them
    manifest = plan.manifest
    classname = read_prompts(plan.prompts("classname"))
    base_captions = [read_prompts(plan.prompts(s)) for s in spec["caption_strategies"]]
    images, labels, _ = load_arrays(split_shards(manifest, "train"), mode="L")
    work = Path(tempfile.mkdtemp(prefix="bench-finetune-"))

    t = cpu()
    shifted = apply_shift(images, spec.get("train_shift", {"kind": "none"}), cfg["seed"])
    gen_seed = cfg["seed"] if args.seed is None else args.seed
    train_tiny_generator(shifted, caption_sampler(base_captions, labels), spec["arch"], spec["recipe"],
                         gen_seed, work / "base", progress=False)
    print(f"base ({spec.get('train_shift')}): {cpu() - t:.1f} CPU s", flush=True)
    t = cpu()
    train_classifier(images, labels, len(classname), dict(cfg["train"]), cfg["seed"], work / "judge.safetensors",
                     work / "judge.csv", progress=False)
    judge, _ = load_classifier(work / "judge.safetensors")
    print(f"judge: {cpu() - t:.1f} CPU s", flush=True)
    test, _, _ = load_arrays(split_shards(manifest, "test"), mode="L")
    print(f"real test mean ink {test.mean():.1f}")

    folders = {"base": work / "base"}
    for steps in args.steps:
        t = cpu()
        recipe = dict(ft_spec["finetune"], steps=steps)
        captions = [read_prompts(plan.prompts(s)) for s in recipe["caption_strategies"]]
        log = finetune_generator(str(work / "base"), split_shards(manifest, "train"), captions, recipe,
                                 gen_seed, work / f"ft{steps}", progress=False)
        print(f"fine-tune {steps} steps: {cpu() - t:.1f} CPU s, loss {log['loss'].iloc[:20].mean():.4f} -> "
              f"{log['loss'].iloc[-20:].mean():.4f}", flush=True)
        folders[f"ft{steps}"] = work / f"ft{steps}"

    names = [p[0] for p in classname]
    cls = np.arange(args.images) % len(names)
    for name, folder in folders.items():
        pipe = PixelTextToImagePipeline.from_pretrained(folder, use_safetensors=True)
        set_sampler(pipe, cfg["generation"]["sampler"])
        for g in args.guidance:
            out = np.concatenate([
                sample(pipe, [names[c] for c in cls[i:i + 100]], list(range(i, min(i + 100, len(cls)))), g,
                       cfg["generation"]["steps"])
                for i in range(0, len(cls), 100)
            ])
            acc = (predict(judge, out)[0].argmax(1) == cls).mean()
            print(f"{name:>8} guidance {g:g}: judge accuracy {acc:.3f}, mean ink {out.mean():.1f}", flush=True)


if __name__ == "__main__":
    main()
