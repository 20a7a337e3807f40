"""Features computed in memory for the clips of one call, nothing read from or written to the cache: the feature
source of the test API (``inference.score.VideoScorer``).

``clip_features(..., source=MemoryFeatures())`` returns what it returns from the cache -- mel images packed to the
run's size, ``has_audio``, a face store, ``failed`` and ``errors`` -- computed by the functions extraction runs
(``features.extract.compute_entry``), so the numbers are the cached path's. The stores have the read interface of
``MelStore`` and ``FaceStore`` (``get``, ``has_audio``, ``face_found``, ``mouths``, ``landmarks``, ``entry``,
``status``, ``table``), so the batch reader, the detector's parts and the statistics read them unchanged.

A source computes each (feature parameters, clip) once and keeps it for its own lifetime: the network, the profile
part and the real-only statistics of one call share one decode of a clip. Make one per call (or per chunk of
clips): what it keeps grows with the clips given to it, never with the cache or earlier calls.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import cv2
import numpy as np
import pandas as pd

from ..core.config import params_hash
from .cache import FaceStore, MelStore
from .extract import compute_entry

MANIFEST_FIELDS = ["video_name", "has_audio", "status", "error", "note", "seconds", "shape", "source"]


class _MemoryStore:
    """The state a cache store reads from its folder (parameters, manifest rows), held in memory instead."""

    def _setup(self, params: Mapping[str, Any], rows: Mapping[str, dict], arrays: Mapping[str, Any]) -> None:
        self.root = None
        self.params = dict(params)
        self.key = params_hash(self.params)
        self.stats = {"kind": self.kind, "key": self.key, "clips": len(rows), "cached": 0, "computed": len(rows),
                      "in_memory": True}
        self.rows, self.arrays = dict(rows), dict(arrays)
        self._status = {n: r["status"] for n, r in self.rows.items()}
        self._source = {n: "" for n in self.rows}

    def reload(self) -> None:
        """Nothing to re-read: the rows are this store's own."""

    @property
    def table(self) -> pd.DataFrame:
        """The rows as a manifest table (video_name, has_audio, status, error, ...)."""
        return pd.DataFrame(list(self.rows.values()), columns=MANIFEST_FIELDS)


class MemoryMelStore(_MemoryStore, MelStore):
    """A ``MelStore`` over mel images held in memory ({name: uint8 image}; rows as the manifest's)."""

    def __init__(self, params: Mapping[str, Any], rows: Mapping[str, dict], images: Mapping[str, np.ndarray]):
        self._setup(params, rows, images)

    def get(self, name: str) -> np.ndarray:
        img = self.arrays.get(name) if self._status.get(name) == "ok" else None
        return img if img is not None else np.zeros(self.fallback_shape, np.uint8)

    def packed(self, names: Iterable[str], height: int, width: int, progress: bool = False) -> np.ndarray:
        """All ``names`` resized to (height, width) as ``MelStore.packed`` does, in an array (nothing written)."""
        names = list(names)
        out = np.empty((len(names), height, width), np.uint8)
        for i, name in enumerate(names):
            img = self.get(name)
            if img.shape != (height, width):
                img = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
            out[i] = img
        return out


class MemoryFaceStore(_MemoryStore, FaceStore):
    """A ``FaceStore`` over face entries held in memory ({name: the arrays of ``features.faces.face_entry``})."""

    def __init__(self, params: Mapping[str, Any], rows: Mapping[str, dict], entries: Mapping[str, dict]):
        self._setup(params, rows, entries)

    def entry(self, name: str, keys: Iterable[str] | None = None) -> dict[str, np.ndarray] | None:
        """The clip's arrays (those named in ``keys``, or all), already as the cache returns them (decoded from the
        stored ``face_codec``: ``features.cache.as_stored``); None when the clip failed or is unknown."""
        got = self.arrays.get(name) if self._status.get(name) == "ok" else None
        if got is None or keys is None:
            return got
        return {k: got[k] for k in keys if k in got}


class MemoryFeatures:
    """A feature source for ``clip_features``: each clip's features computed in this process, kept in memory for
    this object's lifetime and shared by every reader of the same parameters; no file is read or written.

    Example:
        >>> source = MemoryFeatures()
        >>> feats = clip_features(params, clips, ("mel",), source=source)
    """

    def __init__(self) -> None:
        self.computed: dict[tuple[str, str, str, str], tuple[dict, Any]] = {}

    def store(self, kind: str, params: Mapping[str, Any], clips: pd.DataFrame) -> MelStore | FaceStore:
        """A ``MemoryMelStore`` (``kind`` mel) or ``MemoryFaceStore`` (faces) over ``clips`` (video_name, path),
        computed with the resolved feature ``params`` (``mel_params`` / ``face_params``). Like the cache, the first
        row of a repeated name is the one computed."""
        key = params_hash(params)
        rows: dict[str, dict] = {}
        arrays: dict[str, Any] = {}
        for name, path in zip(clips["video_name"].astype(str), clips["path"]):
            if name in rows:
                continue
            path = None if pd.isna(path) else str(path)
            slot = (kind, key, name, path or "")
            if slot not in self.computed:
                self.computed[slot] = compute_entry(kind, name, path, params)
            rows[name], arrays[name] = self.computed[slot]
        cls = MemoryMelStore if kind == "mel" else MemoryFaceStore
        return cls(params, rows, arrays)
