"""Self-supervised scorers trained on real clips only: each makes its own negatives from real media, so no fake of
any kind reaches a fit. One module per model, one interface (:class:`~.common.SelfSupModel`):

* ``voice``: real speech windows against the same speech re-synthesised by weight-free vocoders.
* ``sync``: which audio offset belongs to a run of mouth frames (the clip's own shifted audio as negatives).
* ``temporal``: natural runs of face and mouth crops against the same runs reordered, resampled or jittered.

``Model.fit(real_paths, params) -> model``, ``model.score(paths) -> np.ndarray`` (higher = more likely fake),
``model.state_dict()`` (a plain dict of config and CPU tensors, to keep inside any checkpoint) and
:func:`load_state_dict` to rebuild whichever model a dict holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .common import SelfSupModel
from .sync import SyncModel
from .temporal import TemporalModel
from .voice import VoiceModel

__all__ = ["MODELS", "SelfSupModel", "VoiceModel", "SyncModel", "TemporalModel", "load_state_dict", "fit"]

MODELS: dict[str, type[SelfSupModel]] = {VoiceModel.kind: VoiceModel, SyncModel.kind: SyncModel,
                                        TemporalModel.kind: TemporalModel}


def fit(kind: str, real_paths: Any, params: Mapping[str, Any] | None = None) -> SelfSupModel:
    """Trains the model ``kind`` ("voice", ...) on real clips."""
    if kind not in MODELS:
        raise ValueError(f"unknown self-supervised model {kind!r}; choose from {sorted(MODELS)}")
    return MODELS[kind].fit(real_paths, params)


def load_state_dict(state: Mapping[str, Any], device: str = "cpu") -> SelfSupModel:
    """The model a :meth:`SelfSupModel.state_dict` holds (its ``kind`` picks the class)."""
    kind = state.get("kind")
    if kind not in MODELS:
        raise ValueError(f"unknown self-supervised model {kind!r}; choose from {sorted(MODELS)}")
    return MODELS[kind].from_state_dict(state, device=device)
