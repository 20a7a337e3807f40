"""The suite's own rule: every test that trains a model or executes a notebook is marked ``slow``, so that
``make test-fast`` (``-m "not slow"``) really skips them, and ``make test`` runs everything.

Read from the test files' syntax trees (no test is run): a test is heavy when it, a module-level helper or fixture it
uses, or a module-level string it runs (a subprocess script), calls the training loop (``fit``), the pipeline runner,
papermill, torchrun or the training benchmark.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HEAVY_CALLS = {"fit", "run_pipeline", "execute_notebook", "bench_train"}
HEAVY_TEXT = re.compile(r"papermill|torch\.distributed\.run|\bfit\(")  # in a subprocess's command or script


def _strings(node: ast.AST) -> list[str]:
    """String constants inside ``node``, docstrings left out."""
    docs = set()
    for n in ast.walk(node):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)) and n.body:
            first = n.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docs.add(id(first.value))
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docs]


def _direct(node: ast.AST) -> bool:
    for n in ast.walk(node):
        if isinstance(n, ast.Call):
            f = n.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if isinstance(f, ast.Attribute) and name == "fit":
                continue  # a method of that name (RealOnlyModel.fit, sklearn) is not the training loop
            if name in HEAVY_CALLS:
                return True
    return any(HEAVY_TEXT.search(s) for s in _strings(node))


def _is_marked(fn: ast.FunctionDef, marker: str) -> bool:
    return any(marker in ast.unparse(d) and "mark" in ast.unparse(d) for d in fn.decorator_list)


def _is_fixture(fn: ast.FunctionDef) -> bool:
    return any("fixture" in ast.unparse(d) for d in fn.decorator_list)


def heavy_unmarked(source: str) -> tuple[list[str], list[str]]:
    """(heavy tests, heavy tests without the slow marker) of one test module's source."""
    tree = ast.parse(source)
    module_marked = any(isinstance(s, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in s.targets)
                        and "slow" in ast.unparse(s.value) for s in tree.body)
    defs: dict[str, ast.AST] = {}
    for s in tree.body:
        if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)):
            defs[s.name] = s
        elif isinstance(s, ast.Assign):
            for t in s.targets:
                if isinstance(t, ast.Name):
                    defs[t.id] = s
    heavy = {name for name, node in defs.items() if _direct(node)}
    changed = True
    while changed:  # helpers, fixtures and scripts that use something heavy are heavy
        changed = False
        for name, node in defs.items():
            if name in heavy:
                continue
            used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            if isinstance(node, ast.FunctionDef) and _is_fixture(node):
                used |= {a.arg for a in node.args.args}
            if used & heavy:
                heavy.add(name)
                changed = True
    tests, unmarked = [], []
    for name, node in defs.items():
        if not (name.startswith("test_") and isinstance(node, ast.FunctionDef)):
            continue
        args = {a.arg for a in node.args.args}
        if name in heavy or args & heavy:
            tests.append(name)
            if not (module_marked or _is_marked(node, "slow")):
                unmarked.append(name)
    return tests, unmarked


def test_every_training_or_notebook_test_is_marked_slow():
    found, missing = {}, []
    for path in sorted(p for p in HERE.glob("test_*.py") if p.name != Path(__file__).name):
        tests, unmarked = heavy_unmarked(path.read_text(encoding="utf-8"))
        found[path.stem] = tests
        missing += [f"{path.name}::{t}" for t in unmarked]
    assert not missing, "train a model or run a notebook but are not marked slow:\n  " + "\n  ".join(missing)
    # the detector sees the known heavy tests (so an empty list above means something)
    for module, test in [("test_notebooks", "test_pipeline_end_to_end_on_unseen_data"),
                         ("test_notebooks", "test_train_notebook_alone_with_papermill_cli"),
                         ("test_train", "test_resume_after_sigkill_matches_uninterrupted"),
                         ("test_train", "test_ddp_two_processes_on_cpu"), ("test_train", "test_bench_train_tiny"),
                         ("test_predict", "test_notebook_prediction_matches_score_api_and_cli"),
                         ("test_kaggle", "test_staged_kernel_runs_offline_end_to_end"),
                         ("test_bad_data", "test_score_api_on_every_case_agrees_with_the_notebook")]:
        assert test in found[module], (module, test)


@pytest.mark.parametrize("source, flagged", [
    ("from x import fit\ndef test_a(tmp_path):\n    fit({}, None)\n", ["test_a"]),
    ("import pytest\n@pytest.fixture\ndef run():\n    return fit({})\ndef test_b(run):\n    pass\n", ["test_b"]),
    ("def _helper():\n    return run_pipeline('x')\ndef test_c():\n    _helper()\n", ["test_c"]),
    ("SCRIPT = 'from m import fit\\nfit(p)'\ndef test_d():\n    launch(SCRIPT)\n", ["test_d"]),
    ("def test_e():\n    subprocess.run(['python', '-m', 'papermill', 'a.ipynb'])\n", ["test_e"]),
    ("import pytest\n@pytest.mark.slow\ndef test_f():\n    fit({})\n", []),
    ("def test_g():\n    '''Runs no notebook through papermill.'''\n    assert build_model({})\n", []),
], ids=["call", "fixture", "helper", "script", "papermill", "marked", "docstring"])
def test_the_detector(source, flagged):
    assert heavy_unmarked(source)[1] == flagged


def test_make_targets():
    """`make test` runs every test; `make test-fast` deselects the slow ones."""
    make = (ROOT / "Makefile").read_text(encoding="utf-8")
    fast = re.search(r"^test-fast:.*\n\t(.*)$", make, re.M).group(1)
    full = re.search(r"^test:.*\n\t(.*)$", make, re.M).group(1)
    assert "-m pytest" in fast and '-m "not slow"' in fast.split("-m pytest", 1)[1]
    assert "-m pytest" in full and not re.search(r" -[mk] ", full.split("-m pytest", 1)[1])  # nothing deselected
    toml = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'"slow: [^"]*train[^"]*notebook', toml) and "--strict-markers" in toml
