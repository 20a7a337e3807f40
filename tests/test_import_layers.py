"""The package's import graph, read from the code: no cycle, no import that runs against the layer order, and no
stage import hidden inside a function (only the CLI imports lazily, to keep light commands free of torch)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "ffdv_utils"

# lowest first; a module may import its own subpackage and anything below it
LAYERS = ("core", "sample_data", "media", "data", "pseudo", "models", "features", "selfsup", "detector", "training",
          "inference", "experiments", "packaging", "bench", "cli")
ENTRY = {"ffdv_utils", "ffdv_utils.__main__", "ffdv_utils.train"}  # entry points, above every layer
LAZY_ALLOWED = ("cli",)  # the CLI imports stages inside its commands on purpose (see cli/main.py)


def module_name(path: Path, pkg: Path) -> str:
    parts = list(path.relative_to(pkg.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph(pkg: Path) -> tuple[dict[str, set[str]], dict[str, list[tuple[str, int]]]]:
    """(edges module -> internal modules it imports, function-level internal imports per module)."""
    mods = {module_name(p, pkg): p for p in pkg.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in mods}
    inner: dict[str, list[tuple[str, int]]] = {m: [] for m in mods}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top_level = {id(n) for n in tree.body}
        base = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    root = base[: len(base) - (node.level - 1)]
                    target = ".".join(root + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                candidates = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            hits = set()
            for t in candidates:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != mod and t.startswith(pkg.name):
                    hits.add(t)
            if path.name == "__init__.py":  # a package re-exporting its own children is not an edge between stages
                hits = {h for h in hits if not h.startswith(mod + ".")}
            edges[mod] |= hits
            if hits and id(node) not in top_level:
                inner[mod].append((sorted(hits)[0], node.lineno))
    return edges, inner


def layer_of(mod: str) -> int | None:
    """The layer index of a module; None for one outside every declared subpackage."""
    if mod in ENTRY:
        return len(LAYERS)
    sub = mod.split(".")[1]
    return LAYERS.index(sub) if sub in LAYERS else None


def layer_name(mod: str) -> str:
    i = layer_of(mod)
    return "entry" if i == len(LAYERS) else LAYERS[i] if i is not None else "none"


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


def layer_problems(pkg: Path) -> list[str]:
    edges, inner = import_graph(pkg)
    problems = [f"cycle: {' <-> '.join(c)}" for c in cycles(edges)]
    problems += [f"outside the layers: {m} (put it in a subpackage of LAYERS)" for m in sorted(edges)
                 if layer_of(m) is None]
    for mod, targets in sorted(edges.items()):
        for t in sorted(targets):
            if layer_of(t) is None or layer_of(mod) is None:
                continue
            if layer_of(t) > layer_of(mod):
                problems.append(f"upward import: {mod} (layer {layer_name(mod)}) imports {t} (layer {layer_name(t)})")
    for mod, hits in sorted(inner.items()):
        if mod in ENTRY or mod.split(".")[1] in LAZY_ALLOWED or layer_of(mod) is None:
            continue
        for target, line in hits:
            problems.append(f"import inside a function: {mod} line {line} imports {target}")
    return problems


def test_package_has_no_cycle_and_imports_only_downward():
    problems = layer_problems(PKG)
    assert not problems, "\n".join(problems)


def test_the_check_finds_a_cycle_an_upward_edge_and_a_hidden_import(tmp_path):
    # the checker itself must fail on what it is there to catch
    pkg = tmp_path / "ffdv_utils"
    for sub in ("core", "features", "training"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "a.py").write_text("from ..training.m import x\n")            # core -> training: upward
    (pkg / "training" / "m.py").write_text("from ..core.a import y\nx = 1\n")     # and back: a cycle
    (pkg / "features" / "f.py").write_text("def g():\n    from ..training.m import x\n    return x\n")
    problems = layer_problems(pkg)
    assert any(p.startswith("cycle:") and "ffdv_utils.core.a" in p for p in problems), problems
    assert any(p.startswith("upward import: ffdv_utils.core.a") for p in problems), problems
    assert any(p.startswith("upward import: ffdv_utils.features.f") for p in problems), problems
    assert any(p.startswith("import inside a function: ffdv_utils.features.f") for p in problems), problems


@pytest.mark.parametrize("module", ["ffdv_utils.cli.main", "ffdv_utils.sample_data.generate",
                                    "ffdv_utils.features.extract", "ffdv_utils.bench.extraction"])
def test_light_modules_do_not_import_torch(module):
    # sample-data, bench extraction and every forked feature worker stay free of torch (about 1 GB per process)
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", f"importing {module} imports torch"
