"""Per-clip runs of consecutive frames for the audio-visual and temporal models: mouth and face crops on a fixed
frame grid, with the log-mel frames that play during each video frame.

One clip's cache entry is a float16 array (T, P*P + P*P + A*M): per video frame ``i`` (at ``i / fps`` seconds) the
grey mouth crop (P x P), the grey eye-aligned face crop (P x P) and the A = sr / hop / fps log-mel frames (M mels
each) of that frame's time span, normalised by the clip's own mean and deviation (so loudness against the clip's
silence is kept, the recording level is not). Crops come from MTCNN (``features.faces``): full detection on a few
frames, tracked landmarks on all; a clip without a face gets the centre crop.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import librosa
import numpy as np

from ..features.faces import face_entry
from ..features.params import face_params
from ..media.decode import load_audio
from ..media.runs import load_frame_run
from .common import ClipCache

__all__ = ["AV_DEFAULTS", "av_entry", "av_cache", "split_row", "layout"]

AV_DEFAULTS: dict[str, Any] = {
    "seconds": 6.0,        # length of the run read from the start of each clip
    "fps": 25.0,           # frame grid
    "sr": 16000,
    "hop": 160,            # 10 ms mel hop: 4 mel frames per video frame at 25 fps
    "n_mels": 40,
    "crop": 48,            # mouth and face crop side
    "work_size": 360,      # frames are decoded with this shorter side
    "detect_frames": 4,    # full MTCNN detections per run (the rest tracked)
    "av_version": 1,
}
_AV_KEYS = tuple(AV_DEFAULTS)


def layout(p: Mapping[str, Any]) -> tuple[int, int, int]:
    """(pixels per crop, mel frames per video frame, mel bins)."""
    per = p["sr"] / p["hop"] / p["fps"]
    if abs(per - round(per)) > 1e-6:
        raise ValueError(f"sr / hop / fps must be a whole number of mel frames per video frame (got {per})")
    return p["crop"] * p["crop"], int(round(per)), p["n_mels"]


def split_row(arr: np.ndarray, p: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mouths (T, P, P), faces (T, P, P), mels (T, A, M)) views of an entry."""
    px, a, m = layout(p)
    c = p["crop"]
    t = arr.shape[0]
    return (arr[:, :px].reshape(t, c, c), arr[:, px:2 * px].reshape(t, c, c), arr[:, 2 * px:].reshape(t, a, m))


def av_entry(path: Path, p: Mapping[str, Any]) -> np.ndarray:
    """The packed (T, 2 P^2 + A M) float16 entry of one clip (see the module docstring)."""
    px, a, m = layout(p)
    x = load_audio(path, p["sr"], p["seconds"])
    if x.size < p["sr"] * 0.5:
        raise ValueError("no audio (or under half a second)")
    frames = load_frame_run(path, p["seconds"], p["fps"], size=p["work_size"])
    t = min(len(frames), int(len(x) / p["sr"] * p["fps"]))
    if t < 8:
        raise ValueError(f"only {t} frames with audio")
    frames = frames[:t]
    fp = face_params({"face_detector": "mtcnn", "face_size": p["crop"], "face_mouth_size": p["crop"],
                      "face_detect_frames": p["detect_frames"], "face_work_size": p["work_size"]})
    crops = face_entry(frames, fp)
    grey = [np.stack([cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) for im in crops[k]]) for k in ("mouths", "faces")]
    need = t * a * p["hop"]
    x = np.pad(x, (0, max(0, need - len(x))))[:need]
    mel = librosa.feature.melspectrogram(y=x, sr=p["sr"], n_fft=400, hop_length=p["hop"], n_mels=m, center=True)
    logmel = np.log(mel[:, : t * a].T + 1e-6)
    logmel = (logmel - logmel.mean()) / (logmel.std() + 1e-5)
    return np.concatenate([grey[0].reshape(t, px), grey[1].reshape(t, px), logmel.reshape(t, a * m)],
                          axis=1).astype(np.float16)


def av_cache(p: Mapping[str, Any]) -> ClipCache:
    prep = {k: p[k] for k in _AV_KEYS}
    return ClipCache("avrun", prep, partial(av_entry, p=prep))
