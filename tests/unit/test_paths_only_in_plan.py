"""Issue 17's "no rule or script spells a results path": every path a job reads or writes comes from
synthscale.study.plan.Plan. A string literal in rules/*.smk, the Snakefile or scripts/*.py that looks
like a results file or folder (a results file's extension, or `results/`, `logs/`, `benchmarks/`) fails
here, naming the file and line. The rules' own relative paths (`../scripts/`, `../envs/`, `../report/`)
are the workflow's files, not results."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from helpers import REPO

RESULT_LIKE = re.compile(
    r"\.(csv|tsv|tar|safetensors|json|jsonl|png|html|log|npz|pt)\b|(^|/)(results|logs|benchmarks)/"
)
WORKFLOW_FILES = ("../scripts/", "../envs/", "../report/")
QUOTED = re.compile(r"""(?P<q>["'])(?P<s>(?:(?!(?P=q)).)*)(?P=q)""")


def spelled_paths(path: Path) -> list[str]:
    """`file:line: literal` for each string literal of `path` that looks like a results path."""
    text = path.read_text()
    if path.suffix == ".py":
        found = [(n.lineno, n.value) for n in ast.walk(ast.parse(text))
                 if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    else:
        found = [(i, m["s"]) for i, line in enumerate(text.splitlines(), 1)
                 if not line.lstrip().startswith("#") for m in QUOTED.finditer(line)]
    return [f"{path.name}:{line}: {s!r}" for line, s in found
            if RESULT_LIKE.search(s) and not s.startswith(WORKFLOW_FILES)]


def test_no_rule_or_script_spells_a_results_path():
    files = [*sorted((REPO / "rules").glob("*.smk")), REPO / "Snakefile", *sorted((REPO / "scripts").glob("*.py"))]
    assert len(files) > 20, "the rules and scripts were found"
    bad = [hit for f in files for hit in spelled_paths(f)]
    assert not bad, "paths spelled outside Plan:\n" + "\n".join(bad)


def test_the_check_sees_a_path_in_a_rule_and_in_a_script(tmp_path):
    rule = tmp_path / "x.smk"
    rule.write_text('rule x:\n    output:\n        "results/x/summary.csv",\n    script:\n        "../scripts/x.py"\n')
    script = tmp_path / "x.py"
    script.write_text('out = f"{root}/eval/metrics.csv"\nlabel = "zero-shot results"\n')
    assert spelled_paths(rule) == ["x.smk:3: 'results/x/summary.csv'"]
    assert spelled_paths(script) == ["x.py:1: '/eval/metrics.csv'"]
