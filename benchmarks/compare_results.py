"""Two results folders of the same study, compared file by file: are its tables, model weights and
shards byte-identical? The proof a behaviour-preserving change (a refactor, a move) owes.

    python benchmarks/compare_results.py results-before results-after

Compared byte for byte: every file under both folders (tables, findings pages, plots, model weights,
generator folders, shards, prompts), with the folder's own location in text files read as `{results}`
(a fine-tuned generator records its base's path), except what records time rather than results:
- `logs/` and `benchmarks/` (job logs and Snakemake's timing files), `*.log`;
- tables whose column names say they hold time (`seconds`, `wall_s`, `cpu_s`, ...): compared with
  those columns left out, the rest byte for byte as text;
- the cost arm (`cost.csv`, `cost_findings.html`, and plots named `cost*`), which is computed from
  the timing files and so differs between any two runs.
Prints each difference (a file in one folder only, or different content) and a count per kind;
exit status 1 when anything differs, 0 when all compared files are identical.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import sys
from collections import Counter
from pathlib import Path
from typing import Iterable

SKIPPED_DIRS = ("logs", "benchmarks")
SKIPPED_SUFFIXES = (".log", ".snakemake_timestamp")
# the cost arm reads the benchmark files: its figures are timings
TIMING_FILES = ("cost.csv", "cost_findings.html")
TIMING_PREFIXES = ("cost",)
TIMING_COLUMNS = frozenset({"seconds", "wall_s", "cpu_s", "time_s", "elapsed_s"})


def result_files(root: Path) -> dict[str, Path]:
    """Relative path -> file, for every file of a results folder that holds results (not time)."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(root)
        if rel.parts[0] in SKIPPED_DIRS or path.name.endswith(SKIPPED_SUFFIXES):
            continue
        if path.name in TIMING_FILES or (
            rel.parts[0] == "plots" and path.name.startswith(TIMING_PREFIXES)
        ):
            continue
        found[rel.as_posix()] = path
    return found


def _csv_without_timing(data: bytes) -> bytes:
    rows = list(csv.reader(io.StringIO(data.decode())))
    if not rows:
        return data
    keep = [i for i, name in enumerate(rows[0]) if name not in TIMING_COLUMNS]
    if len(keep) == len(rows[0]):
        return data
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in rows:
        writer.writerow([row[i] for i in keep if i < len(row)])
    return out.getvalue().encode()


TEXT_SUFFIXES = (".csv", ".json", ".jsonl", ".html", ".txt", ".yaml")


def content_digest(path: Path, root: Path | None = None) -> str:
    """SHA-256 of a file's result content: in text files, the results folder's own location (a generator
    folder records its base's path) reads `{results}`; timing columns of a CSV are left out; every
    other byte counts."""
    data = path.read_bytes()
    if root is not None and path.suffix in TEXT_SUFFIXES:
        for spelling in sorted({str(root.resolve()), str(root)}, key=len, reverse=True):
            data = data.replace(spelling.encode(), b"{results}")
    if path.suffix == ".csv":
        data = _csv_without_timing(data)
    return hashlib.sha256(data).hexdigest()


def compare(a: Path, b: Path) -> dict[str, list[str]]:
    """Differences between two results folders: 'only_a', 'only_b', 'differ' (relative paths), and
    'same' (the files found identical)."""
    fa, fb = result_files(a), result_files(b)
    report: dict[str, list[str]] = {
        "only_a": sorted(set(fa) - set(fb)),
        "only_b": sorted(set(fb) - set(fa)),
        "differ": [],
        "same": [],
    }
    for rel in sorted(set(fa) & set(fb)):
        same = content_digest(fa[rel], a) == content_digest(fb[rel], b)
        report["same" if same else "differ"].append(rel)
    return report


def _kind(rel: str) -> str:
    """A file's kind for the counts: its suffix."""
    name = rel.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1] if "." in name else "(none)"


def _counts(paths: Iterable[str]) -> str:
    kinds = Counter(_kind(rel) for rel in paths)
    return ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "none"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="results folder (before)")
    parser.add_argument("b", type=Path, help="results folder (after)")
    args = parser.parse_args(argv)
    for folder in (args.a, args.b):
        if not folder.is_dir():
            parser.error(f"not a folder: {folder}")
    report = compare(args.a, args.b)
    for label, key in (("only in " + str(args.a), "only_a"), ("only in " + str(args.b), "only_b"),
                       ("different content", "differ")):
        for rel in report[key]:
            print(f"{label}: {rel}")
    print(f"identical: {len(report['same'])} files ({_counts(report['same'])})")
    bad = len(report["only_a"]) + len(report["only_b"]) + len(report["differ"])
    print(f"different or missing: {bad} files" + (f" ({_counts(report['differ'])} differ)" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
