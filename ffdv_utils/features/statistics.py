"""Per-clip statistics of how real clips behave, read from the feature cache: what the real-only score
(``detector.real_only``) is fitted on -- real training clips only, a clip's distance from them being its anomaly score
(the idea of AVH-Align, CVPR 2025: trained on real clips only, it needs no fake of the kind it meets).

Per clip, from the feature cache (``clip_statistics``):

- **sync**: how closely the mouth follows the speech -- the correlation of speech energy and lip spread at lags
  -2..2 frames (its value at 0 and the best lag's), on the mouth crops of an mtcnn cache or the fixed box otherwise;
- **motion**: how smoothly the face and its landmarks move (mtcnn caches) -- the mean second difference of the five
  landmarks and the spread over time of the eye distance and of the eye-mouth distance, each in units of the
  clip's eye distance; and the mean frame-to-frame change of the face crops;
- **voice**: how natural the spectrum is -- spectral flatness, the share of energy in the top quarter of the bands,
  smoothness across bands and along time, and the number of distinct levels (quantised spectra have few);
- **face**: blending traces -- the sharpness (Laplacian energy) of the inner face against the whole crop, the
  colour step between the inner face and the ring round it, how much more the inner face changes from frame to
  frame than the ring (an interior that moves on its own), and the gradient energy on the inner face's edge against
  inside it (the blending boundary that self-blended images train a detector to see);
- **prosody**: how the pitch moves -- a harmonic-spacing track of the low mel bands (evenly spaced below 1 kHz),
  the spread of log2 F0 over voiced columns and its step between neighbours, and the harmonic strength (natural
  speech has intonation and breath; a vocoder's excitation is often flatter and more regular);
- **consistency**: whether a clip is alike along its length -- the largest deviation of one quarter of the clip
  from the whole, for the voice's spectral tilt and flatness and the inner face's sharpness and colour (a partly
  replaced clip differs in one stretch);
- **local**: the same question asked of short windows, for partial manipulations (a few words or a second of face
  replaced, as in LAV-DF and AV-Deepfake1M) -- the lowest speech-energy / lip-spread correlation over windows of 3/8
  of the clip, and the largest 3-frame departure of the inner face's sharpness and grey level from the clip's median.

``STAT_GROUPS`` names the groups; ``real_only_groups`` chooses them (``DEFAULT_GROUPS``: all but motion -- chosen on
the 600-clip sample by the mean AUC over the validation split's fake kinds and pseudo-fakes of its real clips, whole
and partial, every one of them unseen by this score because it never sees a fake: ``tools/real_only_study.py``,
``docs/runs/select600/real_only_study.csv``; motion lowered it there).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import pandas as pd
import torch

from ..core.config import params_hash
from ..core.files import atomic_write, write_json
from ..core.paths import cache_dir
from ..models.layers import standardise
from ..models.sync import MOUTH_CROP_BOX, mouth_spread, speech_energy
from ..pseudo import PseudoFakes
from .batches import ClipDataset, prepare_batch
from .cache import entry_file
from .clips import cache_folder, clip_features

LAGS = (-2, -1, 0, 1, 2)


def _sync_stats(mel: torch.Tensor, faces: torch.Tensor, mouths: torch.Tensor | None) -> np.ndarray:
    """Per clip: the correlation of speech energy and lip spread at lag 0, at the best lag of ``LAGS``, that lag,
    and the lowest correlation (lag 0) over windows of ``local_window(T)`` frames (``_local_correlation``)."""
    t = faces.shape[1]
    e = standardise(speech_energy(mel, t).float())
    m = standardise(mouth_spread(mouths, MOUTH_CROP_BOX).float() if mouths is not None
                     else mouth_spread(faces).float())
    corr = []
    for lag in LAGS:
        a = e[:, max(0, -lag):t - max(0, lag)]
        b = m[:, max(0, lag):t - max(0, -lag)]
        corr.append((a * b).mean((1, 2)))
    c = torch.stack(corr, 1)
    return torch.stack([c[:, LAGS.index(0)], c.max(1).values, c.argmax(1).float() - LAGS.index(0),
                        _local_correlation(e[..., 0], m[..., 0], local_window(t))], 1).numpy()


def local_window(t: int) -> int:
    """Frames per window of the local statistics: 3/8 of the clip (6 of 16 frames, about 0.75-1.5 s of the sample's
    2-4 s clips), at least 4 so that a correlation means something."""
    return min(t, max(4, int(round(0.375 * t))))


def _local_correlation(a: torch.Tensor, b: torch.Tensor, w: int) -> torch.Tensor:
    """(B, T) x (B, T) -> (B,): the lowest Pearson correlation of ``a`` and ``b`` over windows of ``w`` frames.

    A manipulation of one stretch of a clip (new words over old lips, a second of another face) leaves the clip's
    correlation mostly intact; in its own window the mouth stops following the sound."""
    aw, bw = a.unfold(1, w, 1), b.unfold(1, w, 1)  # (B, windows, w)
    aw, bw = aw - aw.mean(2, keepdim=True), bw - bw.mean(2, keepdim=True)
    r = (aw * bw).sum(2) / ((aw.square().sum(2) * bw.square().sum(2)).sqrt() + 1e-6)
    return r.min(1).values


def _motion_stats(landmarks: np.ndarray | None, faces: np.ndarray) -> list[float]:
    change = float(np.abs(np.diff(faces.astype(np.float32), axis=0)).mean()) if len(faces) > 1 else np.nan
    if landmarks is None or not np.isfinite(landmarks).all() or np.abs(landmarks).sum() == 0:
        return [np.nan, np.nan, np.nan, change]
    eye_d = np.linalg.norm(landmarks[:, 1] - landmarks[:, 0], axis=1)
    unit = float(np.median(eye_d)) or 1.0
    jerk = float(np.abs(np.diff(landmarks, n=2, axis=0)).mean() / unit) if len(landmarks) > 2 else np.nan
    mouth_eye = np.linalg.norm(landmarks[:, 3:5].mean(1) - landmarks[:, :2].mean(1), axis=1)
    return [jerk, float(np.std(eye_d) / unit), float(np.std(mouth_eye) / unit), change]


def _voice_stats(mel: np.ndarray, has_audio: bool) -> list[float]:
    if not has_audio:
        return [np.nan] * 5
    x = mel.astype(np.float32) + 1.0
    lin = np.exp(x / 32.0)  # the uint8 image is a log scale: back to a positive, energy-like scale
    flat = float(np.mean(np.exp(np.log(lin).mean(0)) / lin.mean(0)))
    h = x.shape[0]
    top = float(lin[3 * h // 4:].sum() / lin.sum())
    across = float(np.abs(np.diff(x, axis=0)).mean())
    along = float(np.abs(np.diff(x, axis=1)).mean())
    levels = float(len(np.unique(mel)))
    return [flat, top, across, along, levels]


def _pitch_track(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of a uint8 log-mel image (128 slaney bands, 20 Hz - 8 kHz: the bands below 1 kHz are evenly
    spaced, about 23 Hz apart): the harmonic spacing of the low bands, in bands, and how strong it is.

    The spectrum of a voiced frame below 1 kHz is a comb of harmonics F0 apart: the autocorrelation of the mean-
    removed low bands along frequency peaks at the lag of F0 (3-17 bands: 70-400 Hz). Returns (lag, peak) per
    column; the lag is refined by a parabola through the peak and its neighbours."""
    h = x.shape[0]
    low = x[: max(8, int(round(h * 42 / 128)))].astype(np.float32)
    low = low - low.mean(0, keepdims=True)
    n = low.shape[0]
    # the biased estimate (sum over n, not n - k) favours the shortest of equally good lags: multiples of the
    # harmonic spacing (octave errors) lose against the spacing itself
    ac = np.stack([(low[: n - k] * low[k:]).sum(0) / n for k in range(n // 2)])
    ac = ac / (ac[0] + 1e-6)
    lo, hi = 3, min(18, n // 2 - 1)
    best = lo + ac[lo:hi].argmax(0)
    cols = np.arange(x.shape[1])
    a, b, c = ac[best - 1, cols], ac[best, cols], ac[best + 1, cols]
    shift = np.clip(0.5 * (a - c) / (a - 2 * b + c - 1e-9), -0.5, 0.5)
    return best + shift, b


def _prosody_stats(mel: np.ndarray, has_audio: bool) -> list[float]:
    """How the voice's pitch moves: the spread of log2 F0 over voiced columns (a natural voice has intonation), its
    mean step between neighbouring voiced columns, and the median harmonic strength (a buzzy excitation has a
    regular comb, breath and noise have little)."""
    if not has_audio:
        return [np.nan] * 3
    x = mel.astype(np.float32)
    lag, peak = _pitch_track(x)
    loud = x.mean(0)
    voiced = (loud > np.percentile(loud, 40)) & (peak > 0.15)
    if voiced.sum() < 4:
        return [np.nan, np.nan, float(np.median(peak))]
    f0 = np.log2(lag[voiced])
    steps = np.abs(np.diff(f0))
    return [float(np.std(f0)), float(np.median(steps)), float(np.median(peak[voiced]))]


def _window_spread(values: np.ndarray, n: int = 4) -> float:
    """How unevenly a per-column (or per-frame) measure sits along the clip: the largest deviation of one of ``n``
    equal windows' means from the clip's, in units of the measure's spread over the clip (a partly replaced clip
    has one window unlike the rest)."""
    v = np.asarray(values, np.float32)
    v = v[np.isfinite(v)]
    if v.size < 2 * n:
        return np.nan
    means = np.array([w.mean() for w in np.array_split(v, n)])
    return float(np.abs(means - v.mean()).max() / (v.std() + 1e-6))


def _consistency_stats(mel: np.ndarray, face: "_FaceMaps", has_audio: bool) -> list[float]:
    """Temporal consistency within a clip: window spreads of the voice's spectral tilt (share of energy above
    the lower half of the bands) and flatness along the mel image, and of the inner face's sharpness (Laplacian
    energy over the whole crop's) and grey level (over the ring's) along the frames."""
    out = [np.nan, np.nan]
    if has_audio:
        x = mel.astype(np.float32)
        loud = x.mean(0) > np.percentile(x.mean(0), 40)
        lin = np.exp((x + 1.0) / 32.0)
        h = x.shape[0]
        tilt = lin[h // 2:].sum(0) / lin.sum(0)
        flat = np.exp(np.log(lin).mean(0)) / lin.mean(0)
        out = [_window_spread(tilt[loud]), _window_spread(flat[loud])]
    sharp = face.lap[:, face.inner].mean(1) / (face.lap.mean((1, 2)) + 1e-6)
    colour = face.grey[:, face.inner].mean(1) / (face.grey[:, face.ring].mean(1) + 1e-6)
    return out + [_window_spread(sharp), _window_spread(colour)]


@dataclass
class _FaceMaps:
    """One clip's face crops as the face and consistency statistics read them, computed once: grey frames, their
    Laplacian magnitude, and the inner-face ellipse and the ring round it."""

    grey: np.ndarray
    lap: np.ndarray
    grad: np.ndarray
    inner: np.ndarray
    ring: np.ndarray
    edge: np.ndarray

    @classmethod
    def of(cls, faces: np.ndarray) -> "_FaceMaps":
        s = faces.shape[1]
        yy, xx = np.mgrid[0:s, 0:s]
        d = ((xx - s / 2) / (0.26 * s)) ** 2 + ((yy - 0.55 * s) / (0.32 * s)) ** 2
        grey = faces.mean(3).astype(np.float32)
        lap = np.stack([np.abs(cv2.Laplacian(g, cv2.CV_32F)) for g in grey])
        grad = np.stack([np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)) for g in grey])
        return cls(grey, lap, grad, d < 1, (d >= 1.2) & (d < 1.8), (d > 0.8) & (d < 1.25))


def _window_peak(values: np.ndarray, w: int) -> float:
    """The largest mean, over windows of ``w`` neighbours, of how far a per-frame measure is from its clip median."""
    v = np.abs(np.asarray(values, np.float64) - np.median(values))
    if v.size <= w:
        return float(v.mean())
    return float(np.convolve(v, np.ones(w) / w, mode="valid").max())


def _local_face_stats(face: _FaceMaps) -> list[float]:
    """Temporal anomalies of the inner face: per frame the log sharpness (Laplacian energy) and the log grey level of
    the inner face against the ring round it; the statistic is the largest departure from the clip's median over
    windows of 3 frames (a face blended, decoded or swapped in for a stretch of the clip differs there, and a
    whole-clip mean would dilute it)."""
    sharp = np.log(face.lap[:, face.inner].mean(1) + 1e-3) - np.log(face.lap[:, face.ring].mean(1) + 1e-3)
    grey = np.log(face.grey[:, face.inner].mean(1) + 1.0) - np.log(face.grey[:, face.ring].mean(1) + 1.0)
    return [_window_peak(sharp, 3), _window_peak(grey, 3)]


def _face_stats(faces: np.ndarray, face: _FaceMaps) -> list[float]:
    inner, ring, grey, lap = face.inner, face.ring, face.grey, face.lap
    sharp = float(lap[:, inner].mean() / (lap.mean() + 1e-6))
    step = float(np.abs(faces[:, inner].mean((0, 1)) - faces[:, ring].mean((0, 1))).mean())
    # inner-face motion against the ring's: a face interior that moves on its own (re-enacted, warped) swims
    diff = np.abs(np.diff(grey, axis=0)) if len(grey) > 1 else np.zeros((1,) + grey.shape[1:], np.float32)
    swim = float(diff[:, inner].mean() / (diff[:, ring].mean() + 1e-6))
    # the blending boundary (the cue self-blended images train for): gradient energy on the inner face's edge
    # against inside it
    edge = float(np.log((face.grad[:, face.edge].mean() + 1.0) / (face.grad[:, inner].mean() + 1.0)))
    return [sharp, step, swim, edge]


STAT_GROUPS: dict[str, list[str]] = {
    "sync": ["sync_lag0", "sync_best", "sync_best_lag"],
    "motion": ["landmark_jerk", "eye_distance_spread", "eye_mouth_spread", "frame_change"],
    "voice": ["spectral_flatness", "top_band_share", "smooth_across_bands", "smooth_along_time", "levels"],
    "face": ["inner_sharpness", "inner_ring_colour_step", "inner_motion_ratio", "inner_edge_gradient"],
    "prosody": ["pitch_spread", "pitch_step", "harmonicity"],
    "consistency": ["tilt_window_spread", "flatness_window_spread", "sharpness_window_spread",
                    "colour_window_spread"],
    "local": ["sync_local_min", "sharpness_local_peak", "colour_local_peak"],
}
STAT_NAMES = [name for group in STAT_GROUPS.values() for name in group]


# bump when any statistic changes: the per-clip cache (``statistics_folder``) is keyed by it
STATS_VERSION = "s3"


def statistics_folder(params: Mapping[str, Any]) -> Path:
    """``<cache>/stats-<hash>``: where the statistics of clips of these feature parameters are cached, one
    ``entries/..npy`` (float64, ``STAT_NAMES`` order) per clip. The hash covers the mel and face cache folders (so
    every feature parameter) and ``STATS_VERSION``; a protocol that fits the score once per fold and seed then
    computes each clip's statistics once."""
    key = {"mel": cache_folder(params, "mel").name, "faces": cache_folder(params, "faces").name,
           "version": STATS_VERSION, "columns": STAT_NAMES}
    folder = cache_dir() / f"stats-{params_hash(key)}"
    if not (folder / "params.json").is_file():
        write_json(folder / "params.json", key)
    return folder


def _statistics_rows(ds: ClipDataset, store: Any, rows_wanted: Sequence[int], batch: int) -> dict[int, list[float]]:
    """``STAT_NAMES`` values of dataset rows ``rows_wanted`` (as the loader hands them, pseudo-fakes included)."""
    out: dict[int, list[float]] = {}
    with torch.no_grad():
        for start in range(0, len(rows_wanted), batch):
            part = list(rows_wanted[start:start + batch])
            raw = ds.get_batch(part)
            b = prepare_batch(raw)
            sync = _sync_stats(b["mel"], b["faces"], b.get("mouths"))
            for j, i in enumerate(part):
                faces = raw["faces"][j].permute(0, 2, 3, 1).numpy()
                lm = store.landmarks(ds.names[i], frame=True) if getattr(store, "has_landmarks", False) else None
                has_audio = bool(ds.has_audio[i])
                s = list(sync[j]) if has_audio else [np.nan] * 4
                mel, face = raw["mel"][j, 0].numpy(), _FaceMaps.of(faces)
                out[i] = (s[:3] + _motion_stats(lm, faces) + _voice_stats(mel, has_audio) + _face_stats(faces, face)
                          + _prosody_stats(mel, has_audio) + _consistency_stats(mel, face, has_audio)
                          + s[3:] + _local_face_stats(face))
    return out


def clip_statistics(params: Mapping[str, Any], clips: pd.DataFrame, batch: int = 32,
                    progress: bool = False, pseudo: PseudoFakes | None = None, source: Any = None) -> pd.DataFrame:
    """The statistics of ``clips`` (video_name, path[, target, ...]): one row per clip, ``STAT_NAMES`` columns.

    Each clip's row is computed once and cached (``statistics_folder``). With ``pseudo`` (a ``pseudo.PseudoFakes``),
    each clip is first turned into a pseudo-fake as the training loader would (epoch 0; a family with probability 1
    changes every clip it can): the statistics of manipulations the score never saw, made from clips it never fitted
    (``tools/real_only_study.py``); those are not cached. With ``source`` (``features.memory.MemoryFeatures``: the
    test API) the features and the statistics are computed in memory, and no file is read or written."""
    feats = clip_features(params, clips, ("mel", "faces"), progress=progress, source=source)
    names = list(clips.video_name)
    ds = ClipDataset(names, np.zeros(len(names)), mels=feats["mels"], has_audio=feats["has_audio"],
                     faces=feats["faces"], pseudo=pseudo)
    folder = statistics_folder(params) if pseudo is None and source is None else None
    paths = [folder / "entries" / entry_file(n, ".npy") for n in names] if folder is not None else []
    values: dict[int, list[float]] = {}
    for i, path in enumerate(paths):
        if path.is_file():
            values[i] = list(np.load(path))
    todo = [i for i in range(len(names)) if i not in values]
    fresh = _statistics_rows(ds, feats["faces"], todo, batch) if todo else {}
    for i, row in fresh.items():
        values[i] = list(np.asarray(row, np.float64))  # as the cache gives it back
        if folder is not None:
            buf = io.BytesIO()
            np.save(buf, np.asarray(values[i]))
            atomic_write(paths[i], buf.getvalue())
    out = pd.DataFrame([values[i] for i in range(len(names))], columns=STAT_NAMES)
    out.insert(0, "video_name", names)
    for col in ("target", "split", "kind"):
        if col in clips:
            out[col] = clips[col].to_numpy()
    return out


DEFAULT_GROUPS = ("sync", "voice", "face", "prosody", "consistency", "local")


def group_columns(groups: Sequence[str] | None) -> list[str]:
    """The statistics of ``groups`` (names of ``STAT_GROUPS``; None: ``DEFAULT_GROUPS``), in table order."""
    groups = list(DEFAULT_GROUPS if groups is None else groups)
    unknown = [g for g in groups if g not in STAT_GROUPS]
    if unknown or not groups:
        raise ValueError(f"real_only_groups: unknown group(s) {unknown} (known: {', '.join(STAT_GROUPS)})"
                         if unknown else "real_only_groups is empty: name at least one group of statistics")
    return [c for g, cols in STAT_GROUPS.items() if g in groups for c in cols]
