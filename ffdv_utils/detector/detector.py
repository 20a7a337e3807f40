"""The detector: the final score of a run as one object -- the network, the scores joined to it (``Part``s: the
real-only score, self-supervised models...) and how they are joined -- trained by ``training.fit``, saved as one
``best.pt`` (``models.checkpoint.Checkpoint``), and loaded by scoring, the test API and the protocols alike.

The joined score is ``(1 - sum of the parts' weights) * network + sum of weight * part``: every part is probability-
like, in [0, 1], so the join is too. A run without parts scores with its network alone.

Example:
    >>> detector = load_detector("my_run", device="cpu")
    >>> detector.weights
    {'real_only': 0.95}
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from torch import nn

from ..models.checkpoint import Checkpoint, checkpoint_path, load_network
from . import real_only  # noqa: F401  (registers the real-only scorer)
from .scorers import Part

NETWORK = "model"  # the network's name among a detector's scores (``model_score`` beside ``real_only_score``)


@dataclass
class Detector:
    """A run's whole score.

    Attributes:
        network: the trained network (``models.registry.create_model``).
        params: the resolved parameters it was trained with (features are made from these).
        parts: the scores joined to the network, with their weights.
        checkpoint: what it was loaded from or last saved as (epoch, metrics, parameter count, initial weights).
    """

    network: nn.Module
    params: dict[str, Any]
    parts: list[Part] = field(default_factory=list)
    checkpoint: Checkpoint | None = None

    @property
    def weights(self) -> dict[str, float]:
        """{part kind: weight in the join}; the network has the rest."""
        return {p.kind: p.weight for p in self.parts}

    def fit_parts(self, clips: pd.DataFrame, progress: bool = False) -> dict[str, Any]:
        """Fit every part on the training clips (video_name, path, target); returns what each fit records."""
        out: dict[str, Any] = {}
        for part in self.parts:
            out.update(part.scorer.fit(self.params, clips, progress=progress))
        return out

    def part_scores(self, clips: pd.DataFrame, params: Mapping[str, Any] | None = None,
                    source: Any = None) -> dict[str, np.ndarray]:
        """{part kind: scores of ``clips`` in their order} (features from the cache, or from ``source``: see
        ``features.clips.clip_features``; a scorer is handed ``source`` only when there is one)."""
        p = self.params if params is None else params
        kw = {} if source is None else {"source": source}
        return {part.kind: np.asarray(part.scorer.score(p, clips, **kw), float) for part in self.parts}

    def join(self, network_scores: np.ndarray, part_scores: Mapping[str, np.ndarray]) -> np.ndarray:
        """The final score from the network's scores and each part's (same clips, same order)."""
        out = (1 - sum(p.weight for p in self.parts)) * np.asarray(network_scores, float)
        for part in self.parts:
            out = out + part.weight * np.asarray(part_scores[part.kind], float)
        return out

    def to_checkpoint(self, record: Checkpoint) -> Checkpoint:
        """``record`` (epoch, metrics, ...) with this detector's network weights, parameters and parts."""
        return Checkpoint(network=self.network.state_dict(), params=dict(self.params),
                          parts=tuple(p.to_dict() for p in self.parts), epoch=record.epoch, metrics=record.metrics,
                          n_params=record.n_params, pretrained=record.pretrained)

    def save(self, path: Path, record: Checkpoint) -> None:
        """Write the detector with ``record``'s epoch and metrics to ``path`` (atomically)."""
        ckpt = self.to_checkpoint(record)
        ckpt.write(path)
        self.checkpoint = ckpt

    @classmethod
    def from_checkpoint(cls, saved: Checkpoint, device: str = "auto") -> "Detector":
        network, params = load_network(saved, device)
        return cls(network, params, [Part.from_dict(d) for d in saved.parts], saved)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> "Detector":
        """The detector saved in the checkpoint file ``path`` (network in eval mode on ``device``)."""
        return cls.from_checkpoint(Checkpoint.read(path), device)


def load_detector(run_or_checkpoint: str | os.PathLike, device: str = "auto") -> Detector:
    """The detector of a run (name or folder) or a checkpoint file (``models.checkpoint.checkpoint_path``)."""
    return Detector.load(checkpoint_path(run_or_checkpoint), device)
