"""Candidates trained from one base configuration, and their leaderboard: the one candidate loop.

``iter_candidates`` is the loop every comparison runs (04's variants, 05's protocols and backbones): it merges
``base`` + ``shared`` + a candidate's overrides, counts the model's parameters without allocating it, and marks a
candidate that breaks the 200M rule (or cannot be built) so it is listed, not trained. Each trained candidate is
its own run folder, ``outputs/<run>-<label>``, so every number in a leaderboard traces back to the run behind it.
With ``seeds`` a candidate is trained once per training seed (``seed_list``), each seed its own run folder.
"""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from ..core.config import read_yaml
from ..core.files import read_json
from ..core.paths import run_dir
from ..core.runner import PipelineError, run_pipeline
from ..core.runs import start_run
from ..core.schema import TRAIN_DEFAULTS
from ..models.registry import parameter_count
from ..models.rules import MAX_PARAMS, ModelRuleError
from ..training.loop import fit


def base_train_params(run_name: str, data_root: Any = None) -> dict:
    """The training parameters a run's ``03_train`` used (its saved record), else the defaults."""
    saved = run_dir(run_name, create=False) / "params" / "03_train.yaml"
    if not saved.is_file():
        warnings.warn(f"{saved} not found: run 03_train first, or the candidates start from the training defaults "
                      "(plus `shared`) rather than your 03 parameters", stacklevel=2)
    params = {**TRAIN_DEFAULTS, **(read_yaml(saved) if saved.is_file() else {})}
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


def seed_list(seeds: int | Sequence[int] | None, own_seed: int) -> list[int]:
    """Training seeds: a count ``n`` (None: 1) is ``own_seed`` and the ``n - 1`` seeds after it, so the first seed is
    the one a single run uses; a list is taken as given (repeats dropped, order kept)."""
    if seeds is None or isinstance(seeds, (int, np.integer)):
        n = 1 if seeds is None else int(seeds)
        if n < 1:
            raise ValueError(f"seeds must be a count >= 1 or a list of seeds, got {seeds!r}")
        return [int(own_seed) + i for i in range(n)]
    out = list(dict.fromkeys(int(s) for s in seeds))
    if not out:
        raise ValueError("seeds is an empty list")
    return out


def seed_suffix(seed: int, own_seed: int) -> str:
    """Run-label suffix of a training seed: none for the candidate's own seed (a 1-seed run's folders are then the
    first seed of a 3-seed run, and resume), ``-s<seed>`` otherwise."""
    return "" if int(seed) == int(own_seed) else f"-s{int(seed)}"


def iter_candidates(base: Mapping[str, Any], candidates: Sequence[Mapping[str, Any]],
                    shared: Mapping[str, Any] | None = None,
                    seeds: int | Sequence[int] | None = None) -> Iterator[tuple[str, dict, dict, dict]]:
    """Yields ``(label, overrides, params, row)`` per candidate: ``params`` = base + shared + overrides; ``row`` holds
    ``name`` and ``n_params``, or ``error`` for a candidate that must not be trained (over 200M, not buildable).

    With ``seeds`` (a count or a list, ``seed_list``; counted from the candidate's own ``seed``) a trainable candidate
    is yielded once per seed: ``params["seed"]`` and ``overrides["seed"]`` set, ``row["seed"]`` added, and ``label``
    (the run folder's part) suffixed ``-s<seed>`` for every seed but the own one (``seed_suffix``); ``row["name"]``
    stays the candidate's label, which is what leaderboards group the seeds by. A refused candidate is yielded once.
    """
    for label, over, params, row in _candidates(base, candidates, shared):
        if seeds is None or "error" in row:
            yield label, over, params, row
            continue
        own = int(params["seed"])
        for seed in seed_list(seeds, own):
            yield (label + seed_suffix(seed, own), {**over, "seed": seed}, {**params, "seed": seed},
                   {**row, "seed": seed})


def _candidates(base: Mapping[str, Any], candidates: Sequence[Mapping[str, Any]],
                shared: Mapping[str, Any] | None = None) -> Iterator[tuple[str, dict, dict, dict]]:
    for cand in candidates:
        label = label_of(cand)
        over = {**dict(shared or {}), **{k: v for k, v in cand.items() if k != "name"}}
        params = {**dict(base), **over}
        row: dict[str, Any] = {"name": label}
        try:
            n_params = parameter_count(params)
        except (ModelRuleError, RuntimeError, ValueError) as exc:
            yield label, over, params, {**row, "error": str(exc)[:200]}
            continue
        row["n_params"] = n_params
        if n_params > MAX_PARAMS:
            row.update(over_200M=True, error=f"{n_params / 1e6:.0f}M parameters: over the 200M cap, not trained")
        yield label, over, params, row


def train_variant(base: Mapping[str, Any], overrides: Mapping[str, Any], progress: bool = False) -> dict:
    """Train ``base`` + ``overrides`` in-process into ``outputs/<base run>-<label>``; returns its metrics row."""
    rows = run_in_process(base, [overrides], progress=progress)
    return rows[0]


def run_in_process(base: Mapping[str, Any], candidates: Sequence[Mapping[str, Any]],
                   shared: Mapping[str, Any] | None = None, progress: bool = False,
                   seeds: int | Sequence[int] | None = None) -> list[dict]:
    """Train each candidate in this process (``fit``) into ``outputs/<base run>-<label>``: one row per candidate
    (per candidate and seed with ``seeds``, see ``iter_candidates``)."""
    rows = []
    for label, over, params, row in iter_candidates(base, candidates, shared, seeds):
        if "error" in row:
            rows.append(row)
            continue
        params.update(run_name=f"{base['run_name']}-{label}", progress=progress)
        run = start_run(params, "03_train")
        t0 = time.time()
        result = fit(params, run)
        rows.append({**row, "run": run.name, **over, "wall_s": time.time() - t0, **result})
    return rows


def run_candidates(run_name: str, data_root: Any, candidates: Sequence[Mapping[str, Any]],
                   shared: Mapping[str, Any] | None = None, progress: bool = False,
                   seeds: int | Sequence[int] | None = None) -> pd.DataFrame:
    """Execute ``03_train`` through papermill once per candidate (``run-<label>`` folders) and tabulate them.

    A candidate over the 200M-parameter rule is not trained: it appears in the table flagged, with its size.
    With ``seeds``, once per candidate and seed (one row each, ``seed`` column; not aggregated here).
    """
    rows = []
    base = base_train_params(run_name, data_root)
    for label, over, _, row in iter_candidates(base, candidates, shared, seeds):
        if "error" in row:
            rows.append(row)
            continue
        sub = f"{run_name}-{label}"
        t0 = time.time()
        try:
            run_pipeline(sub, data_root, overrides={**{k: v for k, v in base.items()
                                                        if k not in ("run_name", "data_root")}, **over},
                         only=["03_train"], progress=progress)
        except PipelineError as exc:
            rows.append({**row, "run": sub, "error": str(exc).splitlines()[0]})
            continue
        m = read_json(run_dir(sub) / "metrics.json")
        rows.append({**row, "run": sub, **over, "wall_s": time.time() - t0, **m})
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
        path = run_dir(run, create=False) / "val_predictions.csv"
        if path.is_file():
            val = pd.read_csv(path)
            curves[name] = (val.target.to_numpy(), val.score.to_numpy())
    return curves
