"""Features: mel spectrogram images, face crops, their on-disk cache and parallel extraction.

Cache layout (one folder per parameter set, so a changed parameter never reads a stale feature)::

    <cache_root>/mel-<params_hash>/
        params.json              the resolved parameters (what the hash was taken of)
        manifest.csv             one row per processed clip (video_name, has_audio, status, error, note, ...)
        entries/<2 hex>/<name>.npy   one uint8 array per clip whose status is "ok"
        packed/packed-<hash>.npy     fixed-size stacks made by MelStore.packed() (memory-mapped)
    <cache_root>/faces-<params_hash>/   the same for face crops (entries are .npz: faces + found flags)

Every file is written to a temporary name and renamed, so a run killed at any moment leaves only whole
files; a restarted run skips clips whose entry exists (or that the manifest lists as finished).
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import multiprocessing as mp_
import os
import re
import shutil
import sys
import time
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import cv2
import numpy as np
import pandas as pd

from .media import MediaError, load_audio, load_frames

try:  # the lead's config owns the canonical hash; the fallback keeps this module importable on its own
    from .config import params_hash
except ImportError:  # pragma: no cover - config.py is part of the package
    def params_hash(params: Mapping[str, Any], length: int = 12) -> str:
        canonical = json.dumps(params, sort_keys=True, default=str, separators=(",", ":"))
        return hashlib.sha1(canonical.encode("utf-8")).hexdigest()[:length]

__all__ = [
    "MEL_PRESETS", "mel_params", "mel_image", "audio_status", "extract_mels", "MelStore",
    "FACE_DEFAULTS", "face_params", "face_crops", "extract_faces", "FaceStore", "baseline_mel_image",
]

# Bump when the computation changes in a way the parameters do not capture, so old caches are not reused.
FEATURES_VERSION = 1

# Every mel field; a preset gives all of them, a run's params may override any as ``mel_<field>``.
MEL_PRESETS: dict[str, dict[str, Any]] = {
    # The public baseline's image: 22,050 Hz, librosa's melspectrogram defaults, dB relative to the clip's
    # maximum, min-max scaled per clip, resized to 256x256. Level information is lost by the per-clip scaling.
    "seed": {
        "sr": 22050, "n_fft": 2048, "hop_length": 512, "win_length": 2048, "n_mels": 128, "fmin": 0.0,
        "fmax": 0.0, "norm": "slaney", "scale": "minmax", "top_db": 80.0, "db_max": 0.0,
        "height": 256, "width": 256, "max_seconds": 0.0, "min_seconds": 0.05, "silence_db": -80.0,
        "resampler": "soxr",
    },
    # Training default: speech band at 16 kHz (8 kHz covers what AAC/vocoders leave of speech), 64 ms window,
    # 16 ms hop (62.5 frames/s), 128 mels. dB on a fixed scale (0 dB = a full-scale sine; 80 dB below it maps
    # to 0) instead of per-clip min-max, so loudness and the noise floor stay visible to the model. Stored at
    # natural size (128 x frames), at most 12 s, which keeps a 10 s clip at 80 KB (20 GB for 250,000 clips).
    "default": {
        "sr": 16000, "n_fft": 1024, "hop_length": 256, "win_length": 1024, "n_mels": 128, "fmin": 20.0,
        "fmax": 8000.0, "norm": "slaney", "scale": "fixed", "top_db": 80.0, "db_max": -10.0,
        "height": 0, "width": 0, "max_seconds": 12.0, "min_seconds": 0.05, "silence_db": -80.0,
        "resampler": "soxr",
    },
}
MEL_PRESETS["baseline"] = MEL_PRESETS["seed"]  # alias: same parameters, same hash, same cache

_INT_FIELDS = {"sr", "n_fft", "hop_length", "win_length", "n_mels", "height", "width"}
_STR_FIELDS = {"norm", "scale", "resampler"}

FACE_DEFAULTS: dict[str, Any] = {
    "frames": 8,          # evenly spaced frames per clip
    "size": 112,          # output crop side (pixels)
    "margin": 0.25,       # extra context around the detected box, as a fraction of its side, per side
    "detector": "haar",   # "haar" (OpenCV's bundled frontal-face cascade) or "center" (no detection)
    "work_size": 360,     # frames are decoded with this shorter side (FFmpeg scales while converting)
    "detect_width": 256,  # detection runs on a grey copy this wide (speed); boxes are mapped back
    "min_face": 0.12,     # smallest face side considered, as a fraction of the frame's shorter side
    "center_scale": 0.8,  # fallback crop side as a fraction of the frame's shorter side
}
_FACE_INT = {"frames", "size", "work_size", "detect_width"}


# ---------------------------------------------------------------------------------------------------------------
# parameters


def _resolve(defaults: dict[str, Any], params: Mapping[str, Any], prefix: str, ints: set, strs: set,
             kind: str) -> dict[str, Any]:
    out = dict(defaults)
    for key, value in params.items():
        if not key.startswith(prefix) or key == f"{prefix}preset":
            continue
        field = key[len(prefix):]
        if field not in defaults:
            # Not fatal: other stages may use keys with the same prefix; say so instead of ignoring silently.
            warnings.warn(f"{key!r} is not a {kind} parameter (known: {', '.join(sorted(defaults))}); ignored",
                          stacklevel=3)
            continue
        out[field] = value
    for k, v in out.items():
        if v is None and k in strs:
            continue
        if v is None:  # "no limit" for numeric fields is 0
            out[k] = 0
        elif k in ints:
            out[k] = int(v)
        elif k in strs:
            out[k] = None if v in ("none", "None", "") else str(v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
    return out


def mel_params(params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Resolves the mel parameters of a run.

    Args:
        params: A run's params: ``mel_preset`` (a name in MEL_PRESETS, default "default") plus any
            ``mel_<field>`` overrides (e.g. ``mel_n_mels: 64``). An already resolved dict (with ``preset``)
            is returned as a copy, so the function can be applied twice.

    Returns:
        Dict with every field of the preset plus ``preset`` and ``version``; its params_hash names the cache.
    """
    params = dict(params or {})
    if "preset" in params and "sr" in params and "mel_preset" not in params:
        return dict(params)
    name = str(params.get("mel_preset") or "default")
    if name not in MEL_PRESETS:
        raise ValueError(f"unknown mel_preset {name!r}; choose one of {sorted(MEL_PRESETS)}")
    out = _resolve(MEL_PRESETS[name], params, "mel_", _INT_FIELDS, _STR_FIELDS, "mel")
    if out["scale"] not in ("minmax", "fixed"):
        raise ValueError(f"mel_scale must be 'minmax' or 'fixed', not {out['scale']!r}")
    if not 0 <= out["fmax"] <= out["sr"] / 2 + 1e-6:
        raise ValueError(f"mel_fmax {out['fmax']} must be in [0, sr/2 = {out['sr'] / 2}] (0 means sr/2)")
    out["win_length"] = out["win_length"] or out["n_fft"]
    out["preset"] = "seed" if name == "baseline" else name
    out["version"] = FEATURES_VERSION
    return out


