"""Leave-source-out evaluation of a self-supervised scorer on a labelled folder (``labels.csv`` + ``clips/``).

Folds: ``StratifiedGroupKFold(n_splits, shuffle=True, random_state=0)`` over the rows of ``labels.csv`` in file
order, grouped by ``source``. Each fold fits on the real clips of its training sources only (the fakes of those
sources are never read) and scores every clip of its test sources.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from .common import SelfSupModel, fill_missing

__all__ = ["read_pool", "source_folds", "real_training_paths", "leave_source_out", "summarise"]


def read_pool(pool: str | Path, group: str = "source") -> tuple[pd.DataFrame, list[Path]]:
    """(labels with ``video_name``, ``target`` and ``group``, the clip paths in row order)."""
    pool = Path(pool)
    labels = pd.read_csv(pool / "labels.csv")
    missing = {"video_name", "target", group} - set(labels.columns)
    if missing:
        raise ValueError(f"{pool / 'labels.csv'} lacks columns {sorted(missing)}")
    return labels, [pool / "clips" / n for n in labels["video_name"]]


def source_folds(labels: pd.DataFrame, n_splits: int = 5, group: str = "source") -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, test rows) per fold; no group on both sides."""
    y = labels["target"].to_numpy()
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=0)
    return [(tr, te) for tr, te in cv.split(np.zeros((len(y), 1)), y=y, groups=labels[group].to_numpy())]


def real_training_paths(labels: pd.DataFrame, paths: Sequence[Path], rows: np.ndarray) -> list[Path]:
    """The real clips among ``rows``: the only clips a fit may see."""
    rows = np.asarray(rows)
    real = rows[labels["target"].to_numpy()[rows] == 0]
    assert (labels["target"].to_numpy()[real] == 0).all()
    return [paths[i] for i in real]


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    return float(roc_auc_score(y, s)) if len(np.unique(y)) == 2 else float("nan")


def leave_source_out(fit: Callable[[list[Path], Mapping[str, Any]], SelfSupModel], labels: pd.DataFrame,
                     paths: Sequence[Path], seeds: Sequence[int] = (0, 1, 2), params: Mapping[str, Any] | None = None,
                     n_splits: int = 5, group: str = "source", name: str = "model",
                     log: Callable[[str], None] | None = None) -> pd.DataFrame:
    """One row per (seed, fold): sizes, AUC on the test sources, failures and wall time, plus one ``fold='pooled'``
    row per seed (every clip scored once by the fold that held it out)."""
    y = labels["target"].to_numpy()
    rows = []
    for seed in seeds:
        pooled = np.full(len(y), np.nan)
        for k, (tr, te) in enumerate(source_folds(labels, n_splits, group)):
            t0 = time.time()
            train = real_training_paths(labels, paths, tr)
            model = fit(train, {**dict(params or {}), "seed": int(seed)})
            fit_s = time.time() - t0
            raw = model.score([paths[i] for i in te])
            s = fill_missing(raw)
            pooled[te] = s
            auc = _auc(y[te], s)
            rows.append({"model": name, "seed": seed, "fold": str(k), "n_train_real": len(train), "n_test": len(te),
                         "n_test_real": int((y[te] == 0).sum()), "n_test_sources": labels[group].iloc[te].nunique(),
                         "unscored": int(np.isnan(raw).sum()), "auc": auc, "fit_s": round(fit_s, 1),
                         "total_s": round(time.time() - t0, 1)})
            if log:
                log(f"{name} seed {seed} fold {k}: AUC {auc:.3f} ({len(train)} real train clips, {len(te)} test, "
                    f"{time.time() - t0:.0f} s)")
        rows.append({"model": name, "seed": seed, "fold": "pooled", "n_train_real": np.nan, "n_test": len(y),
                     "n_test_real": int((y == 0).sum()), "n_test_sources": labels[group].nunique(),
                     "unscored": np.nan, "auc": _auc(y, pooled), "fit_s": np.nan, "total_s": np.nan})
    return pd.DataFrame(rows)


def summarise(folds: pd.DataFrame) -> pd.DataFrame:
    """Per model: mean +- sd over seeds of the mean fold AUC, and of the pooled AUC."""
    out = []
    for model, d in folds.groupby("model", sort=False):
        per_fold = d[d["fold"] != "pooled"]
        mean_fold = per_fold.groupby("seed")["auc"].mean()
        pooled = d[d["fold"] == "pooled"].set_index("seed")["auc"]
        out.append({"model": model, "seeds": len(mean_fold), "folds": per_fold["fold"].nunique(),
                    "mean_fold_auc": round(float(mean_fold.mean()), 4),
                    "mean_fold_auc_sd": round(float(mean_fold.std(ddof=1)) if len(mean_fold) > 1 else 0.0, 4),
                    "pooled_auc": round(float(pooled.mean()), 4),
                    "pooled_auc_sd": round(float(pooled.std(ddof=1)) if len(pooled) > 1 else 0.0, 4),
                    "fold_auc_min": round(float(per_fold["auc"].min()), 4),
                    "fold_auc_max": round(float(per_fold["auc"].max()), 4),
                    "fit_s_mean": round(float(per_fold["fit_s"].mean()), 1)})
    return pd.DataFrame(out)
