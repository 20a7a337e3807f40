"""Every notebook executed through papermill on a tiny generated dataset, plus static checks of the notebooks."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import papermill as pm
import pytest
import yaml
from conftest import TINY

from ffdv_utils.core.config import read_yaml
from ffdv_utils.core.errors import ConfigError
from ffdv_utils.core.files import read_json
from ffdv_utils.core.paths import NOTEBOOKS as NOTEBOOK_NAMES
from ffdv_utils.core.runner import resolve_notebook_params, run_pipeline

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
    # the parameters cell holds literals only
    for line in "".join(tagged[0]["source"]).splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, value = line.split("=", 1)
            yaml.safe_load(value)  # a Python literal that YAML reads is a literal


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_params_file_matches_parameters_cell(path):
    declared = {k: v["default"] for k, v in pm.inspect_notebook(str(path)).items()}
    from ast import literal_eval

    defaults = {k: literal_eval(v) for k, v in declared.items()}
    assert read_yaml(ROOT / "params" / f"{path.stem}.yaml") == defaults


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
    for key in ("val_auc", "val_tpr@fpr=1e-2", "val_tpr@fpr=1e-3", "val_accuracy", "val_f1", "val_log_loss",
                "test_auc", "n_params"):
        assert key in m
    resolved = read_yaml(folder / "params.yaml")
    assert resolved["model"] == "test_resnet" and resolved["data_root"] == str(sample["data_root"].resolve())
    board = pd.read_csv(folder / "leaderboard.csv")
    assert board.name.tolist() == ["tiny_fusion"]
    assert board["plain auc"].notna().all() and board["held_out_kind auc"].notna().all()
    backbones = pd.read_csv(folder / "backbone_leaderboard.csv")
    assert backbones.name.tolist() == ["tiny_resnet"] and backbones.val_auc.notna().all()
    assert (session_outputs / "e2e-tiny_resnet" / "notebooks" / "03_train.ipynb").is_file()  # ran via papermill
    assert len(pd.read_csv(folder / "augment_leaderboard.csv")) == 2
    assert (folder / "prediction_sources.json").is_file()
    assert (folder / "figures" / "shortcut_audit.png").is_file()


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
    assert m["model"] == "test_resnet" and 0 <= m["val_auc"] <= 1
    assert (session_outputs / "alone" / "checkpoints" / "best.pt").is_file()
