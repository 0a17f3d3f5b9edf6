"""Rule prepare_data's dataset: the study's real dataset, sklearn's digits (synthscale.data.real) or an
ImageFolder tree (synthscale.data.imagefolder), prepared as the checked `dataset` section says.

Above both modules, since the ImageFolder path builds on real's shared pieces (imagefolder imports real).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from synthscale.data.imagefolder import prepare_imagefolder
from synthscale.data.real import prepare_digits


def prepare_dataset(
    ds: dict[str, Any],
    eval_sets: Sequence[dict[str, Any]],
    seed: int,
    manifest_path: str | os.PathLike,
    classes_path: str | os.PathLike,
    workers: int = 1,
) -> dict[str, Any]:
    """Prepare the study's real dataset (the checked `dataset` section): sklearn's digits
    (`prepare_digits`) or an ImageFolder tree (synthscale.data.imagefolder, over `workers` processes).
    The split shards go in the manifest's folder, since the manifest lists them relative to it; the
    class table goes to `classes_path`. Returns the manifest."""
    out_dir = Path(manifest_path).parent
    paths = dict(manifest_path=manifest_path, classes_path=classes_path)
    if ds["kind"] == "digits":
        enc = ds["encoding"]
        return prepare_digits(
            out_dir, ds["image_size"], ds["test_fraction"], eval_sets, ds["shard_size"], seed,
            fmt=enc["format"], quality=enc["quality"], **paths,
        )
    return prepare_imagefolder(out_dir, ds, eval_sets, ds["shard_size"], seed, workers=workers, **paths)
