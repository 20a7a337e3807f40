"""Embedded sample dataset: synthetic talking-face clips in the FFDV layout.

`make_sample_dataset` writes a small dataset with the challenge's layout (trainset/, valset/, testset/, label
files and a test template) so that the whole pipeline can be run and tested without the real data. Every clip
is an H.264 + AAC mp4 of a face drawn with OpenCV whose mouth follows a synthesised voice. Fakes carry a real
manipulation a detector can learn:

- ``audio``: the voice is resynthesised like a cheap vocoder (phase randomisation or spectral smearing, plus
  formant shift, band limiting or magnitude quantisation); the lips follow the manipulated sound.
- ``visual``: the face is manipulated, either a blended face swap (other skin inside a feathered ellipse, blurred
  by down/up-scaling, jittering seam) or a mouth region pasted from other frames.
- ``av_mismatch``: natural voice and natural face, but the voice is another utterance (mostly another speaker),
  so the mouth does not follow the sound.

Nuisance parameters (resolution, fps, duration, sample rate, channels, leading silence, encoder quality, noise
level, loudness) are drawn from a stream of their own, so they are independent of the label by construction.
The answers (test labels and manipulation kinds) are written outside the data folder.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any, Iterator

import av
import cv2
import numpy as np
from scipy import ndimage, signal

from ..core.progress import progress_bar
from .mp4 import write_mp4

KINDS = ("real", "audio", "visual", "av_mismatch")
FAKE_KINDS = KINDS[1:]
SPLIT_DIRS = {"train": "trainset", "val": "valset", "test": "testset"}
# (width, height, weight): small frames are favoured so that the set stays quick to write and to decode
RESOLUTIONS = ((320, 240, 12), (480, 360, 12), (640, 360, 10), (360, 480, 8), (640, 480, 4), (1280, 720, 1))
FPS_CHOICES = (25, 30)
SAMPLE_RATES = (16000, 22050, 44100, 48000)
MIN_CLIPS = 12
MAX_LEAD_S = 0.3

_CTRL_RATE = 500  # Hz, rate of the speech control tracks (envelope, formants, pitch)
# (F1, F2, F3) in Hz of a few vowels of an adult male voice; scaled per speaker
_VOWELS = np.array([
    [730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480],
    [570, 840, 2410], [660, 1720, 2410], [440, 1020, 2240], [390, 1990, 2550],
], dtype=np.float64)
_NEUTRAL = np.array([500.0, 1500.0, 2500.0])
_SKIN_TONES = np.array([
    [236, 200, 176], [228, 182, 150], [214, 160, 124], [196, 138, 104],
    [170, 116, 84], [141, 94, 66], [112, 74, 52], [88, 58, 42],
], dtype=np.float64)
_HAIR_COLOURS = np.array([
    [22, 18, 16], [48, 34, 26], [86, 60, 40], [120, 84, 52], [184, 152, 104], [150, 146, 140], [132, 62, 32],
], dtype=np.float64)
_IRIS_COLOURS = np.array([[70, 45, 30], [40, 28, 20], [70, 100, 130], [80, 100, 60], [110, 85, 50]], dtype=np.float64)
_AUDIO_CHUNK = 1024


# ----------------------------------------------------------------------------------------------------------------
# Plan: which clip is which


def _plan(n: int, seed: int) -> list[dict[str, Any]]:
    """Assign split, kind and a random hex name to each clip index.

    Args:
        n: Number of clips.
        seed: Dataset seed.

    Returns:
        One dict per clip with index, name, split, kind and target.
    """
    if n < MIN_CLIPS:
        raise ValueError(f"n must be at least {MIN_CLIPS} so that every split holds every fake kind, got {n}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5A4D]))
    n_val = n_test = max(4, int(round(0.2 * n)))
    sizes = {"train": n - n_val - n_test, "val": n_val, "test": n_test}
    plan: list[dict[str, Any]] = []
    names: set[str] = set()
    for split, m in sizes.items():
        n_fake = min(m - 1, max(3, int(round(m / 2))))
        offset = int(rng.integers(3))
        kinds = ["real"] * (m - n_fake) + [FAKE_KINDS[(offset + i) % 3] for i in range(n_fake)]
        for kind in rng.permutation(kinds):
            name = ""
            while not name or name in names:
                name = rng.bytes(4).hex()
            names.add(name)
            plan.append({"name": name, "split": split, "kind": str(kind), "target": int(kind != "real")})
    for index, clip in enumerate(plan):
        clip["index"] = index
    return plan


def _nuisance(rng: np.random.Generator) -> dict[str, Any]:
    """Draw the label-independent parameters of one clip (format, timing, encoder, levels, placement)."""
    weights = np.array([r[2] for r in RESOLUTIONS], dtype=np.float64)
    width, height, _ = RESOLUTIONS[int(rng.choice(len(RESOLUTIONS), p=weights / weights.sum()))]
    fps = int(rng.choice(FPS_CHOICES))
    n_frames = int(round(rng.uniform(2.0, 4.0) * fps))
    return {
        "width": width, "height": height, "fps": fps, "n_frames": n_frames, "duration": n_frames / fps,
        "sample_rate": int(rng.choice(SAMPLE_RATES)), "channels": int(rng.choice([1, 2])),
        "lead": float(rng.uniform(0.0, MAX_LEAD_S)),
        "crf": int(rng.integers(18, 29)), "audio_bitrate": int(rng.choice([64000, 96000, 128000])),
        "noise_sigma": float(rng.uniform(0.8, 3.0)),
        "speech_db": float(rng.uniform(-26.0, -17.0)), "noise_db": float(rng.uniform(-50.0, -36.0)),
        "face_frac": float(rng.uniform(0.34, 0.56)), "face_dx": float(rng.uniform(-0.14, 0.14)),
        "face_dy": float(rng.uniform(-0.05, 0.06)),
    }


# ----------------------------------------------------------------------------------------------------------------
# Speech


def _draw_speaker(rng: np.random.Generator) -> dict[str, float]:
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


def _utterance(rng: np.random.Generator, spk: dict[str, float], duration: float, lead: float, sr: int,
               monotone: bool = False) -> dict[str, np.ndarray]:
    """Synthesise voiced syllables: formant-shaped harmonics of a pitch contour, with bursts and pauses.

    Args:
        rng: Random stream of this utterance.
        spk: Voice from `_draw_speaker`.
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


