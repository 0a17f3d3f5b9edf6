"""Prompt strategies (Fan et al. 2023, Sec. 3): text prompts for each class.

A rule-based strategy maps one class row (name, description, hypernym) to a list of prompts and
lives in STRATEGIES. Model-made strategies (Word2Sen, IN-Caption, LLM descriptions) are configured
entries of `prompt_models` whose pools a job writes (synthscale.prompts.models); both end in the same
JSONL file, which generation reads through `read_prompts`.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import os
import sys
from typing import Any, Callable

import pandas as pd

from synthscale.io import atomic_path

Row = dict[str, Any]


def classname(row: Row) -> list[str]:
    return [row["name"]]


def description(row: Row) -> list[str]:
    desc = str(row.get("description") or "").strip()
    return [f"{row['name']}, {desc}" if desc else row["name"]]


def hypernym(row: Row) -> list[str]:
    hyper = str(row.get("hypernym") or "").strip()
    return [f"{row['name']}, {hyper}" if hyper else row["name"]]


@functools.lru_cache(maxsize=1)
def openai_imagenet_templates() -> tuple[Callable[[str], str], ...]:
    """CLIP's 80 ImageNet templates from open_clip's own `zero_shot_metadata.py`, a module of plain
    data. Run as a file, not imported: importing it runs open_clip's `__init__`, which imports torch
    (seconds), and the prompts job that needs the templates is one of the first that everything
    waits for. Where the file cannot be run alone (another install layout, an import added to it),
    the module is imported as usual."""
    loaded = sys.modules.get("open_clip.zero_shot_metadata")
    if loaded is None:
        try:
            from synthscale.data.wordnet import package_dir

            path = package_dir("open_clip") / "zero_shot_metadata.py"
            spec = importlib.util.spec_from_file_location("_open_clip_zero_shot_metadata", path)
            loaded = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(loaded)
            loaded.OPENAI_IMAGENET_TEMPLATES  # noqa: B018 - the file must hold them
        except Exception:  # noqa: BLE001 - any failure of the shortcut: the plain import decides
            loaded = importlib.import_module("open_clip.zero_shot_metadata")
    return tuple(loaded.OPENAI_IMAGENET_TEMPLATES)


def templates(row: Row) -> list[str]:
    """CLIP's 80 ImageNet templates, as open_clip ships them."""
    return [t(row["name"]) for t in openai_imagenet_templates()]


STRATEGIES: dict[str, Callable[[Row], list[str]]] = {
    "classname": classname,
    "description": description,
    "hypernym": hypernym,
    "templates": templates,
}


def class_prompts(classes: pd.DataFrame, strategy: str) -> list[list[str]]:
    """Prompts for every class, in class-index order."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown prompt strategy {strategy!r}; choose from {sorted(STRATEGIES)}")
    fn = STRATEGIES[strategy]
    return [fn(row) for row in classes.sort_values("index").to_dict("records")]


def write_prompts(path: str | os.PathLike, classes: pd.DataFrame, strategy: str) -> None:
    """One JSON line per class: index, id, name and its prompts."""
    prompts = class_prompts(classes, strategy)
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        for row, ps in zip(classes.sort_values("index").to_dict("records"), prompts):
            rec = {"index": int(row["index"]), "id": str(row["id"]), "name": row["name"]}
            f.write(json.dumps({**rec, "strategy": strategy, "prompts": ps}) + "\n")


def write_strategy_prompts(path: str | os.PathLike, classes_csv: str | os.PathLike, strategy: str) -> None:
    """The rule prompts: `write_prompts` of a rule-based strategy for the prepared class table."""
    from synthscale.data.real import read_classes

    write_prompts(path, read_classes(classes_csv), strategy)


def read_prompts(path: str | os.PathLike) -> list[list[str]]:
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r["prompts"] for r in sorted(rows, key=lambda r: r["index"])]
