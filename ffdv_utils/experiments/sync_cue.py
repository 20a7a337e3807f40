"""The lip-sync cue of notebook 05: the untrained correlation between speech energy and mouth movement
(``models.sync.lip_sync_cue``) per clip and kind, how well it alone tells each kind from real clips, and its plot.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from ..core.metrics import auc as roc_auc
from ..core.plots import save_figure
from ..data.kinds import attach_kinds, read_kinds
from ..data.splits import labelled_clips
from ..features.batches import ClipDataset, prepare_batch
from ..features.clips import clip_features
from ..models.sync import MOUTH_CROP_BOX, lip_sync_cue


def sync_cue_table(params: Mapping[str, Any], data_root: Path | pd.DataFrame, kinds_csv: Any = None,
                   batch: int = 64, progress: bool = False) -> pd.DataFrame:
    """The untrained lip-sync cue (``lip_sync_cue``) of every clip, from the feature cache.

    Args:
        params: Feature parameters (``image_size``, ``face_frames``, ``face_size``, ...), as a run has them.
        data_root: The data root (its train and val clips are used), or a frame of clips: ``video_name, path``
            (and ``target``).
        kinds_csv: ``video_name, kind`` answers (the sample data has them), joined when given.
        batch: Clips per step.
        progress: Extraction progress bars.

    Returns:
        ``video_name, target, [kind,] has_audio, sync_cue``: one row per decodable clip; a clip without a
        soundtrack gets NaN (there is nothing to be in sync with).
    """
    clips = data_root if isinstance(data_root, pd.DataFrame) else labelled_clips(data_root)
    feats = clip_features(params, clips, ("mel", "faces"), progress=progress, drop_failed=True)
    kept = clips[feats["keep"]].reset_index(drop=True)
    targets = kept["target"] if "target" in kept else np.zeros(len(kept))
    ds = ClipDataset(list(kept.video_name), targets, mels=feats["mels"], has_audio=feats["has_audio"],
                     faces=feats["faces"])
    cues = []
    with torch.no_grad():
        for i in range(0, len(ds), batch):
            b = prepare_batch(ds.get_batch(list(range(i, min(i + batch, len(ds))))))
            # mtcnn caches carry crops round the mouth corners: the cue reads those instead of a fixed box
            cue = (lip_sync_cue(b["mel"], b["mouths"], MOUTH_CROP_BOX) if "mouths" in b
                   else lip_sync_cue(b["mel"], b["faces"]))
            cues.append(cue.numpy())
    out = kept[["video_name"]].assign(target=np.asarray(targets, float), has_audio=feats["has_audio"],
                                      sync_cue=np.concatenate(cues) if cues else np.zeros(0))
    out.loc[~out.has_audio, "sync_cue"] = np.nan
    if kinds_csv:
        out = attach_kinds(out, read_kinds(kinds_csv))
    return out


def sync_cue_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per group (``kind`` when known, else real / fake): clips, mean cue, and the AUC of ``-sync_cue`` for
    telling that group from the real clips (how well the untrained cue alone would catch it)."""
    t = table.dropna(subset=["sync_cue"])
    group = t["kind"] if "kind" in t else np.where(t.target >= 0.5, "fake", "real")
    real = t[np.asarray(group) == "real"]
    rows = []
    for g, part in t.groupby(np.asarray(group)):
        auc = np.nan
        if g != "real" and len(real) and len(part):
            y = np.r_[np.zeros(len(real)), np.ones(len(part))]
            auc = roc_auc(y, -np.r_[real.sync_cue.to_numpy(), part.sync_cue.to_numpy()])
        rows.append({"group": g, "n": len(part), "mean_cue": float(part.sync_cue.mean()), "auc_vs_real": auc})
    return pd.DataFrame(rows)


def plot_sync_cue(table: pd.DataFrame, path: str | os.PathLike | None = None) -> Any:
    """Histogram of the lip-sync cue per kind (or real / fake): mismatched audio should sit near 0."""
    import matplotlib.pyplot as plt

    t = table.dropna(subset=["sync_cue"])
    group = t["kind"] if "kind" in t else pd.Series(np.where(t.target >= 0.5, "fake", "real"), index=t.index)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bins = np.linspace(-1, 1, 31)
    for g in sorted(group.unique()):
        ax.hist(t.sync_cue[group == g], bins=bins, alpha=0.5, label=f"{g} (n={int((group == g).sum())})")
    ax.set_xlabel("correlation of speech energy and mouth movement (untrained cue)")
    ax.set_ylabel("clips")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