def face_params(params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Resolves face-crop parameters from ``face_<field>`` keys (defaults in FACE_DEFAULTS).

    Args:
        params: A run's params (or an already resolved dict, returned as a copy).

    Returns:
        Dict with every FACE_DEFAULTS field plus ``version``.
    """
    params = dict(params or {})
    if "version" in params and "detector" in params:
        return dict(params)
    out = _resolve(FACE_DEFAULTS, params, "face_", _FACE_INT, {"detector"}, "face")
    if out["detector"] not in ("haar", "center"):
        raise ValueError(f"face_detector must be 'haar' or 'center', not {out['detector']!r}")
    out["version"] = FEATURES_VERSION
    return out


# ---------------------------------------------------------------------------------------------------------------
# mel images


# The STFT and mel filterbank are written out in numpy (same definitions as librosa's stft with a periodic Hann
# window and centre padding, and filters.mel with the Slaney scale): importing librosa and its first stft call
# cost about 5 s per process, more than a hundred clips' worth of work. A test checks equality with librosa.


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, np.float64)
    lin = f / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, lin)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    lin = m * (200.0 / 3)
    log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
    return np.where(m >= 15.0, log, lin)


@lru_cache(maxsize=16)
def _mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float, norm: str | None) -> np.ndarray:
    """Triangular mel filterbank (n_mels, 1 + n_fft // 2), float32; ``norm="slaney"`` gives each unit area."""
    fft_freqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    if norm == "slaney":
        weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.astype(np.float32)


@lru_cache(maxsize=16)
def _window(n_fft: int, win_length: int) -> np.ndarray:
    """Periodic Hann window of ``win_length`` centred in ``n_fft`` samples."""
    win = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win_length) / win_length)).astype(np.float32)
    left = (n_fft - win_length) // 2
    return np.pad(win, (left, n_fft - win_length - left))


def _window_gain(win_length: int) -> float:
    return float(_window(win_length, win_length).sum())


