"""A generator fine-tuning rank that records what it does, for tests/unit/test_finetune_ddp.py: torchrun
runs `python -m helpers.ft_rank SPEC` (synthscale.distributed.run_torchrun) in place of
`python -m synthscale.generation.finetune SPEC`, with tests/ on PYTHONPATH, and each rank writes
`rank<R>.json` into $FT_RANK_RECORDS:
- `batches`: per batch, a digest of each image the rank trained on (skipped batches included);
- `noise`: per step, a digest of the diffusion noise and of the timesteps the rank drew;
- `weights`: after every optimizer step, a digest of the trained weights;
- `reduced`: the device and dtype of every tensor the loop all-reduces itself (DDP's gradient buckets
  go through its C++ reducer, not torch.distributed.all_reduce);
- `writes`: every path the rank created, wrote or renamed onto (os.open for writing, os.mkdir,
  os.replace, os.rename, open() for writing), so a test sees which rank wrote the outputs.
Nothing recorded changes what the rank computes."""
from __future__ import annotations

import builtins
import hashlib
import json
import os
import sys


def digest(t) -> str:
    return hashlib.sha1(t.detach().contiguous().cpu().numpy().tobytes()).hexdigest()[:16]


def main(spec_path: str) -> int:
    from torch.optim.optimizer import register_optimizer_step_post_hook

    import synthscale.generation.finetune as ft
    from synthscale.distributed import rank_main

    import torch.distributed as dist

    rec: dict[str, list] = {"batches": [], "noise": [], "weights": [], "reduced": [], "writes": []}
    all_reduce = dist.all_reduce

    def recorded_all_reduce(t, *args, **kwargs):
        rec["reduced"].append([str(t.device), str(t.dtype)])
        return all_reduce(t, *args, **kwargs)

    loader, step_noise = ft.epoch_loader, ft.step_noise

    def recorded_noise(*args, **kwargs):
        eps, noise, t = step_noise(*args, **kwargs)
        rec["noise"].append([digest(noise), digest(t)])
        return eps, noise, t

    def recorded_loader(*args, **kwargs):
        for x, texts in loader(*args, **kwargs):
            rec["batches"].append([digest(img) for img in x])
            yield x, texts

    def after_step(opt, _args, _kwargs):
        params = [p for g in opt.param_groups for p in g["params"]]
        rec["weights"].append(hashlib.sha1(b"".join(digest(p).encode() for p in params)).hexdigest()[:16])

    originals = {"open": os.open, "mkdir": os.mkdir, "replace": os.replace, "rename": os.rename}
    builtin_open = builtins.open
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def os_open(path, flags, *a, **k):
        if flags & write_flags:
            rec["writes"].append(str(path))
        return originals["open"](path, flags, *a, **k)

    def mkdir(path, *a, **k):
        rec["writes"].append(str(path))
        return originals["mkdir"](path, *a, **k)

    def replace(src, dst, *a, **k):
        rec["writes"].append(str(dst))
        return originals["replace"](src, dst, *a, **k)

    def rename(src, dst, *a, **k):
        rec["writes"].append(str(dst))
        return originals["rename"](src, dst, *a, **k)

    def open_(file, mode="r", *a, **k):
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+"):
            rec["writes"].append(str(file))
        return builtin_open(file, mode, *a, **k)

    ft.epoch_loader, ft.step_noise, dist.all_reduce = recorded_loader, recorded_noise, recorded_all_reduce
    hook = register_optimizer_step_post_hook(after_step)
    os.open, os.mkdir, os.replace, os.rename, builtins.open = os_open, mkdir, replace, rename, open_
    try:
        code = rank_main(spec_path, ft.finetune_generator)
    finally:
        os.open, os.mkdir, os.replace, os.rename = (originals[k] for k in ("open", "mkdir", "replace", "rename"))
        builtins.open, dist.all_reduce = builtin_open, all_reduce
        hook.remove()
    with open(os.path.join(os.environ["FT_RANK_RECORDS"], f"rank{os.environ.get('RANK', '0')}.json"), "w") as f:
        json.dump(rec, f)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
