"""What a run's parameters need from the feature cache, extracted in one go, whole or one shard at a time
(``python -m ffdv_utils extract -f PRESET [--shard K/N]``).

``extraction_plan`` lists the feature folders a preset reads: the network's inputs (``mel``, ``faces``) at the run's
feature parameters, and those of its joined parts (the profile part's own audio image and the run's face crops; the
real-only score's mel images and face crops). ``extract_plan`` fills them for the clips of the data root's splits --
or of one shard of them (``core.shards``): each shard writes its own manifest file in each folder, so several
processes or machines fill one cache at once and the folders copied together merge by plain file copy -- and, for
frozen backbones, the backbones' embeddings of those clips (``features.embeddings``: one file per clip, no
manifest). The real-only score's statistics are not computed here (the first training computes them from the
cache).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..core.device import resolve_device
from ..core.params import ProfilePartParams, RealOnlyParams
from ..core.paths import cache_dir
from ..core.schema import TEST_CLIPS, TRAIN_DEFAULTS, with_defaults
from ..core.shards import Shard
from ..data.labels import clips_for_splits
from ..models.registry import create_model, model_inputs, resolve_model_params
from .batches import ClipDataset
from .cache import merge_manifests
from .clips import cache_folder, open_features
from .embeddings import attach_embeddings
from .extract import extract_faces, extract_mels
from .params import face_params, mel_params


def extraction_plan(params: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(kind, parameters) of every feature folder the run ``params`` describe reads, each once: the network's
    inputs, then its joined parts'. The model is built on the meta device (no weights are loaded)."""
    p = with_defaults(params, TRAIN_DEFAULTS)
    with torch.device("meta"):
        network = create_model({**p, "pretrained": False}, check=False)
    wanted: list[tuple[str, dict[str, Any]]] = []
    for kind in model_inputs(network):
        wanted.append(("mel" if kind in ("mel", "has_audio") else kind, dict(p)))
    if RealOnlyParams.of(p).real_only_weight > 0:
        wanted += [("mel", dict(p)), ("faces", dict(p))]
    profile = ProfilePartParams.of(p)
    if profile.profile_weight > 0:
        wanted += [("mel", {**p, "mel_preset": profile.profile_mel_preset}), ("faces", dict(p))]
    plan, seen = [], set()
    for kind, kp in wanted:
        folder = cache_folder(kp, kind).name
        if folder not in seen:
            seen.add(folder)
            plan.append((kind, kp))
    return plan


def plan_clips(params: Mapping[str, Any], splits: Sequence[str] = ("train", "val", "test"),
               shard: Shard | str | None = None) -> pd.DataFrame:
    """The clips of ``splits`` of the run's data root that exist (video_name, path, split), only part K of N with
    ``shard``."""
    p = with_defaults(params, TRAIN_DEFAULTS, TEST_CLIPS)
    clips = clips_for_splits(p["data_root"], splits, test_dir=p["test_dir"], test_template=p["test_template"])
    clips = clips[clips.exists.to_numpy(bool)].drop_duplicates("video_name").reset_index(drop=True)
    shard = Shard.parse(shard)
    if shard is not None:
        clips = clips[shard.mask(clips.video_name)].reset_index(drop=True)
    return clips


def extract_plan(params: Mapping[str, Any], splits: Sequence[str] = ("train", "val", "test"),
                 shard: Shard | str | None = None, embeddings: bool = True, workers: int | None = None,
                 progress: bool = True) -> dict[str, Any]:
    """Extract everything ``extraction_plan(params)`` lists for the clips of ``splits`` (one shard of them with
    ``shard``), then the frozen backbones' embeddings (``embeddings``). Resumable like every extraction.

    Returns a report: the shard, the number of clips, and per feature folder the extraction's counts (cached,
    computed, ok, no_audio, error), with the embedding folders and how many clips they hold.
    """
    shard = Shard.parse(shard)
    p = resolve_model_params(with_defaults(params, TRAIN_DEFAULTS))
    clips = plan_clips(p, splits, shard)
    report: dict[str, Any] = {"shard": shard.label if shard else None, "clips": int(len(clips)), "features": {},
                              "embeddings": {}}
    if workers is None:
        workers = p["feature_workers"]
    for kind, kp in extraction_plan(p):
        extract = extract_mels if kind == "mel" else extract_faces
        kind_params = mel_params(kp) if kind == "mel" else face_params(kp)
        store = extract(clips[["video_name", "path"]], kind_params, cache_dir(), workers=workers, progress=progress,
                        shard=shard)
        report["features"][store.root.name] = {k: store.stats[k] for k in
                                               ("cached", "computed", "ok", "no_audio", "error")}
    if embeddings and len(clips):
        report["embeddings"] = _embed(p, clips, progress)
    return report


def _embed(p: Mapping[str, Any], clips: pd.DataFrame, progress: bool) -> dict[str, int]:
    """The frozen backbones' embeddings of ``clips``, as training computes them (same seed, same weights, the clips
    training keeps); {folder name: clips}. Features are only read here (``open_features``): the extraction above
    wrote them, and an unsharded extraction now would merge the manifests of shards that may still be running."""
    torch.manual_seed(int(p["seed"]))  # as training builds its model (a random-init frozen backbone too)
    network = create_model(p)
    frozen = network.frozen_backbones() if hasattr(network, "frozen_backbones") else {}
    if not frozen:
        return {}
    inputs = model_inputs(network)
    feats = open_features(p, list(clips.video_name), inputs, drop_failed=True)
    names = [n for n, keep in zip(clips.video_name, feats["keep"]) if keep]
    ds = ClipDataset(names, np.zeros(len(names)), mels=feats.get("mels"), has_audio=feats.get("has_audio"),
                     faces=feats.get("faces"))
    folders = attach_embeddings(network, p, [ds], resolve_device(p["device"]), progress=progress)
    return {Path(f).name: len(names) for f in folders.values()}


def merge_cache(root: str | Path | None = None) -> dict[str, dict[str, int]]:
    """Merge the shard manifests of every feature folder under ``root`` (default: the cache) into their
    ``manifest.csv`` (``features.cache.merge_manifests``); {folder: counts} of the folders that had any."""
    root = Path(root) if root is not None else cache_dir()
    out = {}
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if folder.is_dir() and (folder / "params.json").is_file() and folder.name.split("-", 1)[0] in ("mel",
                                                                                                     "faces"):
            counts = merge_manifests(folder)
            if counts["shard_files"]:
                out[folder.name] = counts
    return out
