"""Mel spectrogram images: a numpy STFT and mel filterbank (librosa's definitions, without its import cost), the
image the workspace trains on, and the public baseline's moviepy + librosa image for comparison.

The STFT and filterbank are written out in numpy (librosa's stft with a periodic Hann window and centre padding,
and filters.mel with the Slaney scale): importing librosa and its first stft call cost about 5 s per process,
more than a hundred clips' worth of work. A test checks equality with librosa.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import cv2
import numpy as np

from .params import mel_params

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
