"""Weight-free vocoders that re-synthesise a speech signal: the negatives of the voice-naturalness model.

Each takes mono float32 audio, its rate and a random generator (settings are drawn per call, so one model sees
several variants of each vocoder) and returns audio of the same length and loudness. None of them needs weights:
Griffin-Lim and the phase vocoder rebuild the phase of the signal's own magnitude spectrogram, the LPC vocoder
drives the signal's own all-pole envelopes with a pulse/noise excitation (the residual is thrown away), and WORLD
(``pyworld``, when installed) re-synthesises from its F0, spectral envelope and aperiodicity.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import soxr
from scipy.signal import lfilter

from ..media.decode import load_audio
from ..sample_data.mp4 import write_mp4

__all__ = ["codec_roundtrip", "VOCODERS", "available_vocoders", "resynthesise", "griffin_lim", "phase_vocoder",
           "lpc_vocoder", "world_vocoder"]


def _fit_length(y: np.ndarray, n: int) -> np.ndarray:
    return np.pad(y, (0, max(0, n - len(y))))[:n] if len(y) != n else y


def _match_rms(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    ry, rx = float(np.sqrt(np.mean(y ** 2))), float(np.sqrt(np.mean(x ** 2)))
    return (y * (rx / ry) if ry > 1e-9 else y).astype(np.float32)


def griffin_lim(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """The magnitude spectrogram's phase rebuilt from random by 16-64 Griffin-Lim iterations."""
    n_fft = int(rng.choice([256, 512, 1024]))
    hop = n_fft // 4
    mag = np.abs(librosa.stft(x, n_fft=n_fft, hop_length=hop))
    y = librosa.griffinlim(mag, n_iter=int(rng.integers(16, 65)), hop_length=hop, n_fft=n_fft, length=len(x),
                           momentum=float(rng.uniform(0.0, 0.99)), random_state=int(rng.integers(2**31 - 1)))
    return _match_rms(_fit_length(y, len(x)), x)


