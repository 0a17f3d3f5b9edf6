"""A working directory where the paper presets' data paths exist (empty ImageNet-like folders, class
tables, a stand-in Inception weights file), so `snakemake -n` can plan them on a machine without ImageNet."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from . import REPO

PRESETS = ["fan-imagenet", "imagenet100-sd", "azizi-imagenet", "fan-clip", "hub-grid"]  # hub-grid: the scale check


def preset_workdir(root: Path, n_classes: int = 1000) -> Path:
    """Folders and files every preset names, relative to `root`; returns root."""
    ids = [f"n{k:08d}" for k in range(n_classes)]
    for d in ("data/imagenet/train", "data/imagenet/val", "data/imagenet-r", "data/imagenet-sketch", "data/weights"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for cid in ids[:200]:
        (root / "data/imagenet-r" / cid).mkdir(exist_ok=True)
    # names, glosses and hypernyms given, so planning needs no WordNet (ImageNet's table may give ids only)
    table = pd.DataFrame({"id": ids, "name": [f"class {k}" for k in range(n_classes)],
                          "description": ["a thing"] * n_classes, "hypernym": ["object"] * n_classes})
    table.to_csv(root / "data/imagenet/classes.csv", index=False)
    (root / "data/imagenet100").mkdir(exist_ok=True)
    table.iloc[:100].to_csv(root / "data/imagenet100/classes.csv", index=False)
    (root / "data/weights/pt_inception-2015-12-05-6726825d.pth").write_bytes(b"")
    shutil.copy(REPO / "config.yaml", root / "config.yaml")
    return root


def dry_run_cmd(root: Path, preset: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(root), "-n",
            "--quiet", "rules", "--configfile", str(REPO / "configs" / f"{preset}.yaml")]
