"""The two rows every candidate must beat, under every protocol: the floors of a comparison.

- ``floor-baseline`` -- the public baseline notebook's recipe, exactly: the clip's audio at 22,050 Hz, librosa's
  128-band mel in dB relative to the clip's maximum, min-max scaled to a 256x256 image (``mel_preset: seed``); timm
  ``resnet18``; Adam 3e-3, StepLR(4, 0.85), 10 epochs, batch 40, random flips; nothing else (no MixUp, no
  pseudo-fakes, no real-only score). One difference, stated wherever the row is shown: the notebook starts from
  timm's ImageNet download, which the workspace never makes at run time, so the floor starts from random init
  unless ``floor_baseline_pretrained`` names a local ImageNet-1K resnet18 weights file. Like every candidate of a
  protocol it keeps its last epoch (the eval part never picks a checkpoint).
- ``floor-metadata`` -- the shortcut floor: a logistic regression on container and stream fields only (duration,
  fps, frame size, sample rate, channels, bitrate, codecs, audio presence), fitted on the split's training part. A
  model that does not beat it has learned no more than how the files were made.

``floor_flags`` marks, per protocol, every candidate whose mean AUC does not exceed both floors'.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..core.schema import TRAIN_DEFAULTS
from ..data.splits import Split

FLOOR_PREFIX = "floor-"  # file-name safe: a row's name is part of its run folder's name
BASELINE_FLOOR = "floor-baseline"
METADATA_FLOOR = "floor-metadata"

# the public notebook's recipe as this workspace's parameters (every key that shapes the model or its training)
BASELINE_RECIPE: dict[str, Any] = {
    "model_type": "audio", "model": "resnet18", "pretrained": False, "input_norm": "auto", "freeze_backbone": False,
    "mel_preset": "seed", "image_size": 256, "dropout": 0.0,
    "epochs": 10, "batch_size": 40, "optimizer": "adam", "lr": 3.0e-3, "weight_decay": 0.0, "scheduler": "step",
    "step_size": 4, "gamma": 0.85, "warmup_epochs": 0, "loss": "bce", "pos_weight": None, "label_smoothing": 0.0,
    "augment": "baseline", "mixup_alpha": 0.0, "cutmix_alpha": 0.0, "av_swap_prob": 0.0, "pseudo_fakes": {},
    "pseudo_local": 0.0, "real_only_weight": 0.0, "max_train_clips": None,
}
# how a run is executed, not what it learns: these keys of the comparison's parameters reach the floor too
RUNTIME_KEYS = ("data_root", "device", "amp", "channels_last", "compile", "num_workers", "feature_workers",
                "deterministic", "dist_timeout_min", "progress", "seed")


def baseline_params(base: Mapping[str, Any], pretrained: Any = None) -> dict[str, Any]:
    """The training parameters of ``floor-baseline``: the defaults, the comparison's runtime keys, the recipe."""
    runtime = {k: base[k] for k in (*RUNTIME_KEYS, "run_name") if k in base}
    out = {**TRAIN_DEFAULTS, **runtime, **BASELINE_RECIPE}
    if pretrained:
        out["pretrained"] = pretrained
    return out


def is_floor(name: str) -> bool:
    return str(name).startswith(FLOOR_PREFIX)


# ---------------------------------------------------------------------------------------------------------------
# the metadata floor

def metadata_matrix(index: pd.DataFrame) -> np.ndarray:
    """Container and stream fields of ``index`` (``data.index.media_index`` rows) as numbers, one row per clip.

    Numeric fields go in as logs where they span orders of magnitude; codecs as one-hot columns over the codecs
    seen; a missing value is 0 with a presence column, so a clip without audio is told apart, not guessed."""
    df = index.reset_index(drop=True)

    def num(col: str) -> pd.Series:
        if col not in df:
            return pd.Series(np.nan, index=df.index)
        return pd.to_numeric(df[col], errors="coerce").replace([np.inf, -np.inf], np.nan)

    duration = num("duration").clip(lower=1e-3)
    cols = {
        "log_duration": np.log(duration), "fps": num("fps"), "log_width": np.log(num("width").clip(lower=1)),
        "log_height": np.log(num("height").clip(lower=1)), "aspect": num("width") / num("height").clip(lower=1),
        "sample_rate_khz": num("sample_rate") / 1000, "channels": num("channels"),
        "log_bitrate": np.log((num("size_bytes") * 8 / duration).clip(lower=1)),
        "has_audio": num("has_audio"), "audio_minus_video_s": num("audio_duration") - num("duration"),
    }
    out = pd.DataFrame(cols)
    for col in list(out.columns):
        missing = out[col].isna()
        if missing.any():
            out[f"{col}_missing"] = missing.astype(float)
            out[col] = out[col].fillna(0.0)
    for field in ("video_codec", "audio_codec"):
        if field in df:
            for codec in sorted(df[field].fillna("none").astype(str).unique()):
                out[f"{field}={codec}"] = (df[field].fillna("none").astype(str) == codec).astype(float)
    return out.to_numpy(np.float64)


def metadata_scores(split: Split, index: pd.DataFrame, c: float = 1.0) -> pd.DataFrame:
    """``floor-metadata`` on one split: fitted on the training part's rows of ``index``, scores of the eval part.

    ``index`` holds one row per clip of both parts (``video_name`` plus the probe fields); the codec columns are
    built over both parts, so train and eval share one column layout (the labels are never read for it)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows = index.drop_duplicates("video_name").set_index("video_name")
    names = list(split.train.video_name) + list(split.eval.video_name)
    x = metadata_matrix(rows.reindex(names).reset_index())
    n = len(split.train)
    y = (split.train.target.to_numpy(float) > 0.5).astype(int)
    if len(np.unique(y)) < 2:
        score = np.full(len(split.eval), float(y.mean()) if len(y) else 0.5)
    else:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))
        model.fit(x[:n], y)
        score = model.predict_proba(x[n:])[:, 1]
    return pd.DataFrame({"video_name": list(split.eval.video_name), "score": score})


# ---------------------------------------------------------------------------------------------------------------
# flags

def floor_flags(board: pd.DataFrame, protocols: Sequence[str] | None = None) -> pd.Series:
    """Per leaderboard row: ``ok`` when its mean AUC exceeds every floor's under every protocol both have, else
    ``BELOW <floor> (<protocol> a vs b)`` for each failure; ``floor`` on the floors' own rows; ``no floor`` where
    the board has none. ``board`` is ``protocol_leaderboard``'s table (``<protocol> auc`` columns)."""
    cols = [c for c in board.columns if c.endswith(" auc") and not c.startswith("unseen ")]
    if protocols is not None:
        cols = [c for c in cols if c[:-4] in protocols]
    floors = board[board["name"].map(is_floor)]
    out = []
    for _, row in board.iterrows():
        if is_floor(row["name"]):
            out.append("floor")
            continue
        if floors.empty:
            out.append("no floor")
            continue
        fails = []
        for col in cols:
            mine = pd.to_numeric(pd.Series([row[col]]), errors="coerce").iloc[0]
            for _, fl in floors.iterrows():
                theirs = pd.to_numeric(pd.Series([fl[col]]), errors="coerce").iloc[0]
                if np.isfinite(theirs) and not (np.isfinite(mine) and mine > theirs):
                    fails.append(f"BELOW {fl['name']} ({col[:-4]} {mine:.3f} vs {theirs:.3f})")
        out.append("; ".join(fails) if fails else "ok")
    return pd.Series(out, index=board.index, name="floors")
