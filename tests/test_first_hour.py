"""A competitor's first hour: the trap of resuming on other data, silent drops, failures that do not explain
themselves, the Kaggle round trip and what a person sees."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from ffdv_utils.core.runs import Run
from ffdv_utils.training.loop import TRAIN_DEFAULTS, fit

from test_train import TINY, tiny_datasets


# ---------------------------------------------------------------------------------------------------------------
# the trap: the same run name on other data


@pytest.mark.slow
def test_same_run_name_on_other_data_trains_afresh(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A finished run asked to train again on other data (other clips, labels or data root) must train, not resume
    at an epoch past the end and report the new data's metrics as if it had trained on them."""
    p = {**TRAIN_DEFAULTS, **TINY, "epochs": 1, "run_name": "trap", "data_root": None}
    run = Run(name="trap", dir=tmp_path / "trap", params=p)
    first = fit(p, run, *tiny_datasets(24, 12, seed=0))
    assert first["resumed_from_epoch"] == 0
    capsys.readouterr()
    again = fit(p, run, *tiny_datasets(24, 12, seed=0))  # the same data: resumed, nothing left to train
    assert again["resumed_from_epoch"] == 1
    capsys.readouterr()
    other = fit({**p, "data_root": str(tmp_path / "sample")}, run, *tiny_datasets(24, 12, seed=1))  # other labels
    out = capsys.readouterr().out
    assert other["resumed_from_epoch"] == 0, out
    assert "trained on other data" in out and "starting from scratch" in out
    assert pd.read_csv(run.path("history.csv")).epoch.tolist() == [1]
    saved = torch.load(run.dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert saved["data"]["n_train"] == 24
    moved = fit({**p, "data_root": str(tmp_path / "FFDV")}, run, *tiny_datasets(24, 12, seed=1))  # same clips, new root
    assert moved["resumed_from_epoch"] == 0 and "data root" in capsys.readouterr().out
