"""What every report module shares: matplotlib imported headless only by the jobs that draw, a
figure saved atomically as PNG, the findings HTML page, and the wording of numbers, synthetic sets and
training sources.

Each arm's own plots and findings are in its module: scaling_report (the classifier arm's scaling),
quality_report (the synthetic sets' quality), cost_report (compute cost), mix_report, clip_report,
filter_report and finetune_report. This module imports nothing of synthscale at module level but io
(study.sources inside one function), so every analysis stage uses it.

Rules the findings follow:
- every sentence states a number computed from the tables it is given;
- an explanation is written only as a hypothesis, and only when the numbers show the pattern it
  would explain;
- nothing is averaged silently: a mean says over what.
"""

from __future__ import annotations

import html
import os
from typing import Any, Sequence

import numpy as np
import pandas as pd

from synthscale.io import atomic_path


# --------------------------------------------------------------------------------------------------
# plotting and pages
# --------------------------------------------------------------------------------------------------


def plotting():
    """matplotlib (headless) and seaborn, imported only by the jobs that draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    return plt, sns


def save(fig, path: str | os.PathLike) -> None:
    """Write a figure as PNG atomically and close it."""
    plt, _ = plotting()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def write_html(
    path: str | os.PathLike,
    title: str,
    lines: Sequence[str],
    table: pd.DataFrame | None = None,
    source: str = "this run's result tables",
) -> None:
    """A findings page: one list item per sentence, optionally the table the numbers come from, and
    where they come from (`source`)."""
    e = html.escape
    body = "\n".join(f"<li>{e(s)}</li>" for s in lines)
    tab = table.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="") if table is not None else ""
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title></head>"
        f"<body><h2>{e(title)}</h2><ul>\n{body}\n</ul>{tab}"
        f"<p>Every number is computed from {e(source)}.</p></body></html>\n"
    )
    with atomic_path(path) as tmp:
        tmp.write_text(page)


# --------------------------------------------------------------------------------------------------
# wording
# --------------------------------------------------------------------------------------------------


def fmt_num(v: Any, p: int = 3) -> str:
    """`v` with `p` decimals, or "n/a" where it is missing or not finite."""
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{p}f}"


def set_label(row: pd.Series | dict, with_generator: bool = True) -> str:
    g = f"{row['strategy']}, g={float(row['guidance']):g}"
    return f"{row['generator']}: {g}" if with_generator else g


def source_label(source: str) -> str:
    """A training source for a plot axis: `real`, a set's label, with its filter and its real part."""
    from synthscale.study.sources import parse_source

    src = parse_source(source)
    if src.kind == "real":
        return "real"
    label = set_label({"generator": src.generator, "strategy": src.strategy, "guidance": src.guidance})
    if src.filter:
        label += f" [{src.filter}]"
    return f"{src.real_n} real + {label}" if src.kind == "mix" else label
