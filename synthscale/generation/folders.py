"""A generator folder's own files: the workflow's record `synthscale.json`, and diffusers' LoRA weights
file (the one spelling of each, for the loader, the tiny generator's training and fine-tuning).

A folder is either a diffusers pipeline folder (its record: provenance only) or a LoRA folder, whose
record holds `{"base": <Hub id or pipeline folder>, "lora": true}` beside `LORA_WEIGHTS` (written by
the pipeline's `save_lora_weights`). No torch here: pipelines.py imports tinygen.py, which writes a
record too, so the spelling lives below both.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

META = "synthscale.json"
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"


def read_meta(folder: str | os.PathLike) -> dict[str, Any] | None:
    """A generator folder's record, or None when it has none (a folder made elsewhere)."""
    path = Path(folder) / META
    return json.loads(path.read_text()) if path.exists() else None


def write_meta(folder: str | os.PathLike, record: dict[str, Any], sort_keys: bool = False) -> None:
    """`record` as the folder's synthscale.json. Two layouts, each kept byte for byte for the folders
    that studies already hold: the tiny generator's record in its keys' order without a final newline,
    and a fine-tuned generator's (`sort_keys`) with sorted keys and a final newline."""
    text = json.dumps(record, indent=1, sort_keys=sort_keys) + ("\n" if sort_keys else "")
    (Path(folder) / META).write_text(text)


def lora_base(folder: str | os.PathLike) -> str | None:
    """The base pipeline of a LoRA folder (resolved beside the folder if relative), else None: the
    one check of whether a folder holds LoRA weights."""
    info = read_meta(folder)
    if not info or not info.get("lora"):
        return None
    if not info.get("base"):
        raise ValueError(f"{Path(folder) / META} says the folder holds LoRA weights but names no base pipeline")
    base = str(info["base"])
    beside = Path(folder) / base
    return str(beside) if not Path(base).is_absolute() and beside.exists() else base
