"""Small data for training tests: shards of given images (`write_digit_shards`) and random images over
`N_CLASSES` classes (`make_data`); the paths a test hands a CLIP run (`clip_run_paths`) and a prepared
dataset (`prepared_paths`), which in the workflow are Plan's."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from synthscale.data.shards import shard_name, write_shard

N_CLASSES = 10


def clip_run_paths(folder) -> dict[str, Path]:
    """train_clip's other paths for a test's run in `folder`: config, work folder and log (beside its weights)."""
    folder = Path(folder)
    return {"config_path": folder / "model_config.json", "work_dir": folder / "work", "log_path": folder / "train.log"}


def prepared_paths(out_dir) -> dict[str, Path]:
    """Where a test's prepared dataset puts its manifest and class table: `splits.json` and `classes.csv`
    in `out_dir` (the workflow's are Plan.manifest and Plan.classes)."""
    return {"manifest_path": Path(out_dir) / "splits.json", "classes_path": Path(out_dir) / "classes.csv"}


def write_digit_shards(folder, images, labels, shard_size, start=0):
    """Shards whose keys are the images' global positions (as prepare_data and generation write)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    paths = []
    for k, s in enumerate(range(0, len(labels), shard_size)):
        recs = [{"key": f"{start + i:08d}", "label": int(labels[i])} for i in range(s, min(s + shard_size, len(labels)))]
        path = folder / shard_name(k)
        write_shard(path, list(images[s : s + shard_size]), recs)
        paths.append(str(path))
    return paths


def make_data(n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` random 16x16 RGB images, labelled 0, 1, ... N_CLASSES - 1 in turn."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 16, 16, 3), dtype=np.uint8)
    labels = np.arange(n) % N_CLASSES
    return images, labels