def _vocode(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
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


def _unit_rms(x: np.ndarray, lead: float, sr: int) -> np.ndarray:
    """Gate everything before the speech onset to zero and scale the speech to unit RMS."""
    x = x.astype(np.float64).copy()
    x[: int(lead * sr)] = 0.0
    frame = max(1, sr // 100)
    usable = len(x) // frame * frame
    rms = np.sqrt(np.mean(x[:usable].reshape(-1, frame) ** 2, axis=1))
    loud = rms > 0.1 * rms.max(initial=0.0)
    level = np.sqrt(np.mean(rms[loud] ** 2)) if loud.any() else 1.0
    return (x / max(level, 1e-9)).astype(np.float32)


def _mix_audio(speech: np.ndarray, nz: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
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


def _mouth_track(speech: np.ndarray, formants: np.ndarray, sr: int, fps: int, n_frames: int) -> dict[str, np.ndarray]:
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


# ----------------------------------------------------------------------------------------------------------------
# Face drawing


def _draw_look(rng: np.random.Generator) -> dict[str, Any]:
    """Draw the appearance of a face: skin, hair, eyes, lips, texture and lighting."""
    skin = _SKIN_TONES[int(rng.integers(len(_SKIN_TONES)))] * rng.uniform(0.93, 1.07, 3)
    return {
        "skin": np.clip(skin, 20, 250), "hair": _HAIR_COLOURS[int(rng.integers(len(_HAIR_COLOURS)))],
        "hair_style": int(rng.choice(3, p=[0.5, 0.35, 0.15])), "iris": _IRIS_COLOURS[int(rng.integers(5))],
        "lip": np.array([rng.uniform(0.8, 0.95), rng.uniform(0.5, 0.65), rng.uniform(0.5, 0.65)]),
        "tex_lo": float(rng.uniform(0.02, 0.05)), "tex_hi": float(rng.uniform(0.01, 0.035)),
        "light": float(rng.uniform(-0.12, 0.12)), "tex_seed": int(rng.integers(2 ** 31)),
        "sheen": float(rng.uniform(12.0, 26.0)),
    }


def _draw_geometry(rng: np.random.Generator, face_h: float) -> dict[str, float]:
    """Place the facial features in patch coordinates for a face ``face_h`` pixels tall."""
    h = face_h
    # the patch is just large enough for hair, ears and the neck: it is warped every frame
    pw, ph = 2 * int(0.57 * h) + 2, 2 * int(0.76 * h) + 2
    cx, cy = pw / 2.0, 0.68 * h + 1
    j = lambda: rng.uniform(0.95, 1.05)  # noqa: E731 - small per-face proportions
    return {
        "h": h, "pw": pw, "ph": ph, "cx": cx, "cy": cy, "a": 0.39 * h * rng.uniform(0.92, 1.06), "b": 0.5 * h,
        "eye_y": cy - 0.08 * h * j(), "eye_dx": 0.17 * h * j(), "eye_w": 0.062 * h * j(), "eye_h": 0.03 * h * j(),
        "brow_dy": 0.072 * h * j(), "brow_w": 0.082 * h * j(), "brow_t": 0.02 * h * j(),
        "nose_y": cy + 0.1 * h * j(), "nose_w": 0.045 * h * j(),
        "mouth_y": cy + 0.245 * h * j(), "mouth_w": 0.105 * h * j(), "lip_t": 0.017 * h * j(),
        "mouth_open": 0.085 * h * j(), "hairline": cy - 0.33 * h * j(),
    }


def _ellipse_mask(shape: tuple[int, int], centre: tuple[float, float], axes: tuple[float, float],
                  sigma: float = 0.0) -> np.ndarray:
    """Float mask of a filled ellipse, optionally feathered by a Gaussian blur."""
    m = np.zeros(shape, np.uint8)
    cv2.ellipse(m, (int(round(centre[0])), int(round(centre[1]))), (max(1, int(axes[0])), max(1, int(axes[1]))),
                0, 0, 360, 255, -1, cv2.LINE_AA)
    out = m.astype(np.float32) / 255.0
    return cv2.GaussianBlur(out, (0, 0), sigma) if sigma > 0 else out


def _build_base(g: dict[str, float], look: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Static part of the face patch (skin with shading, hair, brows, nose, ears, neck).

    The shading mimics a lit face (dark eye sockets, bright nose bridge and cheeks), the pattern that a Haar
    frontal-face cascade looks for.

    Returns:
        RGB float32 patch (0-255) and its alpha (0-1).
    """
    ph, pw, h, a, b, cx, cy = int(g["ph"]), int(g["pw"]), g["h"], g["a"], g["b"], g["cx"], g["cy"]
    shape = (ph, pw)
    yy, xx = np.mgrid[0:ph, 0:pw].astype(np.float32)
    u, v = (xx - cx) / a, (yy - cy) / b
    rng = np.random.default_rng(look["tex_seed"])
    skin, hair = look["skin"].astype(np.float32), look["hair"].astype(np.float32)

    shade = 1.0 - 0.2 * u ** 2 - 0.06 * np.clip(v, 0, None) ** 2 + look["light"] * u
    blur = 0.035 * h

    def blob(centre: tuple[float, float], axes: tuple[float, float], sigma: float = blur) -> np.ndarray:
        return _ellipse_mask(shape, centre, axes, sigma)

    # `shade` scales the skin colour; `sheen` adds grey levels, so that dark skin keeps the light-dark pattern
    # (bright nose bridge, cheekbones and forehead around dark eye sockets) that a Haar cascade relies on
    sheen = np.zeros(shape, np.float32)
    for s in (-1, 1):
        ex = cx + s * g["eye_dx"]
        socket = blob((ex, g["eye_y"] - 0.01 * h), (1.5 * g["eye_w"], 2.4 * g["eye_h"]))
        shade -= 0.3 * socket
        sheen -= 10.0 * socket
        cheek = blob((cx + s * 0.5 * a, cy + 0.08 * h), (0.2 * h, 0.12 * h), 0.06 * h)
        shade += 0.09 * cheek
        sheen += 0.6 * look["sheen"] * cheek
        shade -= 0.08 * blob((cx + s * 0.06 * h, (g["eye_y"] + g["nose_y"]) / 2), (0.02 * h, 0.09 * h), 0.02 * h)
    bridge = np.zeros(shape, np.float32)
    cv2.line(bridge, (int(cx), int(g["eye_y"] - 0.03 * h)), (int(cx), int(g["nose_y"] - 0.01 * h)), 1.0,
             max(2, int(0.05 * h)), cv2.LINE_AA)
    bridge = cv2.GaussianBlur(bridge, (0, 0), 0.015 * h)
    shade += 0.13 * bridge
    sheen += look["sheen"] * bridge
    forehead = blob((cx, cy - 0.3 * h), (0.25 * h, 0.08 * h), 0.05 * h)
    shade += 0.06 * forehead
    sheen += 0.5 * look["sheen"] * forehead
    shade -= 0.16 * blob((cx, g["nose_y"] + 0.03 * h), (0.07 * h, 0.022 * h), 0.012 * h)
    shade -= 0.1 * blob((cx, g["mouth_y"] + 0.07 * h), (0.08 * h, 0.025 * h), 0.02 * h)
    shade -= 0.12 * np.clip((v - 0.7) / 0.3, 0, 1) * (np.abs(u) < 1)
    lo = cv2.GaussianBlur(rng.normal(0, 1, shape).astype(np.float32), (0, 0), 0.04 * h)
    lo /= np.abs(lo).max() + 1e-9
    hi = rng.normal(0, 1, shape).astype(np.float32)
    tex = 1.0 + look["tex_lo"] * lo + look["tex_hi"] * hi
    skin_img = skin[None, None, :] * (shade * tex)[..., None] + sheen[..., None]

    rgb = np.zeros((ph, pw, 3), np.float32)
    alpha = np.zeros(shape, np.float32)

    def paint(mask: np.ndarray, colour: np.ndarray) -> None:
        m = mask[..., None]
        rgb[:] = rgb * (1 - m) + colour * m
        alpha[:] = np.maximum(alpha, mask)

    hair_img = hair[None, None, :] * (1.0 + 0.06 * hi[..., None] + 0.1 * lo[..., None] - 0.15 * np.abs(u)[..., None])
    if look["hair_style"] == 1:  # long hair behind the face
        back = blob((cx, cy + 0.1 * h), (1.22 * a, 0.75 * h), 0.01 * h)
        paint(back * (yy > cy - 0.5 * h), hair_img)
    neck = np.zeros(shape, np.float32)
    cv2.rectangle(neck, (int(cx - 0.45 * a), int(cy + 0.2 * h)), (int(cx + 0.45 * a), ph), 1.0, -1)
    fade = np.clip((cy + 0.76 * h - yy) / (0.08 * h), 0.0, 1.0)  # the neck fades into the shirt collar
    paint(cv2.GaussianBlur(neck, (0, 0), 1.0) * fade, skin_img * 0.78)
    for s in (-1, 1):
        paint(blob((cx + s * 0.98 * a, g["eye_y"] + 0.07 * h), (0.06 * h, 0.11 * h), 0.7), skin_img * 0.85)
    paint(blob((cx, cy), (a, b), 0.8), skin_img)
    if look["hair_style"] != 2:  # 2 = bald / shaved
        cap = blob((cx, cy - 0.06 * h), (1.07 * a, 0.57 * h), 0.6)
        hairline = g["hairline"] + 0.12 * h * u ** 2
        top = (yy < hairline) | ((np.abs(u) > 0.86) & (yy < g["eye_y"] - 0.03 * h))
        paint(cap * cv2.GaussianBlur(top.astype(np.float32), (0, 0), 0.01 * h), hair_img)
    brow_col = np.minimum(hair * 0.7, skin * 0.45)
    for s in (-1, 1):
        brow = np.zeros(shape, np.float32)
        cv2.ellipse(brow, (int(cx + s * g["eye_dx"]), int(g["eye_y"] - g["brow_dy"] + 0.02 * h)),
                    (int(g["brow_w"]), int(0.03 * h)), 0, 200, 340, 1.0, max(2, int(g["brow_t"])), cv2.LINE_AA)
        paint(cv2.GaussianBlur(brow, (0, 0), 0.006 * h + 0.3) * 0.9, brow_col)
    for s in (-1, 1):  # nostrils
        paint(blob((cx + s * g["nose_w"] * 0.6, g["nose_y"]), (0.018 * h, 0.01 * h), 0.004 * h + 0.3) * 0.8,
              skin * 0.35)
    return rgb, alpha


def _draw_dynamic(base: np.ndarray, g: dict[str, float], look: dict[str, Any], mouth_open: float,
                  mouth_width: float, eye_open: float, gaze: float) -> np.ndarray:
    """Draw eyes and mouth for one frame onto a copy of the static patch; returns uint8 RGB."""
    img = np.clip(base, 0, 255).astype(np.uint8)
    h, cx = g["h"], g["cx"]
    skin = look["skin"]
    for s in (-1, 1):
        ex, ey = cx + s * g["eye_dx"], g["eye_y"]
        ew, eh = g["eye_w"], g["eye_h"]
        x0, y0 = int(ex - ew - 3), int(ey - 2 * eh - 3)
        x1, y1 = int(ex + ew + 4), int(ey + 2 * eh + 4)
        roi = img[y0:y1, x0:x1]
        c = (ex - x0, ey - y0)
        if eye_open > 0.15:
            sclera = _ellipse_mask(roi.shape[:2], c, (ew, eh * eye_open))
            iris = np.zeros(roi.shape[:2], np.float32)
            ir = 0.85 * eh
            cv2.circle(iris, (int(c[0] + gaze * ew * 0.35), int(c[1])), max(1, int(ir)), 1.0, -1, cv2.LINE_AA)
            pupil = np.zeros_like(iris)
            cv2.circle(pupil, (int(c[0] + gaze * ew * 0.35), int(c[1])), max(1, int(0.45 * ir)), 1.0, -1,
                       cv2.LINE_AA)
            layer = roi.astype(np.float32)
            white = 0.45 * skin + 0.55 * np.array([215.0, 210.0, 200.0])  # the eye white lies in shadow
            for mask, col in ((sclera, white), (sclera * iris, look["iris"]), (sclera * pupil, (15, 12, 12))):
                layer = layer * (1 - mask[..., None]) + np.asarray(col, np.float32) * mask[..., None]
            roi[:] = np.clip(layer, 0, 255).astype(np.uint8)
        lid_col = tuple(int(v) for v in skin * 0.25)
        lid_h = max(1, int(eh * max(eye_open, 0.05)))
        cv2.ellipse(roi, (int(c[0]), int(c[1])), (int(ew), lid_h), 0, 180, 360, lid_col, max(1, int(0.016 * h)),
                    cv2.LINE_AA)
    mx, my = cx, g["mouth_y"]
    mw = g["mouth_w"] * mouth_width
    op = g["mouth_open"] * mouth_open
    lip_col = tuple(int(v) for v in np.clip(skin * look["lip"], 0, 255))
    cv2.ellipse(img, (int(mx), int(my + op / 2)), (int(mw), int(g["lip_t"] * 1.5 + op / 2)), 0, 0, 360, lip_col, -1,
                cv2.LINE_AA)
    if op >= 2:
        x0, y0 = int(mx - mw - 2), int(my - 2)
        x1, y1 = int(mx + mw + 3), int(my + op + 3)
        roi = img[y0:y1, x0:x1]
        cavity = _ellipse_mask(roi.shape[:2], (mx - x0, my + op / 2 - y0), (0.8 * mw, op / 2))
        teeth = _ellipse_mask(roi.shape[:2], (mx - x0, my - y0), (0.6 * mw, 0.35 * op)) * cavity
        layer = roi.astype(np.float32)
        layer = layer * (1 - cavity[..., None]) + np.array([45, 14, 16], np.float32) * cavity[..., None]
        layer = layer * (1 - teeth[..., None]) + np.array([220, 214, 200], np.float32) * teeth[..., None]
        roi[:] = np.clip(layer, 0, 255).astype(np.uint8)
    else:
        dark = tuple(int(v) for v in np.clip(skin * look["lip"] * 0.45, 0, 255))
        cv2.ellipse(img, (int(mx), int(my)), (int(0.85 * mw), 1), 0, 0, 360, dark, max(1, int(0.008 * h)),
                    cv2.LINE_AA)
    # soften only the redrawn features; the static patch needs no per-frame work
    y0 = max(0, int(g["eye_y"] - 3 * g["eye_h"] - 4))
    y1 = int(g["mouth_y"] + g["mouth_open"] + 2 * g["lip_t"] + 6)
    x0 = max(0, int(cx - g["eye_dx"] - g["eye_w"] - 6))
    x1 = int(cx + g["eye_dx"] + g["eye_w"] + 7)
    img[y0:y1, x0:x1] = cv2.GaussianBlur(img[y0:y1, x0:x1], (0, 0), 0.004 * h + 0.3)
    return img


def _background(rng: np.random.Generator, w: int, hgt: int, face: tuple[float, float, float]) -> np.ndarray:
    """A static scene (gradient, wall panels or a room with a window) and the shoulders under the face."""
    base = rng.uniform(40, 220, 3)
    other = np.clip(base + rng.uniform(-70, 70, 3), 10, 245)
    ramp = np.linspace(0.0, 1.0, hgt, dtype=np.float32)[:, None, None]
    img = (base * (1 - ramp) + other * ramp) * np.ones((1, w, 1), np.float32)
    style = int(rng.integers(3))
    if style == 0:
        for _ in range(int(rng.integers(2, 6))):
            c = (float(rng.uniform(0, w)), float(rng.uniform(0, hgt)))
            m = _ellipse_mask((hgt, w), c, (rng.uniform(0.1, 0.4) * w, rng.uniform(0.1, 0.4) * hgt), 0.08 * w)
            img += m[..., None] * rng.uniform(-50, 50, 3)
    elif style == 1:
        period = int(rng.integers(max(8, w // 30), max(9, w // 6)))
        stripes = ((np.arange(w) // period) % 2).astype(np.float32)[None, :, None]
        img *= 1.0 - rng.uniform(0.04, 0.15) * stripes
    else:
        for _ in range(int(rng.integers(2, 5))):
            x0, y0 = int(rng.uniform(0, w * 0.9)), int(rng.uniform(0, hgt * 0.8))
            x1, y1 = x0 + int(rng.uniform(0.1, 0.4) * w), y0 + int(rng.uniform(0.1, 0.5) * hgt)
            cv2.rectangle(img, (x0, y0), (x1, y1), tuple(float(v) for v in rng.uniform(20, 250, 3)), -1)
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(1.5, 5.0))
    fx, fy, fh = face
    shirt = tuple(float(v) for v in rng.uniform(20, 230, 3))
    pts = np.array([[fx - 0.3 * fh, fy + 0.62 * fh], [fx + 0.3 * fh, fy + 0.62 * fh], [fx + 0.95 * fh, fy + 0.85 * fh],
                    [fx + 1.15 * fh, hgt + 5], [fx - 1.15 * fh, hgt + 5], [fx - 0.95 * fh, fy + 0.85 * fh]])
    cv2.fillPoly(img, [pts.astype(np.int32)], shirt, cv2.LINE_AA)
    return np.clip(img, 0, 255).astype(np.float32)


def _motion(rng: np.random.Generator, n_frames: int, fps: int, face_h: float) -> np.ndarray:
    """Slight head motion per frame: columns dx, dy (pixels), angle (degrees), scale."""
    t = np.arange(n_frames) / fps
    out = np.zeros((n_frames, 4))
    amps = (rng.uniform(0.01, 0.035) * face_h, rng.uniform(0.005, 0.02) * face_h, rng.uniform(0.8, 4.0), 0.015)
    for col, amp in enumerate(amps):
        f1, f2 = rng.uniform(0.12, 0.6, 2)
        p1, p2 = rng.uniform(0, 2 * np.pi, 2)
        out[:, col] = amp * (0.7 * np.sin(2 * np.pi * f1 * t + p1) + 0.3 * np.sin(2 * np.pi * f2 * t + p2))
    out[:, 3] += 1.0
    return out


def _blinks(rng: np.random.Generator, n_frames: int, fps: int) -> np.ndarray:
    """Eye openness per frame (1 open, 0 closed) with blinks every 1.5-4.5 s."""
    t = np.arange(n_frames) / fps
    eye = np.ones(n_frames)
    tb = rng.uniform(0.2, 2.5)
    while tb < t[-1] + 1:
        d = rng.uniform(0.12, 0.22)
        eye = np.minimum(eye, np.clip(np.abs(t - tb) / (d / 2), 0, 1))
        tb += rng.uniform(1.5, 4.5)
    return eye


# ----------------------------------------------------------------------------------------------------------------
# One clip


class _VisualFake:
    """Face manipulation of the ``visual`` fake: blended face swap or a mouth pasted from other frames."""

    def __init__(self, rng: np.random.Generator, g: dict[str, float], look: dict[str, Any], base: np.ndarray,
                 track: dict[str, np.ndarray]) -> None:
        self.rng, self.g, self.base, self.look = rng, g, base, look
        self.mode = "swap" if rng.random() < 0.7 else "mouth"
        shape = (int(g["ph"]), int(g["pw"]))
        h, cx, cy = g["h"], g["cx"], g["cy"]
        if self.mode == "swap":
            donor = _draw_look(rng)
            # the donor's skin must visibly differ (the cue a detector can learn), not only by chance
            if np.abs(donor["skin"] - look["skin"]).mean() < 25:
                donor["skin"] = np.clip(look["skin"] * rng.choice([0.78, 1.2]) + rng.uniform(-10, 10, 3), 20, 250)
            self.donor_look = donor
            centre = (cx + rng.uniform(-0.01, 0.01) * h, cy + rng.uniform(0.0, 0.06) * h)
            axes = (0.8 * g["a"] * rng.uniform(0.95, 1.05), 0.41 * h * rng.uniform(0.95, 1.05))
            sigma = rng.uniform(0.008, 0.05) * h
            self.masks = [_ellipse_mask(shape, (centre[0] + dx, centre[1] + dy), axes, sigma)
                          for dx, dy in rng.uniform(-0.006 * h - 0.5, 0.006 * h + 0.5, (4, 2))]
            donor_base, _ = _build_base(g, donor)
            m = self.masks[0][..., None]
            shift = (base * m).sum((0, 1)) / m.sum() - (donor_base * m).sum((0, 1)) / m.sum()
            self.donor_base = donor_base + rng.uniform(0.0, 0.7) * shift  # partial colour correction
            self.scale = rng.uniform(0.3, 0.65)
            self.seam = rng.uniform(0.03, 0.08) * rng.choice([-1, 1]) if rng.random() < 0.5 else 0.0
            ys, xs = np.nonzero(self.masks[0] > 0.01)
            self.box = (max(0, ys.min() - 4), ys.max() + 5, max(0, xs.min() - 4), xs.max() + 5)
        else:
            n = len(track["open"])
            shift = int(rng.integers(max(2, n // 5), max(3, n - n // 5)))
            self.alt_open = np.roll(track["open"][::-1] if rng.random() < 0.5 else track["open"], shift)
            x0, x1 = cx - 0.17 * h, cx + 0.17 * h
            y0, y1 = g["mouth_y"] - 0.07 * h, g["mouth_y"] + 0.15 * h
            rect = np.zeros(shape, np.float32)
            cv2.rectangle(rect, (int(x0), int(y0)), (int(x1), int(y1)), 1.0, -1)
            self.masks = [cv2.GaussianBlur(rect, (0, 0), rng.uniform(0.01, 0.03) * h)]
            self.gain = rng.uniform(0.93, 1.07, 3).astype(np.float32)
            self.scale = rng.uniform(0.45, 0.8)
            self.box = (int(y0 - 0.1 * h), int(y1 + 0.1 * h), int(x0 - 0.1 * h), int(x1 + 0.1 * h))

    def apply(self, patch: np.ndarray, f: int, state: tuple[float, float, float, float]) -> np.ndarray:
        """Manipulate frame ``f`` of the face patch (uint8), given (open, width, eye, gaze) of the real face."""
        op, wd, eye, gaze = state
        if self.mode == "swap":
            src = _draw_dynamic(self.donor_base, self.g, self.donor_look, op, wd, eye, gaze)
            mask = self.masks[int(self.rng.integers(len(self.masks)))] * self.rng.uniform(0.9, 1.0)
        else:
            src = _draw_dynamic(self.base, self.g, self.look, float(self.alt_open[f]), wd, eye,
                                gaze).astype(np.float32) * self.gain
            mask = self.masks[0]
        y0, y1, x0, x1 = self.box
        y0, x0 = max(0, y0), max(0, x0)
        region = np.clip(src[y0:y1, x0:x1], 0, 255).astype(np.uint8)
        hh, ww = region.shape[:2]
        small = cv2.resize(region, (max(2, int(ww * self.scale)), max(2, int(hh * self.scale))),
                           interpolation=cv2.INTER_AREA)
        region = cv2.resize(small, (ww, hh), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        m = mask[y0:y1, x0:x1, None]
        out = patch.astype(np.float32)
        blended = out[y0:y1, x0:x1] * (1 - m) + region * m
        if self.mode == "swap" and self.seam:
            ring = m[..., 0] * (1 - m[..., 0]) * 4.0
            blended *= 1.0 + self.seam * ring[..., None]
        out[y0:y1, x0:x1] = blended
        return np.clip(out, 0, 255).astype(np.uint8)


def _render_clip(clip: dict[str, Any], seed: int) -> dict[str, Any]:
    """Everything of one clip before encoding: frames generator, audio array and parameters.

    Returns:
        Dict with ``frames`` (an iterator of uint8 RGB frames), ``audio`` (float32, (channels, n)), ``params``.
    """
    ss = np.random.SeedSequence([seed, clip["index"]])
    r_nuis, r_face, r_utt, r_alt, r_fake, r_frame = (np.random.default_rng(s) for s in ss.spawn(6))
    nz = _nuisance(r_nuis)
    kind = clip["kind"]
    w, hgt, fps, n_frames, sr = nz["width"], nz["height"], nz["fps"], nz["n_frames"], nz["sample_rate"]
    duration, lead = nz["duration"], nz["lead"]

    # audio that is heard; the mouth follows it except in av_mismatch
    speaker = _draw_speaker(r_utt)
    monotone = kind == "audio" and r_fake.random() < 0.4
    heard = _utterance(r_utt, speaker, duration, lead, sr, monotone=monotone)
    speech = heard["audio"]
    mouth_src, mouth_formants = speech, heard["formants"]
    detail = ""
    if kind == "audio":
        speech = _unit_rms(_vocode(speech, sr, r_fake), lead, sr)
        mouth_src = speech
        detail = "vocoder" + ("+monotone" if monotone else "")
    elif kind == "av_mismatch":
        same_voice = r_alt.random() < 0.3
        other = dict(speaker) if same_voice else _draw_speaker(r_alt)
        if not same_voice and abs(np.log(other["f0"] / speaker["f0"])) < 0.15:
            other["f0"] *= 1.25 if other["f0"] < 160 else 0.8
        seen = _utterance(r_alt, other, duration, float(r_alt.uniform(0.0, MAX_LEAD_S)), sr)
        # the face mouths the utterance of `other` while the clip plays `heard`
        mouth_src, mouth_formants = seen["audio"], seen["formants"]
        detail = "same_voice" if same_voice else "other_voice"
    audio = _mix_audio(_unit_rms(speech, lead, sr), nz, r_nuis)
    track = _mouth_track(mouth_src, mouth_formants, sr, fps, n_frames)

    face_h = nz["face_frac"] * min(w, hgt)
    fx = w / 2 + nz["face_dx"] * w
    fy = np.clip(hgt * (0.47 + nz["face_dy"]), 0.62 * face_h, hgt - 0.55 * face_h)
    look = _draw_look(r_face)
    g = _draw_geometry(r_face, face_h)
    base, alpha = _build_base(g, look)
    bg = _background(r_face, w, hgt, (fx, fy, face_h))
    motion = _motion(r_face, n_frames, fps, face_h)
    eyes = _blinks(r_face, n_frames, fps)
    gaze = np.clip(ndimage.gaussian_filter1d(r_face.normal(0, 1, n_frames), fps * 0.5) * 3, -1, 1)
    fake = _VisualFake(r_fake, g, look, base, track) if kind == "visual" else None
    if fake is not None:
        detail = fake.mode

    bg8 = np.clip(bg + 0.5, 0, 255).astype(np.uint8)
    # sensor noise as saturating uint8 add/subtract: much cheaper per frame than float arithmetic
    noise_bank = [np.rint(r_nuis.standard_normal((hgt, w, 3), dtype=np.float32) * np.float32(nz["noise_sigma"]))
                  for _ in range(4)]
    noise_bank = [(np.clip(z, 0, 255).astype(np.uint8), np.clip(-z, 0, 255).astype(np.uint8)) for z in noise_bank]

    def frames() -> Iterator[np.ndarray]:
        for f in range(n_frames):
            state = (float(track["open"][f]), float(track["width"][f]), float(eyes[f]), float(gaze[f]))
            patch = _draw_dynamic(base, g, look, *state)
            if fake is not None:
                patch = fake.apply(patch, f, state)
            dx, dy, ang, sc = motion[f]
            m = cv2.getRotationMatrix2D((g["cx"], g["cy"]), float(ang), float(sc))
            m[:, 2] += (fx + dx - g["cx"], fy + dy - g["cy"])
            corners = np.array([[0, 0, 1], [g["pw"], 0, 1], [0, g["ph"], 1], [g["pw"], g["ph"], 1]]) @ m.T
            x0, y0 = max(0, int(corners[:, 0].min()) - 1), max(0, int(corners[:, 1].min()) - 1)
            x1, y1 = min(w, int(corners[:, 0].max()) + 2), min(hgt, int(corners[:, 1].max()) + 2)
            frame = bg8.copy()
            if x1 > x0 and y1 > y0:
                m[:, 2] -= (x0, y0)
                size = (x1 - x0, y1 - y0)
                warped = cv2.warpAffine(patch, m, size, flags=cv2.INTER_LINEAR)
                al = cv2.warpAffine(alpha, m, size, flags=cv2.INTER_LINEAR)
                frame[y0:y1, x0:x1] = cv2.blendLinear(warped, frame[y0:y1, x0:x1], al, 1.0 - al)
            pos, neg = noise_bank[int(r_frame.integers(len(noise_bank)))]
            yield cv2.subtract(cv2.add(frame, pos), neg)

    params = {k: v for k, v in nz.items() if k not in ("face_dx", "face_dy")}
    params.update({"face_x": round(float(fx), 2), "face_y": round(float(fy), 2), "face_h": round(float(face_h), 2),
                   "detail": detail})
    return {"frames": frames(), "audio": audio, "params": params}


def _encode(path: Path, frames: Iterator[np.ndarray], audio: np.ndarray, p: dict[str, Any]) -> None:
    """Write H.264 video and AAC audio to an mp4 with PyAV (libx264, single-threaded so output is repeatable)."""
    # veryfast with the cheapest motion search: a third quicker at the same size (mbtree, kept on, is what stops
    # the sensor noise from inflating the files); the "fast" AAC coder is about 3x quicker than the default
    # two-loop search, at the same bitrate
    write_mp4(path, frames, audio, width=p["width"], height=p["height"], fps=p["fps"], sample_rate=p["sample_rate"],
              vcodec=_video_codec() or "libx264",
              video_options={"crf": str(p["crf"]), "preset": "veryfast", "threads": "1", "x264-params": "me=dia:subme=1"},
              audio_options={"aac_coder": "fast"}, audio_bitrate=p["audio_bitrate"], container_format="mp4")


def _video_codec() -> str | None:
    """The H.264 encoder PyAV offers (libx264 in the PyPI wheels), or None when it has none."""
    for name in ("libx264", "h264"):
        if name in av.codecs_available:
            return name
    return None


def _encode_ffmpeg(path: Path, frames: Iterator[np.ndarray], audio: np.ndarray, p: dict[str, Any]) -> None:
    """Fallback writer: raw RGB frames piped to the static ffmpeg of imageio-ffmpeg, the audio from a wav."""
    import subprocess
    import tempfile
    import wave

    import imageio_ffmpeg

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "audio.wav"
        with wave.open(str(wav), "wb") as fh:
            fh.setnchannels(audio.shape[0])
            fh.setsampwidth(2)
            fh.setframerate(p["sample_rate"])
            fh.writeframes((np.clip(audio.T, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes())
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{p['width']}x{p['height']}", "-r", str(p["fps"]),
               "-i", "-", "-i", str(wav), "-map", "0:v", "-map", "1:a",
               "-c:v", "libx264", "-preset", "veryfast", "-crf", str(p["crf"]), "-x264-params", "me=dia:subme=1",
               "-threads", "1", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", str(p["audio_bitrate"]),
               "-f", "mp4", str(path)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdin is not None
        try:
            for rgb in frames:
                proc.stdin.write(np.ascontiguousarray(rgb).tobytes())
        finally:
            proc.stdin.close()
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            proc.wait()
        if proc.returncode != 0:
            raise RuntimeError(f"ffmpeg failed on {path.name}: {err.strip()[-500:]}")


def _make_clip(job: tuple[dict[str, Any], int, str]) -> dict[str, Any]:
    """Pool worker: render and encode one clip (atomically); errors are returned, not raised."""
    clip, seed, out_dir = job
    path = Path(out_dir) / SPLIT_DIRS[clip["split"]] / f"{clip['name']}.mp4"
    tmp = path.with_name(path.name + ".part")
    row = dict(clip)
    try:
        rendered = _render_clip(clip, seed)
        write = _encode if _video_codec() else _encode_ffmpeg
        write(tmp, rendered["frames"], rendered["audio"], rendered["params"])
        os.replace(tmp, path)
        row.update(rendered["params"])
        row["error"] = ""
    except Exception as exc:  # one broken clip must not lose the others; it is reported at the end
        tmp.unlink(missing_ok=True)
        row["error"] = f"{type(exc).__name__}: {exc}"
    return row


def _init_worker() -> None:
    cv2.setNumThreads(1)  # the pool already uses every core


# ----------------------------------------------------------------------------------------------------------------
# Public API


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    """Write a CSV atomically (tmp name + os.replace)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)


def make_sample_dataset(out: Path, n: int = 100, seed: int = 0, progress: bool = True,
                        workers: int | None = None) -> dict[str, Any]:
    """Write a small FFDV-layout dataset of synthetic talking-face clips, real and fake.

    Layout: ``out/data/{trainset,valset,testset}/*.mp4``, ``out/data/train_label.txt`` and ``val_label.txt``
    (``video_name,target``, 1 = fake), ``out/data/test_template.csv`` (``video_name,score``, score empty, shuffled
    rows). Answers lie outside the data folder: ``out/answers/test_label.txt``, ``out/answers/manipulations.csv``
    (``video_name,split,target,kind``) and ``out/answers/clip_params.csv`` (every drawn parameter, for audits).

    Args:
        out: Output folder; ``data/`` and ``answers/`` are created in it. Old mp4s of the split folders are removed.
        n: Number of clips (at least 12); about 60/20/20 train/val/test and half of each split fake.
        seed: Seed; the same seed gives the same names, labels, frames and audio samples.
        progress: Show a progress bar (core.progress).
        workers: Processes (default: usable cores, at most n).

    Returns:
        Dict with ``data_root`` and ``answers_dir`` (Paths), ``counts`` (``{split: {kind: count, "total": count}}``),
        ``errors`` (list of ``(video_name, message)`` for clips that could not be written; those are left out of
        the label files) and ``seconds``.
    """
    t0 = time.time()
    out = Path(out)
    plan = _plan(n, seed)
    data_root, answers = out / "data", out / "answers"
    keep = {f"{c['name']}.mp4" for c in plan}
    for sub in SPLIT_DIRS.values():
        (data_root / sub).mkdir(parents=True, exist_ok=True)
        for old in [*(data_root / sub).glob("*.mp4"), *(data_root / sub).glob("*.mp4.part")]:
            if old.name not in keep:  # clips of an earlier run with other names, and half-written files
                old.unlink()
    answers.mkdir(parents=True, exist_ok=True)

    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = max(1, min(int(workers), n))
    jobs = [(c, seed, str(data_root)) for c in plan]
    rows: list[dict[str, Any]] = []
    bar = progress_bar(total=n, desc="sample clips", unit="clip", disable=not progress)
    if workers == 1:
        _init_worker()
        for job in jobs:
            rows.append(_make_clip(job))
            bar.update()
    else:
        # spawn, not fork: a fork after OpenCV/BLAS started their threads can deadlock the workers
        with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            for row in pool.imap_unordered(_make_clip, jobs, chunksize=1):
                rows.append(row)
                bar.update()
    bar.close()
    rows.sort(key=lambda r: r["index"])
    errors = [(r["name"], r["error"]) for r in rows if r["error"]]
    ok = [r for r in rows if not r["error"]]

    for split, fname in (("train", "train_label.txt"), ("val", "val_label.txt")):
        _write_csv(data_root / fname, ["video_name", "target"],
                   [[f"{r['name']}.mp4", r["target"]] for r in ok if r["split"] == split])
    test = [r for r in ok if r["split"] == "test"]
    order = np.random.default_rng(np.random.SeedSequence([seed, 0x7E57])).permutation(len(test))
    _write_csv(data_root / "test_template.csv", ["video_name", "score"],
               [[f"{test[i]['name']}.mp4", ""] for i in order])
    _write_csv(answers / "test_label.txt", ["video_name", "target"], [[f"{r['name']}.mp4", r["target"]] for r in test])
    _write_csv(answers / "manipulations.csv", ["video_name", "split", "target", "kind"],
               [[f"{r['name']}.mp4", r["split"], r["target"], r["kind"]] for r in ok])
    param_cols = ["width", "height", "fps", "n_frames", "duration", "sample_rate", "channels", "lead", "crf",
                  "audio_bitrate", "noise_sigma", "speech_db", "noise_db", "face_frac", "face_x", "face_y", "face_h",
                  "detail"]
    _write_csv(answers / "clip_params.csv", ["video_name", "split", "target", "kind"] + param_cols,
               [[f"{r['name']}.mp4", r["split"], r["target"], r["kind"]]
                + [round(r[c], 4) if isinstance(r[c], float) else r[c] for c in param_cols] for r in ok])
    counts: dict[str, dict[str, int]] = {}
    for split in SPLIT_DIRS:
        sel = [r["kind"] for r in ok if r["split"] == split]
        counts[split] = {k: sel.count(k) for k in KINDS}
        counts[split]["total"] = len(sel)
    if errors:
        print(f"sample-data: {len(errors)} clip(s) failed and were left out:")
        for name, msg in errors:
            print(f"  {name}.mp4: {msg}")
    return {"data_root": data_root, "answers_dir": answers, "counts": counts, "errors": errors,
            "seconds": round(time.time() - t0, 2)}
