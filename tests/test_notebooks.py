"""Every notebook executed through papermill on a tiny generated dataset, plus static checks of the notebooks."""

import json
import re
import subprocess
import sys
from ast import literal_eval
from pathlib import Path

import numpy as np
import pandas as pd
import papermill as pm
import pytest
import yaml
from conftest import TINY
from sklearn.metrics import roc_auc_score

from ffdv_utils.core.config import read_yaml
from ffdv_utils.core.errors import ConfigError
from ffdv_utils.core.files import read_json
from ffdv_utils.core.paths import NOTEBOOKS as NOTEBOOK_NAMES
from ffdv_utils.core.runner import resolve_notebook_params, run_pipeline
from ffdv_utils.models.checkpoint import load_model
from ffdv_utils.models.rules import count_parameters

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_six_numbered_notebooks():
    assert [p.stem for p in NOTEBOOKS] == list(NOTEBOOK_NAMES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_thin_tagged_and_clean(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    for c in code:
        src = "".join(c["source"])
        assert not c.get("outputs") and c.get("execution_count") is None, "committed without outputs"
        assert not re.search(r"^\s*(def|class)\s|lambda\b", src, re.M), f"function defined in a cell:\n{src}"
    # the parameters cell holds literal assignments only (papermill and params/*.yaml depend on it)
    for line in "".join(tagged[0]["source"]).splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, value = line.split("=", 1)
            assert name.strip().isidentifier(), line
            literal_eval(value.strip())  # raises on anything but a literal (a call, a name, an expression)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_params_file_matches_parameters_cell(path):
    declared = {k: v["default"] for k, v in pm.inspect_notebook(str(path)).items()}
    defaults = {k: literal_eval(v) for k, v in declared.items()}
    assert read_yaml(ROOT / "params" / f"{path.stem}.yaml") == defaults


def _builder():
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_notebooks", ROOT / "tools" / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_notebooks_and_params_are_what_the_builder_writes(tmp_path):
    """tools/build_notebooks.py is the notebooks' source: a cell edited in the .ipynb alone would be erased by the next
    build, so it fails here instead."""
    builder = _builder()
    assert builder.stale(ROOT) == []
    for rel, text in builder.rendered().items():  # the check itself: a changed cell is seen
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_text(text.replace("start_run(params, NOTEBOOK)", "start_run(params, 'x')")
                                    if rel.endswith("03_train.ipynb") else text, encoding="utf-8")
    assert builder.stale(tmp_path) == ["notebooks/03_train.ipynb"]


def test_unknown_parameter_is_refused():
    with pytest.raises(ConfigError, match="lrr"):
        resolve_notebook_params(["03_train"], overrides={"lrr": 0.1})


@pytest.mark.slow
def test_pipeline_end_to_end_on_unseen_data(sample, session_outputs):
    """The Done-when of the skeleton: the runner on an FFDV folder writes a prediction per template row."""
    folder = run_pipeline("e2e", sample["data_root"], overrides={**TINY, "test_template": "test_template.csv",
                                   "test_labels": str(sample["answers"] / "test_label.txt"),
                                   "test_kinds": str(sample["answers"] / "manipulations.csv"),
                                   "kinds_csv": str(sample["answers"] / "manipulations.csv")}, progress=False)
    assert folder == session_outputs / "e2e"
    for name in NOTEBOOK_NAMES:
        assert (folder / "notebooks" / f"{name}.ipynb").is_file()
        assert (folder / "params" / f"{name}.yaml").is_file()
    template = pd.read_csv(sample["data_root"] / "test_template.csv")
    pred = pd.read_csv(folder / "prediction.csv")
    assert list(pred.columns) == ["video_name", "score"]
    assert pred.video_name.tolist() == template.video_name.tolist()
    assert pred.score.between(0, 1).all()
    m = read_json(folder / "metrics.json")
    for key in ("val_auc", "val_tpr@fpr=1e-2", "val_tpr@fpr=1e-3", "val_accuracy", "val_f1", "test_auc"):
        assert 0 <= m[key] <= 1, key
    assert m["val_log_loss"] > 0 and m["n_params"] == count_parameters(load_model(folder.name, "cpu")[0])
    # the reported AUCs are those of the written scores against the answers
    val = pd.read_csv(folder / "val_predictions.csv")
    assert m["val_auc"] == pytest.approx(roc_auc_score(val.target, val.score), abs=1e-9)
    truth = pd.read_csv(sample["answers"] / "test_label.txt").merge(pred, on="video_name")
    assert len(truth) == len(pred) and m["test_auc"] == pytest.approx(roc_auc_score(truth.target, truth.score),
                                                                        abs=1e-6)
    resolved = read_yaml(folder / "params.yaml")
    assert resolved["model"] == "test_resnet" and resolved["data_root"] == str(sample["data_root"].resolve())
    # 05: one row per candidate and per floor (the public baseline's recipe, the metadata-only model); each protocol
    # column is the mean of that protocol's splits in protocol_results.csv; the floors column judges the candidate
    board = pd.read_csv(folder / "leaderboard.csv").set_index("name")
    results = pd.read_csv(folder / "protocol_results.csv")
    assert sorted(board.index) == ["floor-baseline", "floor-metadata", "tiny_fusion"]
    assert set(results.protocol) == {"plain", "held_out_kind"}
    assert board.loc["floor-baseline", "floors"] == "floor" and board.loc["tiny_fusion", "floors"] != "floor"
    for name in board.index:
        for proto in ("plain", "held_out_kind"):
            mine = results[(results.protocol == proto) & (results.name == name)]
            assert board.loc[name, f"{proto} auc"] == pytest.approx(mine.auc.mean())
            assert 0 <= board.loc[name, f"{proto} auc"] <= 1
    held = results[(results.protocol == "held_out_kind") & (results.name == "tiny_fusion")].held_out
    assert sorted(held) == ["audio", "av_mismatch", "visual"]
    backbones = pd.read_csv(folder / "backbone_leaderboard.csv")
    assert backbones.name.tolist() == ["tiny_resnet"]  # its own run, through papermill
    assert (session_outputs / "e2e-tiny_resnet" / "notebooks" / "03_train.ipynb").is_file()
    swept = read_json(session_outputs / "e2e-tiny_resnet" / "metrics.json")
    assert backbones.val_auc[0] == pytest.approx(swept["val_auc"]) and swept["model"] == "test_resnet"
    # 04: one row per variant, each a trained run
    augment = pd.read_csv(folder / "augment_leaderboard.csv")
    assert sorted(augment.name) == ["none", "spec_mixup"] and augment.val_auc.between(0, 1).all()
    sources = read_json(folder / "prediction_sources.json")
    assert sources["n_rows"] == len(template) and [r["run"] for r in sources["runs"]] == ["e2e"]
    # 01: the audit has a finite AUC per metadata field, and its figure is a real PNG
    audit = pd.read_csv(folder / "shortcut_audit.csv")
    assert len(audit) >= 5 and audit.auc.between(0, 1).all() and np.isfinite(audit.auc_best_direction).all()
    assert (folder / "figures" / "shortcut_audit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_train_notebook_alone_with_papermill_cli(sample, session_outputs, tmp_path):
    """`papermill notebooks/03_train.ipynb out.ipynb -f params/03_train.yaml` works outside the runner."""
    over = tmp_path / "tiny.yaml"
    over.write_text(yaml.safe_dump({"run_name": "alone", "data_root": str(sample["data_root"]), "model": "test_resnet",
                                    "image_size": 64, "epochs": 1, "batch_size": 8, "feature_workers": 1}))
    out = tmp_path / "out.ipynb"
    subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "03_train.ipynb"), str(out),
                    "-f", str(ROOT / "params" / "03_train.yaml"), "-f", str(over), "-k", "python3",
                    "--no-progress-bar"], check=True, cwd=tmp_path, capture_output=True)
    m = read_json(session_outputs / "alone" / "metrics.json")
    assert m["model"] == "test_resnet" and m["best_epoch"] == 1 and m["resumed_from_epoch"] == 0
    val = pd.read_csv(session_outputs / "alone" / "val_predictions.csv")
    assert m["val_auc"] == pytest.approx(roc_auc_score(val.target, val.score), abs=1e-9)
    history = pd.read_csv(session_outputs / "alone" / "history.csv")
    assert history.epoch.tolist() == [1]  # epochs: 1 from the second -f file reached the notebook
    _, params = load_model(session_outputs / "alone" / "checkpoints" / "best.pt", "cpu")
    assert params["image_size"] == 64 and params["batch_size"] == 8 and params["run_name"] == "alone"
    executed = json.loads(out.read_text())
    injected = [c for c in executed["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert len(injected) == 1 and "epochs = 1" in "".join(injected[0]["source"])
