"""A CLIP training rank on CPU, for tests/unit/test_clip_ddp.py: torchrun runs
`python -m helpers.clip_cpu_rank -- --synthscale-config-dir DIR ARGS` (the test points
synthscale.clip.train's ENTRY here, so the command is `launch_command`'s own) with tests/ on PYTHONPATH.

open_clip_train wraps its model in DistributedDataParallel with `device_ids=[device]` whatever the device,
which DDP refuses for a CPU module (device_ids is for one-GPU modules only); a GPU rank is unaffected.
This rank drops `device_ids` when they name the CPU, and otherwise runs synthscale.clip.train's `main`
as it is: the real open_clip_train, process group (gloo), data loading and checkpointing."""
from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    import torch

    import synthscale.clip.train as clip_train

    ddp = torch.nn.parallel.DistributedDataParallel

    class CpuDDP(ddp):
        def __init__(self, module, device_ids=None, *args, **kwargs):
            if device_ids and all(torch.device(d).type == "cpu" for d in device_ids):
                device_ids = None
            super().__init__(module, device_ids, *args, **kwargs)

    torch.nn.parallel.DistributedDataParallel = CpuDDP
    try:
        clip_train.main(argv)
    finally:
        torch.nn.parallel.DistributedDataParallel = ddp
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