def stft_power(audio: np.ndarray, n_fft: int, hop_length: int, win_length: int | None = None) -> np.ndarray:
    """|STFT|^2 (1 + n_fft // 2, frames), float32, centred frames with zero padding (librosa's defaults)."""
    y = np.pad(np.asarray(audio, np.float32), n_fft // 2)
    if y.size < n_fft:
        y = np.pad(y, (0, n_fft - y.size))
    return _frame_power(y, n_fft, hop_length, win_length).T


def _frame_power(y: np.ndarray, n_fft: int, hop_length: int, win_length: int | None) -> np.ndarray:
    """(frames, bins) power of already padded audio; frames-major so the mel product runs on contiguous rows."""
    import scipy.fft  # pocketfft in float32, several times faster here than numpy.fft's

    frames = np.lib.stride_tricks.sliding_window_view(y, n_fft)[::hop_length]
    spec = scipy.fft.rfft(frames * _window(n_fft, win_length or n_fft), axis=-1)
    return (spec.real ** 2 + spec.imag ** 2).astype(np.float32, copy=False)


def fallback_shape(mp: Mapping[str, Any]) -> tuple[int, int]:
    """Shape of the zeros image used for clips without usable audio (and for missing entries)."""
    mp = mel_params(mp)
    if mp["height"] and mp["width"]:
        return mp["height"], mp["width"]
    seconds = mp["max_seconds"] or 10.0
    return mp["height"] or mp["n_mels"], mp["width"] or 1 + int(seconds * mp["sr"]) // mp["hop_length"]


def audio_status(audio: np.ndarray, mp: Mapping[str, Any]) -> str:
    """Why audio cannot make a spectrogram ('' when it can): 'no audio', 'too short' or 'silent'."""
    mp = mel_params(mp)
    if audio.size == 0:
        return "no audio"
    if audio.size < mp["min_seconds"] * mp["sr"] or audio.size < 2:
        return f"too short ({audio.size / mp['sr']:.3f} s)"
    peak = float(np.max(np.abs(audio)))
    if not np.isfinite(peak) or peak <= 10 ** (mp["silence_db"] / 20):
        return "silent"
    return ""


def mel_power(audio: np.ndarray, mp: Mapping[str, Any]) -> np.ndarray:
    """Mel power spectrogram (n_mels, frames), float32; equals librosa.feature.melspectrogram for these settings."""
    mp = mel_params(mp)
    n_fft = mp["n_fft"]
    y = np.pad(np.asarray(audio, np.float32), n_fft // 2)
    if y.size < n_fft:
        y = np.pad(y, (0, n_fft - y.size))
    power = _frame_power(y, n_fft, mp["hop_length"], mp["win_length"])
    basis = _mel_basis(mp["sr"], n_fft, mp["n_mels"], mp["fmin"], mp["fmax"] or mp["sr"] / 2.0, mp["norm"])
    return np.ascontiguousarray((power @ basis.T).T)


def mel_image(audio: np.ndarray, mp: Mapping[str, Any]) -> np.ndarray:
    """Turns mono audio into a uint8 mel image.

    ``scale="minmax"`` (seed): dB relative to the clip maximum (floor 80 dB below), min-max scaled to 0-255 and
    truncated like the baseline's ``astype(uint8)``. ``scale="fixed"`` (default): the STFT is divided by the
    window sum so 0 dB means a full-scale sine, and ``[db_max - top_db, db_max]`` maps linearly to 0-255.
    With ``height``/``width`` set the image is resized (OpenCV, linear), otherwise it keeps (n_mels, frames).
    Audio that :func:`audio_status` rejects gives a zeros image of :func:`fallback_shape`.

    Args:
        audio: 1-D float mono audio at ``mp["sr"]``.
        mp: Mel parameters (resolved or a run's params).

    Returns:
        2-D uint8 array.
    """
    mp = mel_params(mp)
    if mp["max_seconds"]:
        audio = audio[: int(round(mp["max_seconds"] * mp["sr"]))]
    if audio_status(audio, mp):
        return np.zeros(fallback_shape(mp), np.uint8)
    power = mel_power(audio, mp)
    if mp["scale"] == "minmax":
        db = 10.0 * np.log10(np.maximum(power, 1e-10))
        db -= 10.0 * np.log10(max(float(power.max()), 1e-10))  # ref = max, as librosa.power_to_db(ref=np.max)
        db = np.maximum(db, db.max() - mp["top_db"]).astype(np.float32)
        lo, hi = float(db.min()), float(db.max())
        scaled = (db - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(db)
        img = scaled.astype(np.uint8)  # truncation, as the baseline's astype after cv2.normalize
    else:
        gain = _window_gain(mp["win_length"]) / 2.0  # |STFT| of a full-scale sine
        db = 10.0 * np.log10(np.maximum(power / (gain * gain), 1e-12))
        lo = mp["db_max"] - mp["top_db"]
        img = np.clip(np.rint((db - lo) * (255.0 / mp["top_db"])), 0, 255).astype(np.uint8)
    if mp["height"] and mp["width"]:
        img = cv2.resize(img, (mp["width"], mp["height"]), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(img)


def baseline_mel_image(path: str | os.PathLike, tmpdir: str | os.PathLike) -> np.ndarray:
    """The public baseline's audio feature, reproduced step by step for comparison and benchmarks.

    moviepy writes the clip's audio to a wav, librosa loads it at 22,050 Hz, 128-mel spectrogram,
    ``power_to_db(ref=max)``, min-max to uint8, 256x256 linear resize, written as JPEG and read back (the
    baseline trains on the JPEG). Slow by design: this is the reference, not the workspace's path.

    Args:
        path: Video file (must have audio: the baseline fails on clips without it, and so does this).
        tmpdir: Folder for the temporary wav and jpg.

    Returns:
        uint8 (256, 256), the first channel of the 3-channel image read back (all three are equal).
    """
    import librosa
    from moviepy import VideoFileClip

    tmpdir = Path(tmpdir)
    stem = f"{os.getpid()}_{Path(path).stem}"
    wav, jpg = tmpdir / f"{stem}.wav", tmpdir / f"{stem}.jpg"
    clip = VideoFileClip(str(path))
    try:
        clip.audio.write_audiofile(str(wav), logger=None)
    finally:
        clip.close()
    y, sr = librosa.load(str(wav))
    spec = librosa.feature.melspectrogram(y=y, sr=sr, n_mels=128)
    spec_db = librosa.power_to_db(spec, ref=np.max)
    img = cv2.normalize(spec_db, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    img = cv2.resize(img, (256, 256), interpolation=cv2.INTER_LINEAR)
    cv2.imwrite(str(jpg), img)
    back = cv2.imread(str(jpg))
    wav.unlink(missing_ok=True)
    jpg.unlink(missing_ok=True)
    return back[..., 0]


# ---------------------------------------------------------------------------------------------------------------
# face crops

_CASCADE: Any = None


def _cascade() -> Any:
    global _CASCADE
    if _CASCADE is None:
        _CASCADE = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml"))
        if _CASCADE.empty():
            raise RuntimeError("OpenCV's bundled Haar cascade could not be loaded")
    return _CASCADE


def _detect(frame: np.ndarray, fp: Mapping[str, Any]) -> tuple[float, float, float, float] | None:
    """Largest frontal face as (x, y, w, h) in frame pixels, or None."""
    h, w = frame.shape[:2]
    scale = min(1.0, fp["detect_width"] / w) if fp["detect_width"] else 1.0
    small = cv2.resize(frame, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
    grey = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
    side = max(12, int(fp["min_face"] * min(grey.shape)))
    boxes = _cascade().detectMultiScale(grey, scaleFactor=1.2, minNeighbors=4, minSize=(side, side))
    if len(boxes) == 0:
        return None
    x, y, bw, bh = max(boxes, key=lambda b: b[2] * b[3])
    return x / scale, y / scale, bw / scale, bh / scale


def _square_crop(frame: np.ndarray, cx: float, cy: float, side: float, out: int) -> np.ndarray:
    """Square crop centred at (cx, cy), shifted inside the frame where it fits, black-padded where it does not."""
    h, w = frame.shape[:2]
    side = max(2, int(round(side)))
    x0 = int(round(cx - side / 2))
    y0 = int(round(cy - side / 2))
    if side <= w:
        x0 = min(max(0, x0), w - side)
    if side <= h:
        y0 = min(max(0, y0), h - side)
    pad = max(0, -x0, -y0, x0 + side - w, y0 + side - h)
    if pad:
        frame = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        x0, y0 = x0 + pad, y0 + pad
    crop = frame[y0:y0 + side, x0:x0 + side]
    interp = cv2.INTER_AREA if side > out else cv2.INTER_LINEAR
    return cv2.resize(crop, (out, out), interpolation=interp)


def face_crops(frames: np.ndarray, fp: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Crops faces from RGB frames.

    Each frame gets the largest Haar detection (``detector="haar"``); a frame without one borrows the box of the
    nearest frame that has one (flag stays False); a clip without any detection (or ``detector="center"``) gets a
    centre crop of ``center_scale`` times the shorter side.

    Args:
        frames: uint8 (T, H, W, 3) RGB.
        fp: Face parameters.

    Returns:
        (crops uint8 (T, size, size, 3), found bool (T,)).
    """
    fp = face_params(fp)
    t, h, w = frames.shape[:3]
    boxes = [_detect(f, fp) for f in frames] if fp["detector"] == "haar" else [None] * t
    found = np.array([b is not None for b in boxes], bool)
    hits = np.flatnonzero(found)
    crops = np.empty((t, fp["size"], fp["size"], 3), np.uint8)
    for i, frame in enumerate(frames):
        if hits.size:
            x, y, bw, bh = boxes[int(hits[np.argmin(np.abs(hits - i))])]
            side = max(bw, bh) * (1 + 2 * fp["margin"])
            crops[i] = _square_crop(frame, x + bw / 2, y + bh / 2, side, fp["size"])
        else:
            crops[i] = _square_crop(frame, w / 2, h / 2, fp["center_scale"] * min(h, w), fp["size"])
    return crops, found


# ---------------------------------------------------------------------------------------------------------------
# cache stores

_MANIFEST_COLUMNS = ["video_name", "has_audio", "status", "error", "note", "seconds", "shape", "source"]


def _source_stamp(path: Any) -> str:
    """``size:mtime_ns`` of the file a clip's entry is computed from ('' when there is no readable file).

    Entries are keyed by clip name; the stamp in the manifest lets ``_run`` notice that a name now points at a
    different file (another folder, a regenerated dataset) and recompute instead of reusing a stale entry.
    """
    try:
        st = os.stat(path)
    except (OSError, TypeError, ValueError):
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}"


def _entry_file(name: str, suffix: str) -> str:
    """Relative path of a clip's entry: a 2-hex-char subfolder (spreads files) and a filesystem-safe name."""
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:150]
    if safe != name:  # keep names unique after sanitising
        safe = f"{safe}-{digest[:8]}"
    return f"{digest[:2]}/{safe}{suffix}"


def _atomic_save(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def _atomic_text(path: Path, text: str) -> None:
    _atomic_save(path, lambda f: f.write(text.encode("utf-8")))


class _Store:
    """Shared part of MelStore and FaceStore: manifest, entry paths, statuses."""

    kind = ""
    suffix = ".npy"

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        if not (self.root / "params.json").is_file():
            raise FileNotFoundError(f"{self.root} is not a {self.kind} cache (no params.json)")
        self.params: dict[str, Any] = json.loads((self.root / "params.json").read_text(encoding="utf-8"))
        self.key = self.root.name.split("-", 1)[-1]
        self.stats: dict[str, Any] = {}
        self.reload()

    def reload(self) -> None:
        """Re-reads the manifest (another process may have extended the cache)."""
        rows = _read_manifest(self.root)
        self.table = pd.DataFrame(list(rows.values()), columns=_MANIFEST_COLUMNS)
        self.table["has_audio"] = self.table["has_audio"].astype(bool)
        self._status = dict(zip(self.table["video_name"], self.table["status"]))
        self._source = dict(zip(self.table["video_name"], self.table["source"]))

    @property
    def names(self) -> list[str]:
        """Every clip the cache has a manifest row for (any status)."""
        return list(self._status)

    def __contains__(self, name: object) -> bool:
        return name in self._status

    def __len__(self) -> int:
        return len(self._status)

    def status(self, name: str) -> str:
        """'ok', 'no_audio', 'error', or 'missing' for a clip the cache has not seen."""
        return self._status.get(name, "missing")

    def path(self, name: str) -> Path:
        """Where the clip's entry lives (whether or not it exists)."""
        return self.root / "entries" / _entry_file(name, self.suffix)

    def __repr__(self) -> str:
        counts = self.table["status"].value_counts().to_dict() if len(self.table) else {}
        return f"{type(self).__name__}({str(self.root)!r}, clips={len(self)}, {counts})"


class MelStore(_Store):
    """Read access to a mel cache folder (``mel-<hash>``).

    ``get`` returns the stored uint8 image, or zeros of ``fallback_shape`` for a clip without usable audio, a
    failed or an unknown clip; ``has_audio`` is True only for clips with a real image.
    """

    kind = "mel"

    @property
    def fallback_shape(self) -> tuple[int, int]:
        return fallback_shape(self.params)

    def get(self, name: str) -> np.ndarray:
        """uint8 2-D mel image of a clip (zeros fallback when it has none)."""
        if self._status.get(name) == "ok":
            try:
                return np.load(self.path(name))
            except (OSError, ValueError):
                pass  # entry deleted or damaged behind our back: fall back rather than stop a training run
        return np.zeros(self.fallback_shape, np.uint8)

    def has_audio(self, name: str) -> bool:
        """True when the clip has a real spectrogram."""
        return self._status.get(name) == "ok"

    def packed(self, names: Iterable[str], height: int, width: int, progress: bool = False) -> np.ndarray:
        """All ``names`` resized to (height, width) once, as one memory-mapped uint8 array (N, height, width).

        The stack is written once to ``packed/packed-<hash of names and size>.npy`` (atomically) and opened
        read-only with ``mmap_mode='r'`` afterwards, so a training loader indexes rows instead of decoding files.

        Args:
            names: Clip names, in the order of the rows.
            height: Row height.
            width: Row width.
            progress: Show a progress bar while building.

        Returns:
            Read-only memmap (N, height, width) uint8.
        """
        names = list(names)
        payload: list = [names, int(height), int(width)]
        stamps = [f"{self._status.get(n, '')}|{self._source.get(n, '')}" for n in names]
        if any(self._source.get(n) for n in names):  # a recomputed entry must not be read from an old stack
            payload.append(stamps)
        key = hashlib.sha1(json.dumps(payload).encode("utf-8")).hexdigest()[:12]
        path = self.root / "packed" / f"packed-{key}.npy"
        if not path.is_file():
            from tqdm.auto import tqdm

            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(names), height, width))
            for i, name in enumerate(tqdm(names, desc="pack mels", unit="clip", disable=not progress)):
                img = self.get(name)
                if img.shape != (height, width):
                    img = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
                arr[i] = img
            arr.flush()
            del arr
            _atomic_text(path.with_suffix(".json"), json.dumps({"names": names, "height": height, "width": width}))
            os.replace(tmp, path)
        return np.load(path, mmap_mode="r")


class FaceStore(_Store):
    """Read access to a face-crop cache folder (``faces-<hash>``)."""

    kind = "faces"
    suffix = ".npz"

    @property
    def fallback_shape(self) -> tuple[int, int, int, int]:
        fp = face_params(self.params)
        return fp["frames"], fp["size"], fp["size"], 3

    def _load(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        if self._status.get(name) != "ok":
            return None
        try:
            with np.load(self.path(name)) as z:
                return z["faces"], z["found"]
        except (OSError, ValueError, KeyError):
            return None

    def get(self, name: str) -> np.ndarray:
        """uint8 (T, S, S, 3) RGB crops (zeros when the clip failed or is unknown)."""
        got = self._load(name)
        return got[0] if got is not None else np.zeros(self.fallback_shape, np.uint8)

    def face_found(self, name: str) -> np.ndarray:
        """bool (T,): True where the detector found a face in that frame."""
        got = self._load(name)
        return got[1] if got is not None else np.zeros(self.fallback_shape[0], bool)


def _read_manifest(root: Path) -> dict[str, dict]:
    path = root / "manifest.csv"
    if not path.is_file():
        return {}
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    rows = {}
    for rec in df.to_dict("records"):
        rec["has_audio"] = rec.get("has_audio") == "True"
        rows[rec["video_name"]] = {c: rec.get(c, "") for c in _MANIFEST_COLUMNS}
    return rows


def _write_manifest(root: Path, rows: Mapping[str, dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_MANIFEST_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows.values())
    _atomic_text(root / "manifest.csv", buf.getvalue())


# ---------------------------------------------------------------------------------------------------------------
# extraction engine (shared by mels and faces)

_W: dict[str, Any] = {}  # per-worker state set by _init_worker


def _limit_threads() -> None:
    """One thread per library inside a fresh (spawn / forkserver) worker: the pool already uses every core."""
    cv2.setNumThreads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    if "torch" in sys.modules:  # only if something imported it; importing it here would cost ~200 MB per worker
        sys.modules["torch"].set_num_threads(1)


class _parent_single_threaded:
    """Before forking: one thread for OpenCV, BLAS and torch in this process, restored when the pool is done.

    Forked workers inherit the setting. Changing it inside a forked child is not safe: cv2.setNumThreads() there
    hangs for good when the parent had already used OpenCV's thread pool (found by the test suite).
    """

    def __enter__(self) -> None:
        self.cv2 = cv2.getNumThreads()
        cv2.setNumThreads(1)
        self.blas = None
        try:
            from threadpoolctl import threadpool_limits

            self.blas = threadpool_limits(1)
        except ImportError:
            pass
        self.torch = None
        if "torch" in sys.modules:
            self.torch = sys.modules["torch"].get_num_threads()
            sys.modules["torch"].set_num_threads(1)

    def __exit__(self, *exc: Any) -> None:
        cv2.setNumThreads(self.cv2)
        if self.blas is not None:
            self.blas.restore_original_limits()
        if self.torch is not None:
            sys.modules["torch"].set_num_threads(self.torch)


def _init_worker(kind: str, params: dict, root: str, limit_threads: bool = True) -> None:
    if limit_threads:
        _limit_threads()
    _W.update(kind=kind, params=params, root=Path(root), suffix=".npy" if kind == "mel" else ".npz")


def _mel_task(path: str) -> tuple[dict, Callable | None]:
    mp = _W["params"]
    audio = load_audio(path, mp["sr"], mp["max_seconds"] or None, resampler=mp["resampler"])
    reason = audio_status(audio, mp)
    row = {"seconds": round(audio.size / mp["sr"], 3)}
    if reason:
        return {**row, "status": "no_audio", "has_audio": False, "note": reason}, None
    img = mel_image(audio, mp)
    return {**row, "status": "ok", "has_audio": True, "shape": "x".join(map(str, img.shape))}, \
        (lambda f: np.save(f, img))


def _face_task(path: str) -> tuple[dict, Callable | None]:
    fp = _W["params"]
    frames = load_frames(path, fp["frames"], fp["work_size"] or None, threads=1)
    crops, found = face_crops(frames, fp)
    note = f"{int(found.sum())}/{found.size} frames with a face"
    return {"status": "ok", "has_audio": False, "note": note, "shape": "x".join(map(str, crops.shape))}, \
        (lambda f: np.savez(f, faces=crops, found=found))


def _work(task: tuple[str, str]) -> dict:
    """Runs one clip in a worker; writes its entry; returns only a small row (never the array)."""
    name, path = task
    t0 = time.perf_counter()
    row = {"video_name": name, "has_audio": False, "status": "error", "error": "", "note": "", "seconds": "",
           "shape": "", "stage": "", "source": _source_stamp(path)}
    stage = "decode"
    try:
        if not isinstance(path, str) or not path:
            raise MediaError(str(path), "no path for this clip")
        fn = _mel_task if _W["kind"] == "mel" else _face_task
        stage = "decode"
        result, writer = fn(path)
        row.update(result)
        if writer is not None:
            stage = "write"
            _atomic_save(_W["root"] / "entries" / _entry_file(name, _W["suffix"]), writer)
    except MediaError as e:
        row.update(status="error", stage=stage, error=e.message)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):  # not the clip's fault: the parent stops the run
            row.update(status="disk_full", stage="write", error=f"{type(e).__name__}: {e}")
        else:
            row.update(status="error", stage=stage if stage == "write" else _W["kind"],
                       error=f"{type(e).__name__}: {e}")
    except Exception as e:  # one bad clip must not end the run: record it and go on
        row.update(status="error", stage=stage if stage == "write" else _W["kind"], error=f"{type(e).__name__}: {e}")
    row["elapsed"] = time.perf_counter() - t0
    return row


def _existing_entries(root: Path, suffix: str) -> set[str]:
    """Relative paths of whole entries on disk (temporary files are never counted)."""
    found = set()
    entries = root / "entries"
    if not entries.is_dir():
        return found
    for sub in os.scandir(entries):
        if not sub.is_dir():
            continue
        for f in os.scandir(sub.path):
            if f.name.endswith(suffix) and not f.name.startswith("."):
                found.add(f"{sub.name}/{f.name}")
            elif f.name.endswith(".tmp") and f.name.startswith("."):
                _remove_stale_tmp(Path(f.path))
    return found


def _remove_stale_tmp(path: Path) -> None:
    """Deletes a temporary file left by a killed process (its pid is in the name); a live writer's stays."""
    try:
        pid = int(path.name.rsplit(".", 2)[-2])
        os.kill(pid, 0)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
    except (ValueError, IndexError, PermissionError, OSError):
        pass


class DiskFullError(OSError):
    """Extraction stopped because the cache's disk is (or would be) full; finished entries are kept."""


def entry_bytes(kind: str, params: Mapping[str, Any]) -> int:
    """Upper estimate of one cache entry's size, for the free-space check before extraction starts."""
    if kind == "mel":
        if params.get("height") and params.get("width"):
            return int(params["height"]) * int(params["width"]) + 256
        seconds = float(params.get("max_seconds") or 20.0)
        frames = int(seconds * float(params["sr"]) / int(params["hop_length"])) + 2
        return int(params["n_mels"]) * frames + 256
    return int(params["frames"]) * (int(params["size"]) ** 2 * 3 + 1) + 512


def check_free_space(folder: Path, needed: int, margin: int = 64 * 2**20) -> None:
    """Raise DiskFullError, before any work, when ``folder``'s disk has less than ``needed`` bytes plus a margin."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # cannot tell (some network file systems): the ENOSPC handling still stops cleanly
    if needed + margin > free:
        raise DiskFullError(f"{folder}: about {(needed + margin) / 2**30:.2f} GiB needed for the features of this "
                            f"run but {free / 2**30:.2f} GiB free; free some space or move the cache (FFDV_CACHE)")


def _run(kind: str, clips: pd.DataFrame, params: dict, cache_root: str | os.PathLike, workers: int | None,
         progress: bool, errors_csv: str | os.PathLike | None, retry_errors: bool, chunksize: int | None,
         start_method: str | None) -> tuple[Path, dict]:
    missing = {"video_name", "path"} - set(clips.columns)
    if missing:
        raise ValueError(f"clips needs columns video_name and path (missing {sorted(missing)})")
    key = params_hash(params)
    root = Path(cache_root) / f"{kind}-{key}"
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "params.json").is_file():
        _atomic_text(root / "params.json", json.dumps(params, indent=2, sort_keys=True) + "\n")
    suffix = ".npy" if kind == "mel" else ".npz"
    t0 = time.time()
    rows = _read_manifest(root)
    on_disk = _existing_entries(root, suffix)
    seen: set[str] = set()
    pending: list[tuple[str, str]] = []
    for name, path in zip(clips["video_name"].astype(str), clips["path"]):
        if name in seen:
            continue
        seen.add(name)
        rel = _entry_file(name, suffix)
        row, stamp = rows.get(name), _source_stamp(path)
        if row is not None and row.get("source") and row["source"] != stamp:
            row = None  # the name now points at another (or a changed) file: recompute, never reuse
            on_disk.discard(rel)
        elif row is not None and not row.get("source"):
            row["source"] = stamp  # an entry from before stamps: trusted once, checked from now on
        if rel in on_disk and (row is None or row["status"] == "ok"):
            if row is None:  # finished after the last manifest flush of a killed run
                rows[name] = {"video_name": name, "has_audio": kind == "mel", "status": "ok", "error": "",
                              "note": "recovered from entry", "seconds": "", "shape": "", "source": stamp}
            continue
        if row is not None and (row["status"] == "no_audio" or (row["status"] == "error" and not retry_errors)):
            continue
        pending.append((name, None if pd.isna(path) else str(path)))
    stats = {"kind": kind, "key": key, "clips": len(seen), "cached": len(seen) - len(pending),
             "computed": 0, "ok": 0, "no_audio": 0, "error": 0}
    errors: list[dict] = [{"clip": r["video_name"], "stage": "cached", "message": r["error"]}
                          for n, r in rows.items() if n in seen and r["status"] == "error"]
    check_free_space(root, len(pending) * entry_bytes(kind, params))
    n_workers = max(1, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    n_workers = min(n_workers, max(1, len(pending)))
    from tqdm.auto import tqdm

    bar = tqdm(total=len(pending), desc=f"{kind} features", unit="clip", disable=not progress, smoothing=0.05)
    last_flush = time.time()
    elapsed: list[float] = []  # seconds per computed clip (8 bytes each: fine even for 250,000 clips)

    def handle(row: dict) -> None:
        nonlocal last_flush
        if row["status"] == "disk_full":  # keep what is finished, record nothing for this clip, stop
            raise DiskFullError(f"{root}: the disk is full ({row['error']}); {stats['computed']} clip(s) finished "
                                f"in this run are kept and {len(pending) - stats['computed']} remain: free some "
                                "space and run again with the same parameters to continue")
        stage = row.pop("stage", "")
        elapsed.append(row.pop("elapsed", 0.0))
        rows[row["video_name"]] = row
        stats["computed"] += 1
        stats[row["status"]] += 1
        if row["status"] == "error":
            errors.append({"clip": row["video_name"], "stage": stage, "message": row["error"]})
            bar.set_postfix(errors=stats["error"], refresh=False)
        bar.update(1)
        if time.time() - last_flush > 30:  # bounded loss if the run is killed; entries themselves are never lost
            _write_manifest(root, rows)
            last_flush = time.time()

    init_args = (kind, params, str(root))
    try:
        if n_workers == 1 or len(pending) <= 1:
            _init_worker(*init_args, limit_threads=False)
            with _parent_single_threaded():  # one worker means one core, here too (BLAS would take two)
                for task in pending:
                    handle(_work(task))
        else:
            ctx = mp_.get_context(start_method or _default_start_method())
            if ctx.get_start_method() == "forkserver":
                # Workers fork from a server that has imported this module (numpy, OpenCV, PyAV, pandas) once,
                # instead of importing it each (about a second apiece). No effect once the server is running.
                ctx.set_forkserver_preload([__name__, "scipy.fft", "soxr"])
            chunk = chunksize or max(1, min(16, len(pending) // (n_workers * 8)))
            forked = ctx.get_start_method() == "fork"
            init_args = (*init_args, not forked)
            with _single_thread_env(), _parent_single_threaded() if forked else _main_script_hidden(), \
                    ctx.Pool(n_workers, initializer=_init_worker, initargs=init_args) as pool:
                for row in pool.imap_unordered(_work, pending, chunksize=chunk):
                    handle(row)
    finally:
        bar.close()
        try:
            _write_manifest(root, rows)
            if errors_csv is not None:
                _write_errors(Path(errors_csv), errors)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # a full disk: the entries written so far are whole files and the next run recovers them
            warnings.warn(f"{root}: could not write the manifest ({exc}); finished entries are recovered next run",
                          stacklevel=2)
    stats["seconds"] = round(time.time() - t0, 3)
    stats["clips_per_s"] = round(stats["computed"] / stats["seconds"], 3) if stats["seconds"] else 0.0
    stats["workers"] = n_workers
    if elapsed:
        stats["clip_median_s"] = round(float(np.median(elapsed)), 4)
        stats["clip_p90_s"] = round(float(np.percentile(elapsed, 90)), 4)
    return root, stats


class _main_script_hidden:
    """Keeps spawn / forkserver workers from re-running the user's script while the pool starts them.

    Workers only need this module, but multiprocessing re-imports a ``python script.py`` main module in every
    new worker; a script without an ``if __name__ == "__main__":`` guard would then start pools from its
    workers, which die and are replaced without end. Hiding ``__main__.__file__`` for the moment the workers
    start makes them skip that import (notebooks and ``python -m`` are not affected either way).
    """

    def __enter__(self) -> None:
        main = sys.modules.get("__main__")
        self.main, self.file = main, None
        if main is not None and getattr(main, "__spec__", None) is None and hasattr(main, "__file__"):
            self.file = main.__dict__.pop("__file__")

    def __exit__(self, *exc: Any) -> None:
        if self.file is not None:
            self.main.__file__ = self.file


def _default_start_method() -> str:
    # Not fork: a parent that has already used OpenCV, PyAV or torch holds thread pools and locks, and forked
    # workers inherited them locked (seen here: a benchmark hung for 50 minutes in futex waits). forkserver
    # starts workers from a clean single-threaded server, and spawn works everywhere.
    return "forkserver" if "forkserver" in mp_.get_all_start_methods() else "spawn"


class _single_thread_env:
    """Sets OMP/BLAS thread counts to 1 in the environment the workers inherit, restoring it afterwards."""

    VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
            "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")

    def __enter__(self) -> None:
        self.saved = {v: os.environ.get(v) for v in self.VARS}
        os.environ.update({v: "1" for v in self.VARS})

    def __exit__(self, *exc: Any) -> None:
        for v, old in self.saved.items():
            if old is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = old


def _write_errors(path: Path, errors: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["clip", "stage", "message"])
    writer.writeheader()
    writer.writerows(errors)
    _atomic_text(path, buf.getvalue())


def extract_mels(clips: pd.DataFrame, mp: Mapping[str, Any], cache_root: str | os.PathLike,
                 workers: int | None = None, progress: bool = True, errors_csv: str | os.PathLike | None = None,
                 *, retry_errors: bool = False, chunksize: int | None = None,
                 start_method: str | None = None) -> MelStore:
    """Computes mel images for every clip into ``cache_root/mel-<params_hash>/`` (resumable).

    Clips whose entry exists, or that an earlier run found without audio, are skipped; clips that failed are
    skipped too unless ``retry_errors``. Workers decode, compute and write their own files; the parent only
    receives one small row per clip, so memory does not grow with the number of clips.

    Args:
        clips: DataFrame with video_name and path.
        mp: Mel parameters (a run's params with ``mel_*`` keys, or a resolved dict from mel_params).
        cache_root: Folder holding the per-parameter cache folders (e.g. ``config.cache_dir()``).
        workers: Processes (None: os.cpu_count(); 1: in this process).
        progress: tqdm bar (clips/s).
        errors_csv: Where to write the failed clips (columns clip, stage, message); None: not written.
        retry_errors: Recompute clips that failed before.
        chunksize: Clips per task message (None: chosen from the count).
        start_method: multiprocessing start method (None: forkserver where available).

    Returns:
        MelStore over the cache folder; ``.stats`` says how many clips were cached, computed, ok, no_audio, error.
    """
    params = mel_params(mp)
    root, stats = _run("mel", clips, params, cache_root, workers, progress, errors_csv, retry_errors, chunksize,
                       start_method)
    store = MelStore(root)
    store.stats = stats
    return store


def extract_faces(clips: pd.DataFrame, fp: Mapping[str, Any], cache_root: str | os.PathLike,
                  workers: int | None = None, progress: bool = True, errors_csv: str | os.PathLike | None = None,
                  *, retry_errors: bool = False, chunksize: int | None = None,
                  start_method: str | None = None) -> FaceStore:
    """Computes face crops for every clip into ``cache_root/faces-<params_hash>/`` (resumable).

    Same contract as :func:`extract_mels`; entries hold ``faces`` uint8 (T, S, S, 3) and ``found`` bool (T,).
    """
    params = face_params(fp)
    root, stats = _run("faces", clips, params, cache_root, workers, progress, errors_csv, retry_errors, chunksize,
                       start_method)
    store = FaceStore(root)
    store.stats = stats
    return store