def phase_vocoder(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A phase-vocoder round trip: stretched by a factor r, then by 1/r (the phase accumulates the errors)."""
    n_fft = int(rng.choice([512, 1024, 2048]))
    r = float(rng.uniform(0.7, 0.9)) if rng.random() < 0.5 else float(rng.uniform(1.1, 1.4))
    y = librosa.effects.time_stretch(x, rate=r, n_fft=n_fft)
    y = librosa.effects.time_stretch(y, rate=1.0 / r, n_fft=n_fft)
    return _match_rms(_fit_length(y, len(x)), x)


def _excitation(x: np.ndarray, sr: int, hop: int, frame: int, rng: np.random.Generator) -> np.ndarray:
    """Pulse train at the signal's F0 where voiced, white noise elsewhere (no residual of the signal kept)."""
    f0 = librosa.yin(x, fmin=60, fmax=400, sr=sr, frame_length=max(1024, 2 * frame), hop_length=hop)
    rms = librosa.feature.rms(y=x, frame_length=frame, hop_length=hop)[0]
    zcr = librosa.feature.zero_crossing_rate(x, frame_length=frame, hop_length=hop)[0]
    m = min(len(f0), len(rms), len(zcr))
    voiced = (rms[:m] > 0.05 * max(float(rms.max()), 1e-9)) & (zcr[:m] < 0.12)
    t = np.arange(len(x))
    centres = np.arange(m) * hop
    f0_s = np.interp(t, centres, f0[:m])
    v_s = np.interp(t, centres, voiced.astype(float)) > 0.5
    phase = np.cumsum(f0_s / sr)
    pulses = np.diff(np.floor(phase), prepend=0.0) > 0
    exc = np.where(v_s, pulses * np.sqrt(sr / np.maximum(f0_s, 1.0)), rng.normal(0, 1, len(x)))
    return exc.astype(np.float64)


def lpc_vocoder(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Frame-wise LPC analysis (order 10-24) and re-synthesis from a pulse/noise excitation, overlap-added."""
    order = int(rng.integers(10, 25))
    frame = int(rng.choice([320, 400, 512]))
    hop = frame // 2
    exc = _excitation(x, sr, hop, frame, rng)
    win = np.hanning(frame + 1)[:-1]
    pad = frame // 2
    xp = np.pad(x.astype(np.float64), (pad, frame))
    ep = np.pad(exc, (pad, frame))
    out = np.zeros_like(xp)
    for s in range(0, len(x) + pad, hop):
        seg = xp[s:s + frame] * win
        energy = float(np.sqrt(np.mean(seg ** 2)))
        if energy < 1e-7:
            continue
        try:
            a = librosa.lpc(seg + 1e-9 * rng.normal(size=frame), order=order)
        except (FloatingPointError, ValueError, np.linalg.LinAlgError):
            continue
        if not np.all(np.isfinite(a)):
            continue
        with np.errstate(over="ignore", invalid="ignore"):  # a rare unstable all-pole filter: that frame is skipped
            y = lfilter([1.0], a, ep[s:s + frame]) * win
            ry = float(np.sqrt(np.mean(y ** 2)))
        if 1e-12 < ry < 1e6 and np.isfinite(ry):
            out[s:s + frame] += y * (energy / ry)
    y = out[pad:pad + len(x)]
    return _match_rms(np.nan_to_num(y).astype(np.float32), x)


@lru_cache(maxsize=1)
def _pyworld() -> Any:
    """The pyworld module, or None when it is not installed or does not import (pyworld 0.3.5 imports
    ``pkg_resources``, which setuptools 81+ no longer ships): WORLD is then left out of the vocoders."""
    try:
        import pyworld

        return pyworld
    except ImportError:
        return None


def world_vocoder(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """WORLD analysis (DIO + StoneMask, CheapTrick, D4C) and synthesis."""
    pw = _pyworld()
    if pw is None:
        raise ImportError("the WORLD vocoder needs pyworld (pip install pyworld)")

    xd = x.astype(np.float64)
    period = float(rng.choice([5.0, 10.0]))
    f0, t = pw.dio(xd, sr, frame_period=period)
    f0 = pw.stonemask(xd, f0, t, sr)
    sp = pw.cheaptrick(xd, f0, t, sr)
    ap = pw.d4c(xd, f0, t, sr)
    y = pw.synthesize(f0, sp, ap, sr, period)
    return _match_rms(_fit_length(np.nan_to_num(y), len(x)).astype(np.float32), x)


VOCODERS: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "griffin_lim": griffin_lim, "lpc": lpc_vocoder, "phase_vocoder": phase_vocoder, "world": world_vocoder,
}


def available_vocoders(names: list[str] | tuple[str, ...]) -> list[str]:
    """``names`` less those whose package is missing (WORLD needs ``pyworld``)."""
    out = []
    for n in names:
        if n not in VOCODERS:
            raise ValueError(f"unknown vocoder {n!r}; choose from {sorted(VOCODERS)}")
        if n == "world" and _pyworld() is None:
            continue
        out.append(n)
    return out


def resynthesise(x: np.ndarray, sr: int, name: str, rng: np.random.Generator) -> np.ndarray:
    """``x`` through the vocoder ``name`` (same length and RMS)."""
    return VOCODERS[name](np.asarray(x, np.float32), sr, rng)


# (encoder, container suffix, sample rates it takes, bitrates in kbit/s)
_CODECS = (("aac", ".mp4", (16000, 22050, 44100), (24, 32, 48, 64, 96, 128)),
           ("libmp3lame", ".mp4", (16000, 22050, 44100), (32, 48, 64, 96, 128)),
           ("libopus", ".webm", (16000, 48000), (16, 24, 32, 48, 64)))


def codec_roundtrip(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """``x`` encoded by a lossy codec drawn at random (AAC, MP3 or Opus; rate and bitrate drawn too) and decoded.

    Applied alike to real speech and to its re-synthesised copies, so that a codec's traces (band limits,
    quantisation holes) say nothing about which side a window is on: every real clip arrives through some codec.
    Returns ``x`` unchanged if the encoder is missing or fails.
    """
    name, suffix, rates, rates_kbps = _CODECS[int(rng.integers(len(_CODECS)))]
    rate = int(rng.choice(rates))
    y = soxr.resample(x, sr, rate) if rate != sr else x
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    scale = 0.9 / peak if peak > 0.9 else 1.0
    fd, tmp = tempfile.mkstemp(suffix=suffix)
    os.close(fd)
    try:
        write_mp4(tmp, None, (y * scale)[None, :].astype(np.float32), sample_rate=rate, acodec=name,
                  audio_bitrate=int(rng.choice(rates_kbps)) * 1000)
        out = load_audio(tmp, sr)
    except Exception:
        return x
    finally:
        os.unlink(tmp)
    out = _fit_length(out / scale, len(x))
    return out.astype(np.float32) if np.isfinite(out).all() else x
