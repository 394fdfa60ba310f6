"""No import cycles inside pifr: every module's imports, function-level ones included, form a DAG.

The facade ``pifr/__init__.py`` binds its verbs lazily and is left out (it imports everything by
design and nothing imports it back). A cycle through an import inside a function still works at
run time, but it means two modules each need the other: the layer boundaries have blurred."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set


ROOT = Path(__file__).resolve().parents[2]


def module_names(package_dir: Path, package: str) -> Dict[str, Path]:
    """``{dotted module name: file}`` for every ``.py`` file under ``package_dir``."""
    out = {}
    for f in sorted(package_dir.rglob("*.py")):
        parts = [package, *f.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def import_graph(package_dir: Path, package: str) -> Dict[str, Set[str]]:
    """Edges module → package module it imports, from every ``import`` / ``from … import`` node
    anywhere in its AST (top level, functions, methods, conditionals)."""
    mods = module_names(package_dir, package)
    graph: Dict[str, Set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: List[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                # `from pkg import sub` imports the submodule sub; `from mod import func` the module.
                targets = [f"{src}.{a.name}" if f"{src}.{a.name}" in mods else src for a in node.names]
            for t in targets:
                while t and t not in mods:  # `import pifr.models.tpgan.Generator`-style: its module
                    t = t.rpartition(".")[0]
                if t and t != package and t != name:
                    graph[name].add(t)
    graph.pop(package, None)  # the lazy facade
    return graph


def find_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_pifr_has_no_import_cycles():
    graph = import_graph(ROOT / "pifr", "pifr")
    assert "pifr.frontalization" in graph and "pifr.eval.metrics" in graph  # the walk saw the tree
    assert find_cycles(graph) == []


def test_inference_never_imports_training_or_evaluation():
    """``pifr.train`` and ``pifr.eval`` sit on top of inference; nothing below imports them."""
    graph = import_graph(ROOT / "pifr", "pifr")
    for mod, deps in graph.items():
        if mod.startswith(("pifr.train", "pifr.eval")):
            continue
        assert not {d for d in deps if d.startswith(("pifr.train", "pifr.eval"))}, mod
    assert not {d for d in graph["pifr.eval.datasets"] | graph["pifr.eval.metrics"] if d.startswith("pifr.train")}


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import f\n")
    (pkg / "a.py").write_text("from .sub import b\n\ndef f():\n    return b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def g():\n    from ..a import f\n    return f\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    graph = import_graph(pkg, "pkg")
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.a"} and graph["pkg.c"] == {"pkg.a"}
    assert find_cycles(graph) == [["pkg.a", "pkg.sub.b"]]


def test_recognition_benchmarks_never_import_training():
    """The benchmarks read data through ``pifr.eval``; only ``tpgan_speed.py``, which times the
    training step itself, imports ``pifr.train``."""
    for f in sorted((ROOT / "benchmarks").glob("*.py")):
        if f.name == "tpgan_speed.py":
            continue
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(m.startswith("pifr.train") for m in mods), f.name


def test_embedders_know_nothing_of_poses_and_one_pipeline_serves_every_entry_point():
    """Data flows one way: an embedder turns crops into vectors and imports nothing of the pose
    policy, the views or the pipeline; verify, embed, Gallery and the service reach faces through
    the pipeline, never around it."""
    graph = import_graph(ROOT / "pifr", "pifr")

    def reach(mod):
        seen, todo = set(), [mod]
        while todo:
            for d in graph.get(todo.pop(), ()):
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
        return seen

    pose_side = {"pifr.policy", "pifr.views", "pifr.pipeline", "pifr.frontalization", "pifr.generator", "pifr.rotation"}
    assert not reach("pifr.embedders") & pose_side
    for entry in ("pifr.verification", "pifr.gallery.enrollment", "pifr.gallery", "pifr.service.recognizer"):
        assert "pifr.pipeline" in reach(entry), entry
        assert "pifr.frontalization" not in graph[entry], entry
