"""The real-only score: a Gaussian of real training clips' statistics (``features.statistics``); a clip's distance
from it is its anomaly score. A ``Scorer`` (``kind: real_only``, weighted by ``real_only_weight``, statistics chosen by
``real_only_groups``).

``RealOnlyModel.fit`` keeps only rows with target 0 (a test checks that no fake row reaches the fit), standardises
them, and fits a Gaussian with Ledoit-Wolf shrinkage; ``score`` is the squared Mahalanobis distance d mapped to
d / (d + k) for k statistics (a probability-like number in [0, 1), rank-equivalent to the distance). Missing
statistics (no landmarks, no audio) are filled with the real clips' mean, so they add no evidence either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.covariance import LedoitWolf

from ..core.files import read_json, write_json
from ..core.params import RealOnlyParams
from ..features.statistics import STAT_NAMES, clip_statistics, group_columns
from .scorers import Scorer, register_scorer


@dataclass
class RealOnlyModel:
    """A Gaussian of real clips' statistics (standardised, Ledoit-Wolf covariance); see the module docstring."""

    columns: list[str] = field(default_factory=lambda: list(STAT_NAMES))
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    precision: np.ndarray | None = None
    fitted_names: list[str] = field(default_factory=list)

    def fit(self, table: pd.DataFrame) -> "RealOnlyModel":
        """Fit on the rows of ``table`` whose ``target`` is 0 (the others never reach the fit)."""
        real = table[table["target"].to_numpy(float) == 0]
        x = real[self.columns].to_numpy(float)
        keep = [c for c, ok in zip(self.columns, np.isfinite(x).mean(0) > 0.5) if ok]
        if len(real) < 3:  # Ledoit-Wolf shrinkage copes with fewer clips than statistics, not with none
            raise ValueError(f"{len(real)} real clips are too few to fit the real-only score (3 at least)")
        self.columns = keep
        x = real[keep].to_numpy(float)
        self.mean = np.nanmean(x, 0)
        x = np.where(np.isfinite(x), x, self.mean)
        self.scale = x.std(0) + 1e-9
        z = (x - self.mean) / self.scale
        self.precision = LedoitWolf().fit(z).precision_
        self.fitted_names = list(real.video_name)
        return self

    def distance(self, table: pd.DataFrame) -> np.ndarray:
        x = table[self.columns].to_numpy(float)
        x = np.where(np.isfinite(x), x, self.mean)
        z = (x - self.mean) / self.scale
        return np.einsum("ni,ij,nj->n", z, self.precision, z)

    def score(self, table: pd.DataFrame) -> np.ndarray:
        """Anomaly score in [0, 1): d / (d + k) of the squared distance d over k statistics -- 0.5 at the distance
        a real clip has on average, rank-equal to the distance, and (unlike the chi-squared CDF, which rounds
        every far clip to 1.0) without ties among far clips, which TPR at a low FPR would suffer from."""
        d = self.distance(table)
        return d / (d + len(self.columns))

    def state(self) -> dict[str, Any]:
        """Plain lists (what a checkpoint and ``real_only.json`` hold)."""
        return {"columns": self.columns, "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "precision": self.precision.tolist(), "n_real": len(self.fitted_names)}

    @classmethod
    def from_state(cls, d: Mapping[str, Any]) -> "RealOnlyModel":
        return cls(columns=list(d["columns"]), mean=np.array(d["mean"]), scale=np.array(d["scale"]),
                   precision=np.array(d["precision"]))

    def save(self, path: Path) -> None:
        write_json(path, self.state())

    @classmethod
    def load(cls, path: Path) -> "RealOnlyModel":
        return cls.from_state(read_json(path))


def combine(model_scores: Sequence[float], real_only_scores: Sequence[float], weight: float) -> np.ndarray:
    """(1 - weight) * model + weight * real-only: both probability-like, in [0, 1]."""
    return (1 - weight) * np.asarray(model_scores, float) + weight * np.asarray(real_only_scores, float)


def fit_real_only(params: Mapping[str, Any], train: pd.DataFrame, progress: bool = False) -> RealOnlyModel:
    """Statistics of the training clips, then the fit on their real ones only (``real_only_groups``)."""
    columns = group_columns(RealOnlyParams.of(params).real_only_groups)
    return RealOnlyModel(columns=columns).fit(clip_statistics(params, train, progress=progress))


@register_scorer("real_only", weight_key="real_only_weight")
class RealOnlyScorer(Scorer):
    """``RealOnlyModel`` as a part of a detector."""

    def __init__(self, model: RealOnlyModel):
        self.model = model

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "RealOnlyScorer":
        return cls(RealOnlyModel(columns=group_columns(RealOnlyParams.of(params).real_only_groups)))

    def fit(self, params: Mapping[str, Any], clips: pd.DataFrame, progress: bool = False) -> dict[str, Any]:
        self.model.fit(clip_statistics(params, clips, progress=progress))
        return {"real_only_n_real": len(self.model.fitted_names)}

    def score(self, params: Mapping[str, Any], clips: pd.DataFrame, source: Any = None) -> np.ndarray:
        return self.model.score(clip_statistics(params, clips, progress=False, source=source))

    def state(self) -> dict[str, Any]:
        return self.model.state()

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "RealOnlyScorer":
        return cls(RealOnlyModel.from_state(state))

    def run_files(self) -> dict[str, dict[str, Any]]:
        return {"real_only.json": self.model.state()}


def rank_average(*scores: Sequence[float], weights: Sequence[float] | None = None) -> np.ndarray:
    """Average of the scores' ranks scaled to [0, 1] (a partner for a model's probabilities: scales differ)."""
    ranks = [stats.rankdata(np.asarray(s, float)) / max(1, len(s)) for s in scores]
    w = np.ones(len(ranks)) if weights is None else np.asarray(weights, float)
    return np.average(np.stack(ranks), axis=0, weights=w)
