"""The house rules that keep product and research apart, checked on the source tree.

Research and the benchmarks use pifr through its API: they never assign to a pifr module's
attributes (policy is data, proposed as a new rules file), and only ``benchmarks/_root.py`` edits
``sys.path``. Product modules stay small enough to read in one sitting (~500 lines)."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, List, Set

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 500


def pifr_names(tree: ast.AST) -> Set[str]:
    """Local names bound to pifr modules or to objects imported from them."""
    names: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "pifr" or a.name.startswith("pifr."):
                    names.add(a.asname or a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            if node.module == "pifr" or node.module.startswith("pifr."):
                names.update(a.asname or a.name for a in node.names)
    return names


def _root(node: ast.AST) -> str:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else ""


def patches(source: str, filename: str = "<src>") -> List[str]:
    """Each place in ``source`` that rebinds an attribute of something imported from pifr:
    ``mod.X = …``, ``mod.X += …``, ``del mod.X``, ``setattr(mod, …)`` and
    ``monkeypatch.setattr(mod, …)`` / ``monkeypatch.setattr("pifr.…", …)``."""
    tree = ast.parse(source, filename)
    bound = pifr_names(tree)
    found = []

    def flag(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{node.lineno}: {what}")

    for node in ast.walk(tree):
        targets: List[ast.AST] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        while any(isinstance(t, (ast.Tuple, ast.List, ast.Starred)) for t in targets):  # a, b.c = …
            targets = [e for t in targets for e in (t.elts if isinstance(t, (ast.Tuple, ast.List)) else
                                                     [t.value] if isinstance(t, ast.Starred) else [t])]
        for t in targets:
            if isinstance(t, (ast.Attribute, ast.Subscript)) and _root(t) in bound:
                flag(node, ast.unparse(t))
        if isinstance(node, ast.Call) and node.args:
            f = node.func
            is_setattr = (isinstance(f, ast.Name) and f.id in ("setattr", "delattr")) or (
                isinstance(f, ast.Attribute) and f.attr in ("setattr", "delattr", "setitem"))
            first = node.args[0]
            if is_setattr and (_root(first) in bound or (
                    isinstance(first, ast.Constant) and str(first.value).startswith("pifr"))):
                flag(node, ast.unparse(node)[:80])
    return found


def python_files(*dirs: str) -> Iterator[Path]:
    for d in dirs:
        yield from sorted((ROOT / d).rglob("*.py"))


def test_nothing_under_research_or_benchmarks_patches_pifr():
    found = [p for f in python_files("research", "benchmarks", "examples")
             for p in patches(f.read_text(encoding="utf-8"), str(f.relative_to(ROOT)))]
    assert not found, "research/benchmarks rebind pifr attributes (propose data instead):\n" + "\n".join(found)


def test_the_patch_finder_finds_each_form_of_patching():
    src = (
        "import pifr.policy as pol\n"
        "from pifr import pooling\n"
        "from pifr.views import Render3D\n"
        "import pifr\n"
        "pol.AUTO_RULES = {}\n"
        "pooling.pool_views.__defaults__ = ()\n"
        "x, pol.RULES[0] = 1, 2\n"
        "Render3D.yaws += (60,)\n"
        "del pifr.verify\n"
        "setattr(pol, 'x', 1)\n"
        "monkeypatch.setattr('pifr.pose.pose_network', None)\n"
        "monkeypatch.setattr(pooling, 'pool_views', None)\n"
    )
    assert len(patches(src)) == 8
    # Using pifr, or setting attributes on one's own objects, is not patching it.
    clean = (
        "import pifr\nfrom pifr.gallery import Gallery\n"
        "g = Gallery()\ng.note = 1\nself_x = pifr.verify\n"
        "class A:\n    def __init__(self):\n        self.embedder = pifr.embed\n"
        "monkeypatch.setattr(sys, 'argv', [])\n"
    )
    assert patches(clean) == []


def _is_sys_path(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name)
            and node.value.id == "sys")


def sys_path_edits(source: str) -> List[int]:
    """Lines that change ``sys.path``: ``sys.path.insert/append/extend/…(…)`` or ``sys.path = …``."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and _is_sys_path(node.func.value):
            lines.append(node.lineno)
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            if any(_is_sys_path(t) for t in getattr(node, "targets", [getattr(node, "target", None)])):
                lines.append(node.lineno)
    return sorted(lines)


def test_only_benchmarks_root_edits_sys_path():
    edits = {str(f.relative_to(ROOT)) for f in python_files("research", "benchmarks", "examples", "pifr", "tests")
             if sys_path_edits(f.read_text(encoding="utf-8"))}
    assert edits == {"benchmarks/_root.py"}, edits
    assert sys_path_edits("import sys\nsys.path.insert(0, 'x')\nsys.path += ['y']\nprint(sys.path)\n") == [2, 3]


def test_no_product_module_runs_past_five_hundred_lines():
    long = {str(f.relative_to(ROOT)): n for f in python_files("pifr")
            if (n := len(f.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, long
