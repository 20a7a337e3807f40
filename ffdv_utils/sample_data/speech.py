"""Synthetic speech of the sample dataset: voices, voiced syllables, the cheap vocoder of the ``audio`` fake,
levels and the mouth-opening track the face follows."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage, signal

_CTRL_RATE = 500  # Hz, rate of the speech control tracks (envelope, formants, pitch)
# (F1, F2, F3) in Hz of a few vowels of an adult male voice; scaled per speaker
_VOWELS = np.array([
    [730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480],
    [570, 840, 2410], [660, 1720, 2410], [440, 1020, 2240], [390, 1990, 2550],
], dtype=np.float64)
_NEUTRAL = np.array([500.0, 1500.0, 2500.0])


def draw_speaker(rng: np.random.Generator) -> dict[str, float]:
    """Draw a voice: pitch, vocal-tract scale, speaking rate, spectral tilt and breathiness."""
    female = rng.random() < 0.5
    return {
        "f0": float(rng.uniform(165, 250) if female else rng.uniform(85, 145)),
        "fscale": float(rng.uniform(1.06, 1.2) if female else rng.uniform(0.88, 1.03)),
        "rate": float(rng.uniform(0.85, 1.2)), "tilt": float(rng.uniform(0.5, 0.9)),
        "breath": float(rng.uniform(0.02, 0.08)), "intonation": float(rng.uniform(0.05, 0.14)),
        "bw": float(rng.uniform(0.8, 1.3)),
    }


def _raised_cos(x: np.ndarray) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(np.pi * np.clip(x, 0.0, 1.0))


def utterance(rng: np.random.Generator, spk: dict[str, float], duration: float, lead: float, sr: int,
               monotone: bool = False) -> dict[str, np.ndarray]:
    """Synthesise voiced syllables: formant-shaped harmonics of a pitch contour, with bursts and pauses.

    Args:
        rng: Random stream of this utterance.
        spk: Voice from `draw_speaker`.
        duration: Clip length in seconds.
        lead: Seconds of silence before the first syllable.
        sr: Sample rate.
        monotone: Flat pitch (a TTS-like prosody), used by some audio fakes.

    Returns:
        Dict with ``audio`` (float32, unit RMS over speech), ``formants`` (control-rate F1-F3) and ``amp``.
    """
    nc = int(np.ceil(duration * _CTRL_RATE)) + 2
    amp = np.zeros(nc)
    formants = np.tile(_NEUTRAL * spk["fscale"], (nc, 1))
    pitch = np.ones(nc)
    bursts: list[tuple[float, float, float]] = []
    rate = spk["rate"]
    t = lead
    end = duration - rng.uniform(0.08, 0.25)
    while t < end - 0.12:
        word_start = t
        for _ in range(int(rng.integers(1, 5))):
            sd = rng.uniform(0.12, 0.28) / rate
            if t + sd > end:
                break
            i0, i1 = int(round(t * _CTRL_RATE)), int(round((t + sd) * _CTRL_RATE))
            x = np.arange(i1 - i0) / _CTRL_RATE
            env = _raised_cos(x / rng.uniform(0.015, 0.04)) * _raised_cos((sd - x) / rng.uniform(0.04, 0.09))
            amp[i0:i1] = np.maximum(amp[i0:i1], rng.uniform(0.6, 1.0) * env)
            vowel = _VOWELS[int(rng.integers(len(_VOWELS)))]
            formants[i0:i1] = vowel * spk["fscale"] * (1.0 + rng.normal(0.0, 0.04, 3))
            if rng.random() < 0.55:
                bursts.append((t, rng.uniform(0.02, 0.07), rng.uniform(0.15, 0.5)))
            t += sd + rng.uniform(0.0, 0.03)
        if not monotone and t > word_start:
            w0, w1 = int(word_start * _CTRL_RATE), int(t * _CTRL_RATE)
            bump = np.sin(np.pi * np.linspace(0.0, 1.0, w1 - w0))
            pitch[w0:w1] += spk["intonation"] * rng.uniform(-0.5, 1.0) * bump
        t += rng.uniform(0.07, 0.35)
    # coarticulation: formants glide between vowels instead of jumping
    formants = ndimage.uniform_filter1d(formants, size=max(3, int(0.04 * _CTRL_RATE)), axis=0, mode="nearest")
    if not monotone:
        pitch *= 1.0 - rng.uniform(0.05, 0.15) * np.arange(nc) / nc
        wobble = ndimage.gaussian_filter1d(rng.normal(0.0, 1.0, nc), sigma=0.08 * _CTRL_RATE)
        pitch *= 1.0 + 0.02 * wobble / (np.abs(wobble).max() + 1e-9)
    f0_ctrl = spk["f0"] * pitch

    n = int(round(duration * sr))
    ts = np.arange(n) / sr
    ct = np.arange(nc) / _CTRL_RATE
    amp_s = np.interp(ts, ct, amp)
    active = np.flatnonzero(amp_s > 1e-4)
    f0 = np.interp(ts, ct, f0_ctrl)
    phase = 2.0 * np.pi * np.cumsum(f0) / sr
    pha = phase[active]
    # harmonic gains follow formants and pitch, which move slowly: evaluate them on every `sub`-th sample only
    sub = max(1, sr // 4000)
    act_d = active[::sub]
    f0d = f0[act_d]
    fd = [np.interp(ts[act_d], ct, formants[:, j]) for j in range(3)]
    limit = min(0.45 * sr, 5000.0)
    gains, bws = (1.0, 0.5, 0.25), (90.0 * spk["bw"], 110.0 * spk["bw"], 170.0 * spk["bw"])
    voiced = np.zeros(active.size)
    phis = rng.uniform(0.0, 2.0 * np.pi, 200)
    for k in range(1, min(199, int(limit / max(f0d.min(initial=limit), 40.0))) + 1):
        fk = k * f0d
        g = sum(gj / (1.0 + ((fk - fj) / bj) ** 2) for gj, fj, bj in zip(gains, fd, bws))
        g *= k ** (-spk["tilt"]) * np.clip((limit - fk) / (0.1 * limit), 0.0, 1.0)
        voiced += np.repeat(g, sub)[: active.size] * np.sin(k * pha + phis[k])
    audio = np.zeros(n)
    audio[active] = voiced * amp_s[active]
    vmean = float(np.abs(voiced).mean()) if voiced.size else 0.0
    hi = min(4000.0, 0.45 * sr)
    breath = signal.sosfilt(signal.butter(2, [900.0, hi], btype="band", fs=sr, output="sos"), rng.normal(0, 1, n))
    audio += spk["breath"] * 4.0 * breath * amp_s * vmean
    burst_sos = signal.butter(4, [min(2200.0, 0.3 * sr), min(7000.0, 0.45 * sr)], btype="band", fs=sr, output="sos")
    for start, length, level in bursts:
        s0, m = int(start * sr), int(length * sr)
        seg = signal.sosfilt(burst_sos, rng.normal(0.0, 1.0, m)) * np.exp(-np.arange(m) / (0.4 * m))
        audio[s0:s0 + m] += level * seg[: n - s0] * vmean * 3.0
    audio[: int(lead * sr)] = 0.0  # the leading silence is exact, whatever the burst filters did
    speech = audio[amp_s > 0.1]
    audio /= np.sqrt(np.mean(speech ** 2)) if speech.size else 1.0
    return {"audio": audio.astype(np.float32), "formants": formants, "amp": amp}


def vocode(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Resynthesise speech like a low-quality vocoder (the ``audio`` fake).

    Always damages the phase (random phase) or the harmonic structure (spectral smearing), then adds one or two of
    formant shift, band limiting and log-magnitude quantisation.
    """
    nper = 2 ** int(round(np.log2(sr * 0.032)))
    hop = nper // 4
    freqs, _, z = signal.stft(x, fs=sr, nperseg=nper, noverlap=nper - hop)
    mag, ph = np.abs(z), np.angle(z)
    if rng.random() < 0.55:
        ph = ph + rng.uniform(0.6, 1.0) * rng.uniform(-np.pi, np.pi, ph.shape)
    else:
        df = freqs[1] - freqs[0]
        mag = ndimage.gaussian_filter1d(mag, sigma=rng.uniform(90.0, 220.0) / df, axis=0)
        ph = ph + rng.uniform(0.2, 0.6) * rng.uniform(-np.pi, np.pi, ph.shape)
    extras = rng.permutation(["formant", "bandlimit", "quantise"])[: int(rng.integers(1, 3))]
    for op in extras:
        if op == "formant":
            alpha = rng.choice([rng.uniform(0.82, 0.93), rng.uniform(1.08, 1.22)])
            src = np.clip(freqs / alpha, 0.0, freqs[-1])
            mag = np.stack([np.interp(src, freqs, mag[:, j]) for j in range(mag.shape[1])], axis=1)
        elif op == "bandlimit":
            cutoff = min(rng.uniform(3200.0, 5500.0), 0.35 * sr)
            mag[freqs > cutoff] *= 0.01
        else:
            step = rng.uniform(2.0, 5.0)
            db = 20.0 * np.log10(mag + 1e-9)
            mag = 10.0 ** ((np.round(db / step) * step) / 20.0)
    _, y = signal.istft(mag * np.exp(1j * ph), fs=sr, nperseg=nper, noverlap=nper - hop)
    out = np.zeros_like(x)
    out[: min(len(x), len(y))] = y[: len(x)]
    return out


