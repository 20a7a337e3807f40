"""Model comparison: variants and candidates trained from one base configuration, and the leaderboard.

Each variant is its own run folder, ``outputs/<run>-<label>``, with its parameters, checkpoints and metrics, so
every number in a leaderboard can be traced back to the run that produced it.
"""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import torch

from . import config
from .models import MAX_PARAMS, ModelRuleError, build_model
from .train import TRAIN_DEFAULTS


def base_train_params(run_name: str, data_root: Any = None) -> dict:
    """The training parameters a run's ``03_train`` used (its saved record), else the defaults."""
    saved = config.run_dir(run_name, create=False) / "params" / "03_train.yaml"
    if not saved.is_file():
        warnings.warn(f"{saved} not found: run 03_train first, or the candidates start from the training defaults "
                      "(plus `shared`) rather than your 03 parameters", stacklevel=2)
    params = {**TRAIN_DEFAULTS, **(config.read_yaml(saved) if saved.is_file() else {})}
    if data_root is not None:
        params["data_root"] = data_root
    params["run_name"] = run_name
    return params


def label_of(overrides: Mapping[str, Any]) -> str:
    """A short, file-name-safe label for a set of overrides (``name`` wins when given)."""
    if overrides.get("name"):
        text = str(overrides["name"])
    else:
        text = "_".join(f"{k}-{v}" for k, v in overrides.items()) or "base"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:60].strip("-.") or "variant"


def parameter_count(params: Mapping[str, Any]) -> int:
    """Parameters of the model ``params`` describe, counted without allocating weights (meta device)."""
    p = {**TRAIN_DEFAULTS, **dict(params), "pretrained": False}
    with torch.device("meta"):
        model = build_model(p, check=False)  # the caller flags an oversized model; counting must not refuse it
    return sum(t.numel() for t in model.parameters())


def train_variant(base: Mapping[str, Any], overrides: Mapping[str, Any], progress: bool = False) -> dict:
    """Train ``base`` + ``overrides`` in-process into ``outputs/<base run>-<label>``; returns its metrics row."""
    from .train import fit

    label = label_of(overrides)
    params = {**dict(base), **{k: v for k, v in overrides.items() if k != "name"}}
    params["run_name"] = f"{base['run_name']}-{label}"
    params["progress"] = progress
    run = config.start_run(params, "03_train")
    t0 = time.time()
    result = fit(params, run)
    return {"name": label, "run": run.name, **{k: v for k, v in overrides.items() if k != "name"},
            "wall_s": time.time() - t0, **result}


def run_candidates(run_name: str, data_root: Any, candidates: Sequence[Mapping[str, Any]],
                   shared: Mapping[str, Any] | None = None, progress: bool = False) -> pd.DataFrame:
    """Execute ``03_train`` through papermill once per candidate (``run-<label>`` folders) and tabulate them.

    A candidate over the 200M-parameter rule is not trained: it appears in the table flagged, with its size.
    """
    from .pipeline import PipelineError, run_pipeline

    rows = []
    base = base_train_params(run_name, data_root)
    for cand in candidates:
        label = label_of(cand)
        over = {**dict(shared or {}), **{k: v for k, v in cand.items() if k != "name"}}
        try:
            n_params = parameter_count({**base, **over})
        except (ModelRuleError, RuntimeError, ValueError) as exc:
            rows.append({"name": label, "error": str(exc)[:200]})
            continue
        if n_params > MAX_PARAMS:
            rows.append({"name": label, "n_params": n_params, "over_200M": True,
                         "error": f"{n_params / 1e6:.0f}M parameters: over the 200M cap, not trained"})
            continue
        sub = f"{run_name}-{label}"
        t0 = time.time()
        try:
            run_pipeline(sub, data_root, overrides={**{k: v for k, v in base.items()
                                                        if k not in ("run_name", "data_root")}, **over},
                         only=["03_train"], progress=progress)
        except PipelineError as exc:
            rows.append({"name": label, "run": sub, "n_params": n_params, "error": str(exc).splitlines()[0]})
            continue
        m = config.read_json(config.run_dir(sub) / "metrics.json")
        rows.append({"name": label, "run": sub, **over, "wall_s": time.time() - t0, **m})
    return leaderboard_frame(rows)


def leaderboard_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Sorted table with the columns people compare first."""
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    if "n_params" in df:
        df["params_M"] = df.n_params / 1e6
        df["over_200M"] = df.n_params > MAX_PARAMS
    else:
        df["over_200M"] = False
    first = [c for c in ("name", "val_auc", "val_tpr@fpr=1e-2", "val_tpr@fpr=1e-3", "val_log_loss", "params_M",
                         "train_time_s", "over_200M", "error") if c in df]
    df = df[first + [c for c in df.columns if c not in first]]
    return df.sort_values("val_auc", ascending=False, na_position="last").reset_index(drop=True) \
        if "val_auc" in df else df


def save_leaderboard(df: pd.DataFrame, folder: Path, name: str = "leaderboard.csv") -> Path:
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return path


def val_curves(board: pd.DataFrame) -> dict:
    """{name: (targets, scores)} from each trained entry's ``val_predictions.csv``, for one ROC plot."""
    curves = {}
    if "run" not in board:
        return curves
    for name, run in zip(board["name"], board["run"]):
        if not isinstance(run, str):
            continue
        path = config.run_dir(run, create=False) / "val_predictions.csv"
        if path.is_file():
            val = pd.read_csv(path)
            curves[name] = (val.target.to_numpy(), val.score.to_numpy())
    return curves
