"""Training throughput: images/s streamed from shards through the DataLoader against the same model
fed from an in-memory tensor (decoded and normalised once: the loop's ceiling), and the seconds of
one default-study training job. Prints figures; asserts nothing.

    python benchmarks/bench_train.py [--config config.yaml] [--n 2000] [--steps 40] [--workers 0 1 2]

On a GPU (CUDA present) it also prints the figures on the GPU with the recipe's bf16/channels_last.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from synthscale.study.config import load_config
from synthscale.data.real import load_digits_images
from synthscale.data.loader import TrainLoader, build_train_loader
from synthscale.data.transforms import DeviceNormalize, uint8_batches
from synthscale.data.shards import shard_name, write_shard
from synthscale.classifier.train import create_classifier, make_optimizer, train_model


def write_shards(folder: Path, images: np.ndarray, labels: np.ndarray, size: int) -> list[str]:
    paths = []
    for k, s in enumerate(range(0, len(labels), size)):
        recs = [{"key": f"{i:08d}", "label": int(labels[i])} for i in range(s, min(s + size, len(labels)))]
        paths.append(str(folder / shard_name(k)))
        write_shard(paths[-1], list(images[s : s + size]), recs)
    return paths


def step_fn(model, opt, device: str, recipe: dict, finish: DeviceNormalize | None = None):
    """One training step; `finish` normalises uint8 batches on the device, as `train_model` does."""
    amp = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bool(recipe["amp"]))

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if finish is not None:
            x = finish(x)
        if recipe["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        with amp:
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def ceiling(recipe: dict, x_all: torch.Tensor, y_all: torch.Tensor, steps: int, device: str) -> float:
    """Images/s of the training step alone: batches indexed from a normalised in-memory tensor."""
    torch.manual_seed(0)
    model = create_classifier(recipe["arch"], 10, recipe["model_kwargs"]).to(device).train()
    if recipe["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    step = step_fn(model, make_optimizer(model, recipe), device, recipe)
    bs, n = recipe["batch_size"], len(y_all)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):  # warm-up
        idx = torch.randint(0, n, (bs,), generator=g)
        step(x_all[idx], y_all[idx])
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, n, (bs,), generator=g)
        step(x_all[idx], y_all[idx])
    sync(device)
    return steps * bs / (time.perf_counter() - t0)


def streamed(
    recipe: dict, shards: list[str], n: int, steps: int, device: str, workers: int, persistent: bool = True
) -> tuple[float, float]:
    """(images/s, seconds to the first batch) of the same step fed by the shard DataLoader: epoch after
    epoch, as training reads them, from one DataLoader whose workers persist (`TrainLoader`, what
    `train_model` uses) or, with `persistent=False`, a new DataLoader per epoch (the loop before)."""
    torch.manual_seed(0)
    model = create_classifier(recipe["arch"], 10, recipe["model_kwargs"]).to(device).train()
    if recipe["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    # uint8 batches where train_model uses them (auto: on CUDA), normalised on the device
    recipe = {**recipe, "uint8_batches": uint8_batches(recipe, device)}
    finish = DeviceNormalize(recipe, device) if recipe["uint8_batches"] else None
    step = step_fn(model, make_optimizer(model, recipe), device, recipe, finish)
    parts = [{"shards": shards, "limit": n}]
    loader = TrainLoader(parts, recipe, 0, num_workers=workers)

    def epochs():
        for epoch in range(1000):
            if persistent:
                yield from loader.epoch(epoch)
            else:
                yield from build_train_loader(parts, recipe, 0, epoch, num_workers=workers)

    t_start = time.perf_counter()
    it = epochs()
    x, y = next(it)
    first = time.perf_counter() - t_start
    for _ in range(2):  # warm-up, as the ceiling's
        step(x, y)
        x, y = next(it)
    sync(device)
    t0, seen = time.perf_counter(), 0
    for _ in range(steps):
        step(x, y)
        seen += len(y)
        x, y = next(it)
    sync(device)
    ips = seen / (time.perf_counter() - t0)
    loader.close()
    return ips, first


def job_seconds(recipe: dict, shards: list[str], n: int) -> float:
    """Wall seconds of one training job's `train_model` (imports excluded) at N images."""
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        train_model([{"shards": shards, "limit": n}], 10, recipe, 0, f"{d}/m.safetensors", f"{d}/log.csv", progress=False)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default="config.yaml")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=1500, help="images in the shards (digits, PNG)")
    ap.add_argument("--steps", type=int, default=120, help="timed steps (1,500 images: ~5 epochs, the first cold)")
    ap.add_argument("--repeat", type=int, default=3, help="alternating runs; the best of each is kept")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--job-n", type=int, nargs="*", default=[30, 300], help="N of the timed training jobs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    recipe = load_config(args.config)["train"]
    images, labels = load_digits_images(recipe["input_size"])
    images, labels = images[: args.n], labels[: args.n]
    # in the loader's memory format (NCHW contiguous): the permuted view's strides are channels_last,
    # whose CPU convolutions run ~10-20% faster on this model, which the earlier ceiling had for itself
    x_all = torch.as_tensor(np.repeat(images, 3, -1)).permute(0, 3, 1, 2).float().div(127.5).sub(1).contiguous()
    y_all = torch.as_tensor(labels)
    with tempfile.TemporaryDirectory() as d:
        shards = write_shards(Path(d), images, labels, 500)
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for device in devices:
            rec = dict(recipe)
            if device == "cuda":
                rec.update(amp=True, channels_last=True, pin_memory=True, batch_size=max(rec["batch_size"], 256))
            # best of `repeat` alternating runs: the machine is shared, and a slow moment should not
            # land on one side of the ratio only
            ceil = 0.0
            runs: dict[tuple[int, bool], tuple[float, float]] = {}
            for _ in range(args.repeat):
                ceil = max(ceil, ceiling(rec, x_all, y_all, args.steps, device))
                for w in args.workers:
                    for persistent in (False, True):
                        ips, first = streamed(rec, shards, args.n, args.steps, device, w, persistent)
                        best = runs.get((w, persistent), (0.0, 0.0))
                        runs[(w, persistent)] = (ips, first) if ips > best[0] else best
            print(f"[{device}] {rec['arch']} {rec['input_size']}px batch {rec['batch_size']}, "
                  f"{args.threads} training thread(s), {args.n} images, {args.steps} steps "
                  f"(best of {args.repeat}): in-memory ceiling {ceil:8.0f} img/s")
            for w in args.workers:
                for persistent in (False, True):
                    ips, first = runs[(w, persistent)]
                    how = "one DataLoader, workers kept " if persistent else "a new DataLoader per epoch"
                    print(f"[{device}]   shards -> {how}, {w} worker(s): {ips:8.0f} img/s "
                          f"= {ips / ceil:.2f} of the ceiling; first batch after {first:.2f} s")
        for n in args.job_n:
            print(f"[cpu] one default-study training job at N={n}: {job_seconds(recipe, shards, n):.1f} s "
                  f"(recipe workers={recipe['num_workers']}, imports excluded)")


if __name__ == "__main__":
    main()
