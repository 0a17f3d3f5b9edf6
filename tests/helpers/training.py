"""Training runs compared bit for bit (preemption, DDP, mixes): a small recipe (`RECIPE`), the check
that two weight files are the same (`assert_same_weights`; `safetensors_parts` where the header's
metadata order may differ), `stub_cuda_rank` (a torchrun entry run as a CUDA rank with no GPU) and
`communicate_signalling`, which signals a running training process once its progress bar passes a step."""
from __future__ import annotations

import re
import subprocess
import threading
from pathlib import Path

import torch
from safetensors.torch import load_file

RECIPE = {
    "arch": "resnet18",
    "model_kwargs": {"channels": [16, 32, 64, 128]},
    "epochs": 2,
    "min_steps": 12,
    "batch_size": 16,
    "lr": 0.01,
    "weight_decay": 0.01,
    "label_smoothing": 0.1,
    "pad_crop": 2,
}


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"tensor {k} differs"
    assert a.read_bytes() == b.read_bytes()


def safetensors_parts(path: Path) -> tuple[dict, bytes]:
    """A safetensors file as (parsed header, tensor bytes): the header's metadata map is written in
    hash order (LoRA adapter metadata), so bytes may differ where the content does not."""
    import json
    import struct

    data = Path(path).read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def stub_cuda_rank(monkeypatch, module, train: str) -> dict:
    """Make `module.main(spec)` run as torchrun rank 1 (LOCAL_RANK 1) of a 2-rank job with no GPU: the
    process group, CUDA and `module.<train>` stubbed. Returns what they were given: the backend and
    init_process_group's keywords, the GPU set ("cuda") and the device the training got."""
    seen: dict = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.distributed, "init_process_group",
                        lambda backend, **kw: seen.update(backend=backend, **kw))
    monkeypatch.setattr(torch.distributed, "destroy_process_group", lambda: None)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: seen.setdefault("cuda", d))
    monkeypatch.setattr(module, train, lambda **kw: seen.setdefault("device", kw["device"]))
    return seen


def communicate_signalling(
    proc: subprocess.Popen, after_step: int | None, send, bar: bytes = b""
) -> tuple[int, str, str, int | None]:
    """Wait for `proc`, reading its stderr as it comes; once its progress bar shows a step >= `after_step`
    (None: never), call `send()` once. `bar`: the start of that bar's description, where other bars
    come first (a pipeline's loading bars). Returns (exit code, stdout, stderr, the step the bar
    showed when `send` went, or None)."""
    err_chunks: list[bytes] = []
    sent: list[int] = []

    def read_stderr():
        buf = b""
        while chunk := proc.stderr.read1(4096):
            err_chunks.append(chunk)
            buf = (buf + chunk)[-4096:]
            if after_step is not None and not sent:
                steps = [int(m) for m in re.findall(re.escape(bar) + rb"[^\r\n]*?\| *(\d+)/\d+ ", buf)]
                if steps and max(steps) >= after_step:
                    sent.append(max(steps))
                    send()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    out_text = proc.stdout.read().decode()
    proc.wait(timeout=600)
    reader.join(timeout=10)
    return proc.returncode, out_text, b"".join(err_chunks).decode(errors="replace"), (sent or [None])[0]
