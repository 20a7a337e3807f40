from pathlib import Path

import pytest

from ffdv_utils import config


def test_project_root_is_the_clone(monkeypatch):
    monkeypatch.delenv("FFDV_PROJECT_ROOT", raising=False)
    root = config.project_root()
    assert (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir()
    monkeypatch.chdir("/")
    assert config.project_root() == root  # not the working directory


def test_find_data_root_order(tmp_path, monkeypatch):
    explicit = tmp_path / "a"
    explicit.mkdir()
    env = tmp_path / "b"
    env.mkdir()
    monkeypatch.setenv("FFDV_DATA_ROOT", str(env))
    assert config.find_data_root(str(explicit)) == explicit.resolve()
    assert config.find_data_root(None) == env.resolve()
    with pytest.raises(config.ConfigError, match="not a folder"):
        config.find_data_root(str(tmp_path / "missing"))


def test_find_data_root_on_kaggle(tmp_path, monkeypatch):
    monkeypatch.delenv("FFDV_DATA_ROOT", raising=False)
    kaggle_input = tmp_path / "input"
    data = kaggle_input / "multi-ffdv" / "phase1"
    (data / "trainset").mkdir(parents=True)
    (data / "train_label.txt").write_text("video_name,target\n")
    (kaggle_input / "weights").mkdir()
    monkeypatch.setattr(config, "KAGGLE_INPUT", kaggle_input)
    assert config.find_data_root(None) == data
    monkeypatch.setattr(config, "KAGGLE_INPUT", tmp_path / "nowhere")
    with pytest.raises(config.ConfigError, match="no data root"):
        config.find_data_root(None)


def test_load_params_merges_in_order_and_reports_yaml_errors(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("lr: 3.0e-3\nepochs: 10\n")
    b = tmp_path / "b.yaml"
    b.write_text("epochs: 2\n")
    p = config.load_params([a, b], {"batch_size": config.parse_value("16")}, base={"lr": 1, "seed": 1})
    assert p == {"lr": 3.0e-3, "epochs": 2, "batch_size": 16, "seed": 1}
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 2\nlr: [1, 2\n")
    with pytest.raises(config.ConfigError, match=r"bad\.yaml:\d+"):
        config.load_params([bad])


def test_collect_params_keeps_only_literals():
    ns = {"lr": 0.1, "name": "x", "cands": [{"a": 1}], "_x": 1, "NOTEBOOK": "03", "pd": config, "f": print,
          "obj": object()}
    assert config.collect_params(ns) == {"lr": 0.1, "name": "x", "cands": [{"a": 1}]}


def test_params_hash_ignores_key_order():
    assert config.params_hash({"a": 1, "b": [1, 2]}) == config.params_hash({"b": [1, 2], "a": 1})
    assert config.params_hash({"a": 1}) != config.params_hash({"a": 2})


def test_start_run_records_parameters(session_outputs):
    run = config.start_run({"run_name": "rec", "lr": 0.5}, "03_train")
    assert run.dir == session_outputs / "rec"
    assert config.read_yaml(run.dir / "params" / "03_train.yaml") == {"run_name": "rec", "lr": 0.5}
    config.start_run({"run_name": "rec", "tta": 2}, "06_submission")
    assert config.load_run_params("rec") == {"run_name": "rec", "lr": 0.5, "tta": 2}
    assert (run.dir / "environment.json").is_file()
    with pytest.raises(config.ConfigError, match="run name"):
        config.start_run({"run_name": "../escape"}, "03_train")
