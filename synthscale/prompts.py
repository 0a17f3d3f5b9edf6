"""Prompt strategies (Fan et al. 2023, Sec. 3): text prompts for each class.

A strategy maps one class row (name, description, hypernym) to a list of prompts. New strategies
(Word2Sen, IN-Caption) register a function in STRATEGIES; nothing else changes.
"""

from __future__ import annotations

import json
import os
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


def templates(row: Row) -> list[str]:
    """CLIP's 80 ImageNet templates, as open_clip ships them."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return [t(row["name"]) for t in OPENAI_IMAGENET_TEMPLATES]


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


def read_prompts(path: str | os.PathLike) -> list[list[str]]:
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r["prompts"] for r in sorted(rows, key=lambda r: r["index"])]