def unit_rms(x: np.ndarray, lead: float, sr: int) -> np.ndarray:
    """Gate everything before the speech onset to zero and scale the speech to unit RMS."""
    x = x.astype(np.float64).copy()
    x[: int(lead * sr)] = 0.0
    frame = max(1, sr // 100)
    usable = len(x) // frame * frame
    rms = np.sqrt(np.mean(x[:usable].reshape(-1, frame) ** 2, axis=1))
    loud = rms > 0.1 * rms.max(initial=0.0)
    level = np.sqrt(np.mean(rms[loud] ** 2)) if loud.any() else 1.0
    return (x / max(level, 1e-9)).astype(np.float32)


def mix_audio(speech: np.ndarray, nz: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """Set the loudness, add a light room noise floor and make stereo when asked; returns (channels, n)."""
    n = len(speech)
    level = 10.0 ** (nz["speech_db"] / 20.0)
    noise_level = level * 10.0 ** (nz["noise_db"] / 20.0)
    chans = []
    for c in range(nz["channels"]):
        # a stereo pair is the same voice with a tiny inter-channel delay and gain, plus independent noise
        delay = 0 if c == 0 else int(rng.integers(0, 8))
        gain = 1.0 if c == 0 else rng.uniform(0.85, 1.0)
        s = np.zeros(n)
        s[delay:] = speech[: n - delay] * gain
        noise = signal.lfilter([1.0], [1.0, -0.85], rng.normal(0.0, 1.0, n))
        noise *= noise_level / (noise.std() + 1e-12)
        chans.append(level * s + noise)
    out = np.stack(chans)
    peak = np.abs(out).max()
    if peak > 0.98:
        out *= 0.98 / peak
    return out.astype(np.float32)


def mouth_track(speech: np.ndarray, formants: np.ndarray, sr: int, fps: int, n_frames: int) -> dict[str, np.ndarray]:
    """Mouth opening per video frame from the short-time loudness of the voice (the lip-sync signal).

    Returns:
        Dict with ``open`` in [0, 1], ``width`` (about 0.85-1.15, wider for front vowels) and ``jaw`` factors.
    """
    x = speech.astype(np.float64) ** 2
    csum = np.concatenate([[0.0], np.cumsum(x)])
    half = int(0.035 * sr)
    centres = ((np.arange(n_frames) + 0.5) / fps * sr).astype(int)
    lo, hi = np.clip(centres - half, 0, len(x)), np.clip(centres + half, 0, len(x))
    rms = np.sqrt((csum[hi] - csum[lo]) / np.maximum(hi - lo, 1))
    ref = np.percentile(rms[rms > 0], 90) if (rms > 0).any() else 1.0
    op = np.clip(rms / max(ref, 1e-9), 0.0, 1.0) ** 0.7
    op[op < 0.08] = 0.0
    ct = (np.arange(n_frames) + 0.5) / fps * _CTRL_RATE
    idx = np.clip(ct.astype(int), 0, len(formants) - 1)
    f1, f2 = formants[idx, 0], formants[idx, 1]
    width = 0.85 + 0.3 * np.clip((f2 / f2.mean() - 0.6) / 0.9, 0.0, 1.0)
    jaw = 0.75 + 0.35 * np.clip((f1 / f1.mean() - 0.5) / 1.0, 0.0, 1.0)
    return {"open": np.clip(op * jaw, 0.0, 1.0), "width": width}
