"""One source of defaults: the schema, the notebooks' parameters cells, params/NN_*.yaml and the train command agree,
and no module keeps a private default for a schema key."""

from __future__ import annotations

import ast
from pathlib import Path

import papermill as pm
import pytest
import yaml

from ffdv_utils.cli.main import train_main
from ffdv_utils.core import schema
from ffdv_utils.core.paths import NOTEBOOKS

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "ffdv_utils"


def literal_defaults(pkg: Path, keys: set[str]) -> list[str]:
    """``x.get("key", <literal>)`` and ``x.get("key") or <literal>`` for a schema key, anywhere in the package."""
    hits = []
    for path in sorted(pkg.rglob("*.py")):
        if path.name == "schema.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            call = None
            if isinstance(node, ast.Call) and len(node.args) == 2 and isinstance(node.args[1], ast.Constant):
                call = node
            elif (isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or) and isinstance(node.values[0], ast.Call)
                  and isinstance(node.values[-1], ast.Constant) and node.values[-1].value not in (None,)):
                call = node.values[0]
            if call is None or not (isinstance(call.func, ast.Attribute) and call.func.attr == "get"):
                continue
            if call.args and isinstance(call.args[0], ast.Constant) and call.args[0].value in keys:
                hits.append(f"{path.relative_to(pkg.parent)}:{node.lineno}: .get({call.args[0].value!r}, ...)")
    return hits


def test_no_private_literal_default_for_a_schema_key():
    hits = literal_defaults(PKG, schema.declared_keys())
    assert not hits, "defaults belong in ffdv_utils/core/schema.py:\n" + "\n".join(hits)


def test_the_check_sees_a_literal_default(tmp_path):
    (tmp_path / "m.py").write_text('def f(p):\n    return p.get("aggregate", "mean"), p.get("lr") or 3.0e-3\n')
    assert len(literal_defaults(tmp_path, {"aggregate", "lr"})) == 2


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_parameters_cell_and_params_file_come_from_the_schema(name):
    declared = {k: v["default"] for k, v in pm.inspect_notebook(str(ROOT / "notebooks" / f"{name}.ipynb")).items()}
    expected = schema.notebook_defaults(name)
    # papermill reports the cell's source text; evaluate it the way the kernel would
    assert {k: eval(v) for k, v in declared.items()} == expected  # noqa: S307 - our own generated literals
    assert yaml.safe_load((ROOT / "params" / f"{name}.yaml").read_text()) == expected


def test_train_command_and_notebook_03_resolve_the_same_parameters(tmp_path, monkeypatch, sample):
    """``python -m ffdv_utils train -f params/03_train.yaml`` records exactly what notebook 03 records."""
    from ffdv_utils.core.config import collect_params
    from ffdv_utils.core.runs import start_run

    monkeypatch.setenv("FFDV_OUTPUTS", str(tmp_path / "out"))
    captured = {}
    monkeypatch.setattr("ffdv_utils.training.loop.fit", lambda params, run: captured.update(params) or {})
    train_main(["-f", str(ROOT / "params" / "03_train.yaml"), "--data-root", str(sample["data_root"]),
                "--run-name", "cli"])
    # notebook 03: its parameters cell as papermill runs it (params file, then the injected data_root / run_name)
    namespace = {**yaml.safe_load((ROOT / "params" / "03_train.yaml").read_text()),
                 "data_root": str(sample["data_root"]), "run_name": "nb"}
    nb_params = start_run(collect_params(namespace), "03_train").params
    cli_params = dict(captured)
    assert {**cli_params, "run_name": "nb"} == nb_params
    assert set(cli_params) == set(schema.notebook_defaults("03_train"))
