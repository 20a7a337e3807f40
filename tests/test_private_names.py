"""Public what is shared, private what is not: no module imports another module's underscore name.

A name with a leading underscore is its module's own business; a module that needs it from elsewhere needs it
public (renamed without the underscore), or the two belong together. Tests may reach in; the package may not.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "ffdv_utils"


def private_imports(pkg: Path) -> list[str]:
    """``module line: name`` for every ``from <internal module> import _name`` (and ``internal._name`` read off an
    imported module) in the package; dunder names (``__version__``) are not private."""
    found = []
    for path in sorted(pkg.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        rel = path.relative_to(pkg.parent)
        modules: set[str] = set()  # names bound to internal modules by ``from . import x`` / ``import ffdv_utils.x``
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith(pkg.name)):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{rel}:{node.lineno}: {alias.name}")
                    if node.module is None or node.level == 0:
                        modules.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith(pkg.name):
                        modules.add(alias.asname or alias.name.split(".")[0])
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                found.append(f"{rel}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_module_imports_a_private_name_of_another():
    found = private_imports(PKG)
    assert not found, "private names imported across modules (make them public or keep them home):\n" + "\n".join(
        found)


def test_the_check_finds_both_forms(tmp_path):
    pkg = tmp_path / "ffdv_utils"
    (pkg / "core").mkdir(parents=True)
    (pkg / "__init__.py").write_text('__version__ = "0"\n')
    (pkg / "core" / "__init__.py").write_text("")
    (pkg / "core" / "a.py").write_text("def _hidden():\n    return 1\n\n\ndef shown():\n    return 2\n")
    (pkg / "core" / "b.py").write_text("from .a import _hidden, shown\nfrom .. import __version__\n")
    (pkg / "core" / "c.py").write_text("from . import a\n\nx = a._hidden()\ny = a.shown()\n")
    found = private_imports(pkg)
    assert found == ["ffdv_utils/core/b.py:1: _hidden", "ffdv_utils/core/c.py:3: a._hidden"], found
