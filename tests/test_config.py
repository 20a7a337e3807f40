
import pytest

from ffdv_utils.core.config import (
    collect_params,
    load_params,
    params_hash,
    parse_value,
    read_yaml,
)
from ffdv_utils.core.errors import ConfigError
from ffdv_utils.core.paths import find_data_root, project_root
from ffdv_utils.core.runs import load_run_params, start_run


def test_project_root_is_the_clone(monkeypatch):
    monkeypatch.delenv("FFDV_PROJECT_ROOT", raising=False)
    root = project_root()
    assert (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir()
    monkeypatch.chdir("/")
    assert project_root() == root  # not the working directory


def test_find_data_root_order(tmp_path, monkeypatch):
    explicit = tmp_path / "a"
    explicit.mkdir()
    env = tmp_path / "b"
    env.mkdir()
    monkeypatch.setenv("FFDV_DATA_ROOT", str(env))
    assert find_data_root(str(explicit)) == explicit.resolve()
    assert find_data_root(None) == env.resolve()
    with pytest.raises(ConfigError, match="not a folder"):
        find_data_root(str(tmp_path / "missing"))


def test_find_data_root_on_kaggle(tmp_path, monkeypatch):
    monkeypatch.delenv("FFDV_DATA_ROOT", raising=False)
    kaggle_input = tmp_path / "input"
    data = kaggle_input / "multi-ffdv" / "phase1"
    (data / "trainset").mkdir(parents=True)
    (data / "train_label.txt").write_text("video_name,target\n")
    (kaggle_input / "weights").mkdir()
    monkeypatch.setattr("ffdv_utils.core.paths.KAGGLE_INPUT", kaggle_input)
    assert find_data_root(None) == data
    monkeypatch.setattr("ffdv_utils.core.paths.KAGGLE_INPUT", tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="no data root"):
        find_data_root(None)


def test_load_params_merges_in_order_and_reports_yaml_errors(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("lr: 3.0e-3\nepochs: 10\n")
    b = tmp_path / "b.yaml"
    b.write_text("epochs: 2\n")
    p = load_params([a, b], {"batch_size": parse_value("16")}, base={"lr": 1, "seed": 1})
    assert p == {"lr": 3.0e-3, "epochs": 2, "batch_size": 16, "seed": 1}
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 2\nlr: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+"):
        load_params([bad])


def test_collect_params_keeps_only_literals():
    ns = {"lr": 0.1, "name": "x", "cands": [{"a": 1}], "_x": 1, "NOTEBOOK": "03", "pd": pytest, "f": print,
          "obj": object()}
    assert collect_params(ns) == {"lr": 0.1, "name": "x", "cands": [{"a": 1}]}


def test_params_hash_ignores_key_order():
    assert params_hash({"a": 1, "b": [1, 2]}) == params_hash({"b": [1, 2], "a": 1})
    assert params_hash({"a": 1}) != params_hash({"a": 2})


def test_start_run_records_parameters(session_outputs):
    run = start_run({"run_name": "rec", "lr": 0.5}, "03_train")
    assert run.dir == session_outputs / "rec"
    assert read_yaml(run.dir / "params" / "03_train.yaml") == {"run_name": "rec", "lr": 0.5}
    start_run({"run_name": "rec", "tta": 2}, "06_submission")
    assert load_run_params("rec") == {"run_name": "rec", "lr": 0.5, "tta": 2}
    assert (run.dir / "environment.json").is_file()
    with pytest.raises(ConfigError, match="run name"):
        start_run({"run_name": "../escape"}, "03_train")
