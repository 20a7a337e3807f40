"""Scores fitted beside the network and joined to its score (real-only statistics, self-supervised models...).

A scorer is one class with ``register_scorer``: its ``kind``, the flat parameter that holds its weight in the join
(``weight_key``), and four methods -- ``from_params`` (settings checked before any training), ``fit`` on the training
clips (a real-only scorer reads only their real ones), ``score`` of clips, and ``state`` / ``from_state`` for the
checkpoint. ``scorers_from_params`` gives the parts a run's parameters ask for: every registered scorer whose weight
is above 0. The detector (``detector.detector``) joins them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
import pandas as pd

from ..core.errors import ConfigError


class Scorer(ABC):
    """The contract of a score joined to the network's (DeepfakeBench's detector contract, for clip scores)."""

    kind: ClassVar[str] = ""
    weight_key: ClassVar[str] = ""

    @classmethod
    @abstractmethod
    def from_params(cls, params: Mapping[str, Any]) -> "Scorer":
        """An unfitted scorer with its settings from a run's parameters; bad settings fail here."""

    @abstractmethod
    def fit(self, params: Mapping[str, Any], clips: pd.DataFrame, progress: bool = False) -> dict[str, Any]:
        """Fit on the training clips (video_name, path, target); returns what a run records about the fit."""

    @abstractmethod
    def score(self, params: Mapping[str, Any], clips: pd.DataFrame, source: Any = None) -> np.ndarray:
        """Scores in [0, 1] (higher: more likely fake) of ``clips`` (video_name, path), in their order; features
        from the cache, or from ``source`` (``features.memory.MemoryFeatures``, the test API: nothing written)."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """Plain values (lists, numbers, strings): what the checkpoint holds."""

    @classmethod
    @abstractmethod
    def from_state(cls, state: Mapping[str, Any]) -> "Scorer":
        """The fitted scorer back from ``state()``."""

    def run_files(self) -> dict[str, dict[str, Any]]:
        """Extra JSON files a run folder gets ({file name: content}); none by default."""
        return {}


SCORERS: dict[str, type[Scorer]] = {}
S = TypeVar("S", bound=type[Scorer])


def register_scorer(kind: str, weight_key: str) -> Callable[[S], S]:
    """Class decorator: register a ``Scorer`` as ``kind``, weighted in the join by the parameter ``weight_key``."""

    def decorate(cls: S) -> S:
        cls.kind, cls.weight_key = kind, weight_key
        SCORERS[kind] = cls
        return cls

    return decorate


def scorer_class(kind: str) -> type[Scorer]:
    if kind not in SCORERS:
        raise ConfigError(f"a checkpoint part of kind {kind!r} is not registered (known: {', '.join(SCORERS)}); "
                          "import the module that defines it")
    return SCORERS[kind]


@dataclass
class Part:
    """One scorer of a detector and its weight in the join."""

    scorer: Scorer
    weight: float

    @property
    def kind(self) -> str:
        return self.scorer.kind

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "weight": self.weight, "state": self.scorer.state()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Part":
        return cls(scorer_class(d["kind"]).from_state(d["state"]), float(d["weight"]))


def scorers_from_params(params: Mapping[str, Any]) -> list[Part]:
    """Unfitted parts for every registered scorer whose weight parameter is above 0; weights in [0, 1], their sum
    at most 1 (the network keeps the rest)."""
    parts = []
    for kind, cls in SCORERS.items():
        weight = float(params.get(cls.weight_key) or 0)
        if not 0 <= weight <= 1:
            raise ConfigError(f"{cls.weight_key} must be in [0, 1] (1: the {kind} score alone), got {weight}")
        if weight > 0:
            parts.append(Part(cls.from_params(params), weight))
    total = sum(p.weight for p in parts)
    if total > 1 + 1e-9:
        raise ConfigError(f"the weights of the joined scores add up to {total:g} > 1: "
                          + ", ".join(f"{SCORERS[p.kind].weight_key}={p.weight:g}" for p in parts))
    return parts
