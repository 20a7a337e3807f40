"""Shared fixtures: a tiny generated FFDV dataset and an isolated outputs folder for the whole session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")

# Small parameters that make every notebook and model fast on a 2-core CPU.
TINY = {
    "model": "test_resnet",
    "image_size": 64,
    "batch_size": 8,
    "epochs": 2,
    "feature_workers": 1,
    "face_frames": 2,
    "face_size": 32,
    "n_examples": 2,
    "variants": [{"name": "none", "augment": "none"}, {"name": "spec_mixup", "augment": "spec", "mixup_alpha": 0.4}],
    "candidates": [{"name": "tiny_fusion", "model_type": "fusion"}],
    "eval_protocols": ["plain", "held_out_kind"],
    "shared": {"epochs": 1},
    "backbones": [{"name": "tiny_resnet", "model": "test_resnet"}],
    "backbone_overrides": {"epochs": 1},
}


@pytest.fixture(scope="session")
def session_outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every run of the test session writes here (FFDV_OUTPUTS), never into the repository's outputs/."""
    out = tmp_path_factory.mktemp("outputs")
    old = {k: os.environ.get(k) for k in ("FFDV_OUTPUTS", "FFDV_CACHE")}
    os.environ["FFDV_OUTPUTS"] = str(out)
    os.environ.pop("FFDV_CACHE", None)
    yield out
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory, session_outputs: Path) -> dict:
    """A 24-clip sample dataset (train/val/test, every fake kind), generated once per session."""
    from ffdv_utils.sample_data.generate import make_sample_dataset

    out = tmp_path_factory.mktemp("sample")
    info = make_sample_dataset(out, n=24, seed=7, progress=False)
    return {"out": out, "data_root": Path(info["data_root"]), "answers": Path(info["answers_dir"])}


def untrained_run(name: str, seed: int = 0, **over) -> str:
    """A run folder holding an untrained checkpoint in the layout ``fit`` writes (``checkpoints/best.pt`` with the
    parameters, ``params.yaml``): for tests of the prediction plumbing, which need a model, not a trained one."""
    import torch

    from ffdv_utils.core.config import save_params
    from ffdv_utils.core.paths import run_dir
    from ffdv_utils.models.registry import build_model
    from ffdv_utils.training.loop import TRAIN_DEFAULTS

    params = {**TRAIN_DEFAULTS, "run_name": name, "model": "test_resnet", "image_size": 64, "face_frames": 2,
              "face_size": 32, "feature_workers": 1, **over}
    torch.manual_seed(seed)
    model = build_model(params)
    folder = run_dir(name)
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "params": params, "epoch": 1, "metrics": {"auc": 0.5}},
               folder / "checkpoints" / "best.pt")
    save_params(folder / "params.yaml", params)
    return name
