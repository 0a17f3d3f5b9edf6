"""synthscale's package layering (docs/layout.md#layering): every `synthscale.*` import, read with `ast`
(module-level and function-local alike), points to a lower layer or along an allowed edge within the
stage layer, and neither the package-level graph nor the module-level graph has a cycle (a
function-local import that closes a loop is a cycle too: it only hides it from the import system).

The top-level modules (io, seeds, runtime, warm, lr_schedule, preemption, distributed) count as one
package, "base". Only import statements count: `warm`'s preload list names modules as strings and
imports them at run time, which is no dependency of the code.
"""
from __future__ import annotations

import ast
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "synthscale"

# The layers, bottom first: a package may import any package in a layer below its own.
LAYERS: list[set[str]] = [
    {"base"},
    {"data"},
    {"prompts", "generation", "classifier", "quality", "clip"},  # the stages
    {"study"},  # the config check, Plan and resolution: may import stage modules for their checks
    {"analysis"},  # the tables and reports: may import study.sources and study.plan
]

# Within a layer, only these imports (importer, imported); they must stay acyclic.
SAME_LAYER: set[tuple[str, str]] = {
    ("clip", "classifier"),  # zero-shot evaluation runs through the classifier's streaming evaluation
    ("clip", "prompts"),  # a CLIP run's captions are the prompt strategies' prompts
    ("generation", "prompts"),  # a generation job samples the prompt strategies' prompts
    ("quality", "classifier"),  # the judge and the judge filter are classifiers
    ("quality", "clip"),  # the CLIP-score filter reads open_clip's model-name grammar (clip.names)
}


def package_of(dotted: str) -> str:
    """The package of a `synthscale.*` module name: its subpackage, or "base" for a top-level module."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 and (PACKAGE / parts[1] / "__init__.py").exists() else "base"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every `synthscale.*` module name that a file imports, anywhere in it (relative imports resolved)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1]) if node.level else ""
            source = ".".join(p for p in (base, node.module or "") if p)
            if source == "synthscale":  # `from synthscale import warm` imports the module synthscale.warm
                found.update(f"{source}.{a.name}" for a in node.names)
            else:
                found.add(source)
                # `from synthscale.data import real` imports the module synthscale.data.real too
                found.update(f"{source}.{a.name}" for a in node.names if is_module(f"{source}.{a.name}"))
    return {m for m in found if m.startswith("synthscale.")}


def is_module(dotted: str) -> bool:
    """Whether a dotted name is a module or package of the tree (not a name defined in one)."""
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def import_edges() -> dict[tuple[str, str], list[str]]:
    """(importer package, imported package) -> the module imports that make the edge."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        src = module_name(path)
        for dst in sorted(imported(path)):
            if package_of(src) != package_of(dst):
                edges.setdefault((package_of(src), package_of(dst)), []).append(f"{src} imports {dst}")
    return edges


def layer_of(package: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if package in layer)


def test_every_package_has_a_layer():
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")} | {"base"}
    assert packages == set().union(*LAYERS), "give a new subpackage its layer in LAYERS"


def test_the_graph_is_read():
    """A guard against a vacuous pass: imports known to exist are seen, function-local ones too."""
    runtime = imported(PACKAGE / "runtime.py")
    assert "synthscale.warm" in runtime  # `from synthscale import warm`, inside a function
    edges = import_edges()
    assert "synthscale.classifier.train imports synthscale.data.loader" in edges[("classifier", "data")]
    assert "synthscale.study.config imports synthscale.clip.schedule" in edges[("study", "clip")]  # local


def test_relative_imports_are_resolved(tmp_path, monkeypatch):
    pkg = tmp_path / "synthscale" / "quality"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import judge\n")
    (pkg / "filtering.py").write_text("from .judge import x\nfrom ..data.shards import y\nfrom .. import io\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "synthscale")
    assert imported(pkg / "__init__.py") == {"synthscale.quality"}  # the package itself: same layer either way
    assert imported(pkg / "filtering.py") == {"synthscale.quality.judge", "synthscale.data.shards", "synthscale.io"}


def test_imports_follow_the_layers():
    bad = [
        f"{src} -> {dst}: {', '.join(why)}"
        for (src, dst), why in sorted(import_edges().items())
        if layer_of(src) < layer_of(dst) or (layer_of(src) == layer_of(dst) and (src, dst) not in SAME_LAYER)
    ]
    assert not bad, "imports against the layering (docs/layout.md#layering):\n" + "\n".join(bad)


def test_only_study_imports_the_config_check():
    """study.config and study.resolve are the Snakefile's; analysis reads study.sources and study.plan."""
    users = [
        f"{module_name(path)} imports {m}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if package_of(module_name(path)) != "study"
        for m in sorted(imported(path))
        if m in ("synthscale.study.config", "synthscale.study.resolve")
    ]
    assert not users, "\n".join(users)


def cycle(edges) -> str | None:
    """A cycle of a graph given as (from, to) pairs, spelled a -> b -> a; None when there is none."""
    graph: dict[str, set[str]] = {}
    for src, dst in edges:
        graph.setdefault(src, set()).add(dst)
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as err:
        return " -> ".join(reversed(err.args[1]))  # graphlib lists it against the edges' direction
    return None


def test_no_package_cycle():
    found = cycle(import_edges())
    assert found is None, f"package-level import cycle: {found}"


def test_allowed_same_layer_edges_are_acyclic():
    found = cycle(SAME_LAYER)
    assert found is None, f"SAME_LAYER has a cycle: {found}"


def module_edges() -> set[tuple[str, str]]:
    """(importer, imported) over synthscale's modules, function-local imports included."""
    edges = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        src = module_name(path)
        edges.update((src, dst) for dst in imported(path) if dst != src and is_module(dst))
    return edges


def test_no_module_cycle():
    """No two modules import each other, however indirectly, even through a function-local import:
    a module whose import is deferred to dodge a cycle (data.real's prepare_dataset importing
    data.imagefolder, which imports real) is cut apart instead (data.prepare sits above both)."""
    edges = module_edges()
    assert ("synthscale.data.prepare", "synthscale.data.imagefolder") in edges  # the graph is read
    assert ("synthscale.runtime", "synthscale.warm") in edges  # `from synthscale import warm`, local
    found = cycle(edges)
    assert found is None, f"module-level import cycle: {found}"


def test_a_function_local_import_closes_a_module_cycle(tmp_path, monkeypatch):
    pkg = tmp_path / "synthscale" / "data"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "real.py").write_text("def f():\n    from synthscale.data.imagefolder import g\n")
    (pkg / "imagefolder.py").write_text("from synthscale.data import real\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "synthscale")
    assert cycle(module_edges()) in ("synthscale.data.real -> synthscale.data.imagefolder -> synthscale.data.real",
                                     "synthscale.data.imagefolder -> synthscale.data.real -> synthscale.data.imagefolder")
