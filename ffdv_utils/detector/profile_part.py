"""The profile part: the profile detector's two signatures (``models.profile``: the speech spectrum's shape and the
steadiness of the face's sharpness) scored by a logistic regression fitted on the training clips, joined to the
network's score. A ``Scorer`` (``kind: profile``, weighted by ``profile_weight``; its audio image is
``profile_mel_preset``, independent of the network's).

Why a part and not only a model type: on real-world clips of sources never seen in training the signatures carry
further than the backbones' embeddings, while on the workspace's own sample (one recording pipeline for every clip)
they carry nothing and the network does the work (docs/models.md, "Real media first"). Joined, each covers the other's
blind side; the weight is chosen on held-out protocols (05's weight sweep), never on a test split.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from ..core.params import ProfilePartParams
from ..core.schema import FEATURES, with_defaults
from ..features.batches import ClipDataset, prepare_batch
from ..features.clips import clip_features
from ..models.profile import sharpness_signature, spectral_profile
from .scorers import Scorer, register_scorer

BINS = 32


def profile_signatures(params: Mapping[str, Any], clips: pd.DataFrame, batch: int = 32,
                       progress: bool = False, source: Any = None) -> np.ndarray:
    """(N, 32 + 8) the signatures of ``clips`` (video_name, path): the spectral profile of the ``profile_mel_preset``
    mel image and the sharpness signature of the run's face crops (extracted into the cache when missing; computed
    in memory with a ``source``: ``features.clips.clip_features``)."""
    p = with_defaults(params, FEATURES)
    p["mel_preset"] = ProfilePartParams.of(params).profile_mel_preset
    feats = clip_features(p, clips, ("mel", "faces"), progress=progress, source=source)
    names = list(clips.video_name)
    ds = ClipDataset(names, np.zeros(len(names)), mels=feats["mels"], has_audio=feats["has_audio"],
                     faces=feats["faces"])
    out = []
    with torch.no_grad():
        for start in range(0, len(names), batch):
            b = prepare_batch(ds.get_batch(list(range(start, min(start + batch, len(names))))))
            out.append(torch.cat([spectral_profile(b["mel"], BINS), sharpness_signature(b["faces"])], 1).numpy())
    return np.concatenate(out) if out else np.zeros((0, BINS + 8))


@register_scorer("profile", weight_key="profile_weight")
class ProfileScorer(Scorer):
    """A standardised logistic regression (C = 0.1) on ``profile_signatures``, fitted on real and fake training
    clips."""

    C = 0.1

    def __init__(self, mel_preset: str = "wide", mean: Any = None, scale: Any = None, coef: Any = None,
                 intercept: float = 0.0, n_fit: int = 0):
        self.mel_preset = mel_preset
        self.mean = None if mean is None else np.asarray(mean, float)
        self.scale = None if scale is None else np.asarray(scale, float)
        self.coef = None if coef is None else np.asarray(coef, float)
        self.intercept, self.n_fit = float(intercept), int(n_fit)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "ProfileScorer":
        return cls(ProfilePartParams.of(params).profile_mel_preset)

    def _params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {**dict(params), "profile_mel_preset": self.mel_preset}

    def fit(self, params: Mapping[str, Any], clips: pd.DataFrame, progress: bool = False) -> dict[str, Any]:
        from sklearn.linear_model import LogisticRegression

        x = profile_signatures(self._params(params), clips, progress=progress)
        y = (clips.target.to_numpy(float) > 0.5).astype(int)
        if len(np.unique(y)) < 2:
            raise ValueError("the profile part needs real and fake training clips")
        self.mean, self.scale = x.mean(0), x.std(0) + 1e-9
        lr = LogisticRegression(C=self.C, max_iter=5000).fit((x - self.mean) / self.scale, y)
        self.coef, self.intercept, self.n_fit = lr.coef_[0], float(lr.intercept_[0]), len(y)
        return {"profile_n_fit": self.n_fit}

    def score(self, params: Mapping[str, Any], clips: pd.DataFrame, source: Any = None) -> np.ndarray:
        x = profile_signatures(self._params(params), clips, source=source)
        z = (x - self.mean) / self.scale @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def state(self) -> dict[str, Any]:
        return {"mel_preset": self.mel_preset, "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "coef": self.coef.tolist(), "intercept": self.intercept, "n_fit": self.n_fit}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "ProfileScorer":
        return cls(**state)
