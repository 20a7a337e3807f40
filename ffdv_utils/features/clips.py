"""The features of a list of clips, from the cache: ``clip_features`` extracts what is missing, ``open_features``
only reads what an earlier extraction left (it never decodes a clip).

Both key the cache by the feature parameters of a run (``features.params``), so training, scoring and every
comparison read the same entries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..core.config import params_hash
from ..core.paths import cache_dir
from ..core.schema import FEATURES, with_defaults
from .cache import FaceStore, MelStore
from .extract import extract_faces, extract_mels
from .params import face_params, mel_params


def cache_folder(params: Mapping[str, Any], kind: str) -> Path:
    """``<cache>/<kind>-<hash>``: where the ``mel`` or ``faces`` features of ``params`` live."""
    resolved = mel_params(params) if kind == "mel" else face_params(params)
    return cache_dir() / f"{kind}-{params_hash(resolved)}"


def _pack(stores: Mapping[str, Any], names: Sequence[str], size: int, drop_failed: bool) -> dict:
    failed = np.ones(len(names), bool)
    for store in stores.values():
        failed &= np.array([store.status(n) == "error" for n in names], bool)
    keep = ~failed if drop_failed else np.ones(len(names), bool)
    kept = [n for n, k in zip(names, keep) if k]
    out: dict[str, Any] = {"failed": failed, "keep": keep, "stores": dict(stores)}
    # why each failed clip failed, from the manifests (one message per modality that could not be decoded)
    errors: dict[str, str] = {}
    for store in stores.values() if failed.any() else ():  # (a manifest table is not free: only when needed)
        table = store.table
        bad = table[(table.status == "error") & table.video_name.isin(set(names))]
        for name, msg in zip(bad.video_name, bad.error):
            errors[name] = f"{errors[name]}; {msg}"[:400] if name in errors else str(msg)[:200]
    out["errors"] = {n: errors[n] for n, f in zip(names, failed) if f and n in errors}
    if "mel" in stores:
        out["mels"] = stores["mel"].packed(kept, size, size)
        out["has_audio"] = np.array([stores["mel"].has_audio(n) for n in kept], bool)
    if "faces" in stores:
        out["faces"] = stores["faces"]
    return out


def clip_features(params: Mapping[str, Any], clips: pd.DataFrame, inputs: Sequence[str], progress: bool = True,
                  errors_csv: Any = None, drop_failed: bool = False, source: Any = None) -> dict:
    """Extract (or read back from the cache) what ``inputs`` need for ``clips`` (video_name, path).

    Returns ``mels`` (N, H, W) uint8 memory map, ``has_audio`` (N,), ``faces`` (a FaceStore), as needed, and
    ``failed`` (N,): clips none of whose needed modalities could be decoded, with ``errors`` {name: why}. With
    ``drop_failed`` those clips are left out (``keep`` says which rows of ``clips`` remain) before the arrays are
    packed, so nothing is copied. Extraction is resumable and keyed by the feature parameters, so calling this
    again costs a cache lookup.

    ``source`` (a ``features.memory.MemoryFeatures``) computes the features in memory instead, by the same
    functions: the same return value (``mels`` an in-memory array), and no file read or written (``errors_csv``
    is not written either). None: the on-disk cache.
    """
    p = with_defaults(params, FEATURES)
    stores: dict[str, Any] = {}
    wanted = {"mel": ("mel" in inputs or "has_audio" in inputs), "faces": "faces" in inputs}
    if source is not None:
        for kind, resolve in (("mel", mel_params), ("faces", face_params)):
            if wanted[kind]:
                stores[kind] = source.store(kind, resolve(p), clips)
        return _pack(stores, list(clips.video_name), int(p["image_size"]), drop_failed)
    if wanted["mel"]:
        stores["mel"] = extract_mels(clips[["video_name", "path"]], mel_params(p), cache_dir(),
                                     workers=p["feature_workers"], progress=progress, errors_csv=errors_csv)
    if wanted["faces"]:
        stores["faces"] = extract_faces(clips[["video_name", "path"]], face_params(p), cache_dir(),
                                        workers=p["feature_workers"], progress=progress, errors_csv=errors_csv)
    return _pack(stores, list(clips.video_name), int(p["image_size"]), drop_failed)


def open_features(params: Mapping[str, Any], names: Sequence[str], inputs: Sequence[str] = ("mel",),
                  drop_failed: bool = False) -> dict:
    """The cached features of ``names`` without extracting anything (same return value as ``clip_features``).

    Raises FileNotFoundError naming the cache folder when the features of these parameters were never extracted;
    a clip the cache has not seen reads as a zero image (``has_audio`` False, status ``missing``).
    """
    p = with_defaults(params, FEATURES)
    stores: dict[str, Any] = {}
    for kind, cls in (("mel", MelStore), ("faces", FaceStore)):
        wanted = kind in inputs or (kind == "mel" and "has_audio" in inputs)
        if not wanted:
            continue
        folder = cache_folder(p, kind)
        if not (folder / "params.json").is_file():
            raise FileNotFoundError(f"no {kind} features for these parameters at {folder}: extract them first "
                                    "(notebook 02_features or features.clip_features)")
        stores[kind] = cls(folder)
    return _pack(stores, list(names), int(p["image_size"]), drop_failed)


def extraction_report(params: Mapping[str, Any], clips: pd.DataFrame, inputs: Sequence[str]) -> dict:
    """Counts of ok / no_audio / error per feature kind for ``clips``, read from the cache manifests (nothing is
    extracted: run ``clip_features`` first)."""
    report: dict[str, Any] = {"n_clips": int(len(clips)), "status": {}}
    feats = open_features(params, list(clips.video_name), inputs)
    wanted = set(clips.video_name)
    for kind, store in feats["stores"].items():
        table = store.table[store.table.video_name.isin(wanted)]
        report["status"][kind] = {str(k): int(v) for k, v in table.status.value_counts().items()}
        report[f"{kind}_cache"] = str(store.root)
        if kind == "faces":
            found = [float(store.face_found(n).mean()) for n in clips.video_name if n in store]
            report["face_found_rate"] = float(np.mean(found)) if found else float("nan")
    return report
