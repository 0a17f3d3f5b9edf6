"""A torchrun rank whose rank 0 writes its final output slowly, for the tests that every rank waits for
that write (tests/unit/test_ddp.py, tests/unit/test_finetune_ddp.py): torchrun runs
`python -m helpers.slow_write_rank SPEC` with tests/ on PYTHONPATH and $SLOW_WRITE naming the loop
(`classifier`: synthscale.classifier.train, whose rank 0 writes `model_path`; `classifier-stop`: the
checkpoint its rank 0 writes on a stop, at `checkpoint_path`; `finetune`:
synthscale.generation.finetune, whose rank 0 writes `out_dir`). Rank 0 sleeps SLOW_WRITE_S before it
writes; once the training function returns, each rank writes `rank<R>.json` into $SLOW_WRITE_RECORDS:
whether the output existed then. A rank that returned without waiting sees no output."""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

SLOW_WRITE_S = 3.0


def main(spec_path: str) -> int:
    from synthscale.distributed import rank_main

    spec = json.loads(Path(spec_path).read_text())
    seen: dict = {}
    if os.environ["SLOW_WRITE"] == "classifier":
        import synthscale.classifier.train as mod

        save, out = mod.save_classifier, spec["model_path"]

        def slow_save(*args, **kwargs):
            time.sleep(SLOW_WRITE_S)
            return save(*args, **kwargs)

        mod.save_classifier, train = slow_save, mod.train_model
    elif os.environ["SLOW_WRITE"] == "classifier-stop":  # the checkpoint a stop writes, then Preempted
        import synthscale.classifier.train as mod

        save_ckpt, out = mod.save_checkpoint, spec["checkpoint_path"]

        def slow_checkpoint(*args, **kwargs):
            time.sleep(SLOW_WRITE_S)
            return save_ckpt(*args, **kwargs)

        mod.save_checkpoint, train = slow_checkpoint, mod.train_model
    else:
        import synthscale.generation.finetune as mod

        atomic_dir, out = mod.atomic_dir, spec["out_dir"]

        @contextlib.contextmanager
        def slow_atomic_dir(*args, **kwargs):
            time.sleep(SLOW_WRITE_S)
            with atomic_dir(*args, **kwargs) as tmp:
                yield tmp

        mod.atomic_dir, train = slow_atomic_dir, mod.finetune_generator

    def recorded(**kwargs):
        try:
            return train(**kwargs)
        finally:  # returned, or raised (a stop raises Preempted once its checkpoint is written)
            seen["output_exists"] = Path(out).exists()

    code = rank_main(spec_path, recorded)
    records = Path(os.environ["SLOW_WRITE_RECORDS"])
    (records / f"rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(seen))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
