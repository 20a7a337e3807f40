"""Manipulations that appear only in the sample's test split (``TEST_ONLY_KINDS``).

FFDV's test set was decided on manipulations absent from training; these kinds give the sample the same gap. Each
uses a mechanism that is neither one of the three training kinds (STFT vocoder, blended face swap / pasted mouth,
another utterance) nor one of the usual pseudo-fake families (self-blended faces, STFT phase / formant tricks on
the voice, audio-video offsets and swaps, clip splicing):

- ``reenact``: face re-enactment. The mouth is never drawn open: every frame starts from a neutral (closed-mouth)
  face whose mouth is opened by a piecewise-bilinear warp on a landmark grid (lip line, lower lip, chin, mouth
  corners), driven by the voice's mouth track, so the opening is stretched lip texture without teeth; the grid
  nodes also jitter from frame to frame (keypoint noise), so the inner face swims against its outline.
- ``lpc_voice``: a source-filter (LPC) vocoder voice. The speech is analysed at 16 kHz into all-pole filters per
  20-30 ms frame and resynthesised from a buzzy excitation (impulse or sawtooth train plus a little noise) whose
  pitch is flattened to one value, quantised to semitone steps or tracked; the face is the real one.
- ``lag_sync``: a lip-sync fake whose mouth follows the voice late, by a delay that varies along the clip
  (mean 120-280 ms, a sinusoidal swing of 40-100 ms), with the articulation a little damped.
- ``partial``: only a 0.5-1.5 s segment is fake. ``audio``: new words in the same voice from a 16 kHz
  synthesiser, cross-faded in (the lips keep the old words); ``video``: the face interior of the segment comes
  from a generator-like decoder (downscaled 2-4x, upscaled in x2 stages with a per-phase gain imbalance, the
  checkerboard of transposed convolutions), the mouth still in sync; ``both``: new words and a decoded face that
  mouths them.

Every class and function takes its own random stream, so the training kinds' streams are untouched.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from scipy import linalg, ndimage, signal

from .face import draw_dynamic, ellipse_mask
from .speech import mouth_track, utterance

TEST_ONLY_KINDS = ("reenact", "lpc_voice", "lag_sync", "partial")


def _fmt(**kw: Any) -> str:
    """``k=v;k=v`` for the ``fake_params`` column, floats rounded."""
    return ";".join(f"{k}={round(v, 3) if isinstance(v, float) else v}" for k, v in kw.items())


# ----------------------------------------------------------------------------------------------------------------
# reenact


class ReenactFake:
    """Re-enacted face: a closed-mouth face opened by a jittering landmark-grid warp (``reenact``)."""

    mode = "grid_warp"

    def __init__(self, rng: np.random.Generator, g: dict[str, float], look: dict[str, Any], base: np.ndarray,
                 n_frames: int) -> None:
        self.g, self.look, self.base = g, look, base
        h, cx, a = g["h"], g["cx"], g["a"]
        mw, my = g["mouth_w"], g["mouth_y"]
        self.o_max = g["mouth_open"] * 1.15
        self.gain = float(rng.uniform(0.8, 1.05))  # opening made by the warp, per unit of the voice's opening
        self.rest = float(rng.uniform(0.0, 0.12))  # mouth opening of the neutral frame that is warped
        self.jitter = float(rng.uniform(0.005, 0.012) * h)  # sd (px) of each landmark node per frame
        chin = g["cy"] + g["b"]
        # landmark rows and columns of the warp grid (patch coordinates); the outer ones stay fixed (no seam)
        self.rows = np.array([g["eye_y"] - 0.15 * h, g["eye_y"], g["nose_y"], my - 2.5 * g["lip_t"], my,
                              my + self.o_max, chin - 0.04 * h, chin + 0.05 * h])
        self.cols = np.array([cx - 0.95 * a, cx - 0.45 * a, cx - mw, cx, cx + mw, cx + 0.45 * a, cx + 0.95 * a])
        self.y0, self.y1 = int(np.floor(self.rows[0])), int(np.ceil(self.rows[-1])) + 1
        self.x0, self.x1 = int(np.floor(self.cols[0])), int(np.ceil(self.cols[-1])) + 1
        ys, xs = np.arange(self.y0, self.y1, dtype=np.float32), np.arange(self.x0, self.x1, dtype=np.float32)
        # fractional node indices of every pixel: remapping the node grid with them is piecewise bilinear
        fy = np.interp(ys, self.rows, np.arange(len(self.rows))).astype(np.float32)
        fx = np.interp(xs, self.cols, np.arange(len(self.cols))).astype(np.float32)
        self.fx, self.fy = np.meshgrid(fx, fy)
        self.gx, self.gy = np.meshgrid(xs, ys)
        # vertical node displacement per unit of opening: the upper lip lifts a little, the lower lip and the
        # jaw drop, the chin less; the mouth corners move half as much as the centre
        row_dy = np.array([0.0, 0.0, 0.0, -0.12, 0.0, 1.0, 0.75, 0.0])
        col_w = np.array([0.0, 0.0, 0.5, 1.0, 0.5, 0.0, 0.0])
        self.dy_unit = np.outer(row_dy, col_w)
        # horizontal: the corners follow the mouth width
        self.dx_unit = np.zeros_like(self.dy_unit)
        self.dx_unit[3:6, 2], self.dx_unit[3:6, 4] = -mw, mw
        inner = np.zeros_like(self.dy_unit)
        inner[1:-1, 1:-1] = 1.0
        self.node_jit = rng.normal(0.0, 1.0, (n_frames, 2) + inner.shape) * inner * self.jitter
        # a common drift of the whole inner face, smooth over a few frames
        drift = ndimage.gaussian_filter1d(rng.normal(0.0, 1.0, (n_frames, 2)), sigma=2.0, axis=0)
        self.drift = drift / (drift.std(axis=0) + 1e-9) * self.jitter * 0.8
        self.inner = inner

    def params(self) -> str:
        return _fmt(gain=self.gain, rest_open=self.rest, jitter_px=self.jitter)

    def apply(self, patch: np.ndarray, f: int, state: tuple[float, float, float, float]) -> np.ndarray:
        """Frame ``f``: draw the neutral face (real eyes) and open its mouth by the warp."""
        op, wd, eye, gaze = state
        src = draw_dynamic(self.base, self.g, self.look, self.rest, 1.0, eye, gaze)
        o = max(0.0, op - self.rest) * self.gain * self.g["mouth_open"]
        dy = self.dy_unit * o + (self.node_jit[f, 1] + self.drift[f, 1] * self.inner)
        dx = self.dx_unit * (wd - 1.0) + (self.node_jit[f, 0] + self.drift[f, 0] * self.inner)
        ddx = cv2.remap(dx.astype(np.float32), self.fx, self.fy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        ddy = cv2.remap(dy.astype(np.float32), self.fx, self.fy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out = src.copy()
        # backward map to first order: the pixel at p shows what the forward warp moved there, p - d(p)
        out[self.y0:self.y1, self.x0:self.x1] = cv2.remap(src, self.gx - ddx, self.gy - ddy, cv2.INTER_LINEAR,
                                                          borderMode=cv2.BORDER_REFLECT)
        return out


# ----------------------------------------------------------------------------------------------------------------
# lpc_voice


def lpc_vocode(x: np.ndarray, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Source-filter resynthesis: per-frame LPC envelopes excited by a buzzy pulse train (``lpc_voice``).

    Returns:
        The new speech (same length and rate as ``x``) and its parameters for ``fake_params``.
    """
    work = 16000
    up, down = work // np.gcd(work, sr), sr // np.gcd(work, sr)
    y = signal.resample_poly(x.astype(np.float64), up, down)
    frame = 2 * int(rng.uniform(0.02, 0.03) * work / 2)
    hop = frame // 2
    order = int(rng.integers(14, 21))
    pitch_mode = str(rng.choice(["flat", "stepped", "tracked"], p=[0.35, 0.35, 0.3]))
    excitation = str(rng.choice(["pulse", "saw"]))
    noise_mix = float(rng.uniform(0.03, 0.15))
    n_fr = int(np.ceil(max(len(y) - frame, 0) / hop)) + 1
    pad = np.zeros((n_fr - 1) * hop + frame)
    pad[: len(y)] = y
    win = signal.get_window("hann", frame)  # periodic: halves overlap-add to one
    idx = np.arange(frame)[None, :] + hop * np.arange(n_fr)[:, None]
    fr = pad[idx] * win
    nfft = 1 << int(np.ceil(np.log2(2 * frame)))
    ac = np.fft.irfft(np.abs(np.fft.rfft(fr, nfft, axis=1)) ** 2, nfft, axis=1)[:, :frame]
    energy = ac[:, 0]
    # pitch per frame: the autocorrelation of a 40 ms window, unbiased by the window's own, between 70 and 400 Hz;
    # the shortest lag within 10 % of the best one (no octave-down errors)
    pf = int(0.04 * work)
    pwin = signal.get_window("hann", pf)
    centres = hop * np.arange(n_fr) + frame / 2
    starts = np.clip((centres - pf / 2).astype(int), 0, len(pad) - pf)
    pfr = np.stack([pad[s:s + pf] for s in starts]) * pwin
    nfft_p = 1 << int(np.ceil(np.log2(2 * pf)))
    pac = np.fft.irfft(np.abs(np.fft.rfft(pfr, nfft_p, axis=1)) ** 2, nfft_p, axis=1)[:, :pf]
    wac = np.fft.irfft(np.abs(np.fft.rfft(pwin, nfft_p)) ** 2, nfft_p)[:pf]
    lo, hi = work // 400, work // 70
    norm = pac[:, lo:hi] / np.maximum(pac[:, :1], 1e-12) / (wac[lo:hi] / wac[0])
    best = norm.max(axis=1)
    peak = lo + np.argmax(norm >= 0.9 * best[:, None], axis=1)
    voiced = (best > 0.4) & (energy > 0.02 * energy.max(initial=0.0))
    f0 = np.where(voiced, work / peak, 0.0)
    if voiced.any():
        f0[voiced] = ndimage.median_filter(f0[voiced], size=5, mode="nearest")
        if pitch_mode == "flat":
            f0[voiced] = np.median(f0[voiced]) * rng.uniform(0.97, 1.03)
        elif pitch_mode == "stepped":
            block = int(rng.integers(3, 7))
            semis = np.round(12.0 * np.log2(f0[voiced] / 440.0))
            held = np.repeat(semis[::block], block)[: semis.size]
            f0[voiced] = 440.0 * 2.0 ** (held / 12.0)
    # excitation: unit power, a pulse (or sawtooth) train where voiced, noise elsewhere
    t = np.arange(len(pad))
    f0_s = np.interp(t, centres, f0)
    v_s = np.interp(t, centres, voiced.astype(float)) > 0.5
    f0_s[~v_s] = 0.0
    cyc = np.cumsum(f0_s) / work
    period = work / np.maximum(f0_s, 1.0)
    if excitation == "pulse":
        buzz = np.diff(np.floor(cyc), prepend=0.0) * np.sqrt(period)
    else:
        buzz = ((cyc % 1.0) - 0.5) * np.sqrt(12.0)
    noise = rng.normal(0.0, 1.0, len(pad))
    exc = np.where(v_s, np.sqrt(1.0 - noise_mix) * buzz + np.sqrt(noise_mix) * noise, noise)
    out = np.zeros(len(pad))
    wsum = float(np.sum(win ** 2))
    for i in range(n_fr):
        if energy[i] <= 1e-10:
            continue
        r = ac[i, : order + 1].copy()
        r[0] *= 1.0 + 1e-6
        coef = linalg.solve_toeplitz(r[:order], r[1:order + 1])
        err = max(float(r[0] - coef @ r[1:order + 1]), 0.0)
        a = np.concatenate([[1.0], -coef])
        s = i * hop
        seg = signal.lfilter([np.sqrt(err / wsum)], a, exc[s:s + frame])
        out[s:s + frame] += seg * win
    res = signal.resample_poly(out[: len(y)], down, up)
    full = np.zeros(len(x))
    full[: min(len(x), len(res))] = res[: len(x)]
    return full.astype(np.float32), _fmt(order=order, frame_ms=round(1000.0 * frame / work, 1), pitch=pitch_mode,
                                         excitation=excitation, noise_mix=noise_mix)


# ----------------------------------------------------------------------------------------------------------------
# lag_sync


def lagged_track(track: dict[str, np.ndarray], fps: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray],
                                                                                             str]:
    """The mouth track read late by a delay that varies along the clip (``lag_sync``)."""
    n = len(track["open"])
    t = (np.arange(n) + 0.5) / fps
    mean = float(rng.uniform(0.12, 0.28))
    swing = float(rng.uniform(0.04, min(0.1, mean - 0.06)))
    period = float(rng.uniform(0.8, 2.0))
    delay = mean + swing * np.sin(2.0 * np.pi * t / period + rng.uniform(0.0, 2.0 * np.pi))
    damp = float(rng.uniform(0.75, 0.95))
    late = t - delay
    out = {"open": damp * np.interp(late, t, track["open"], left=0.0),
           "width": np.interp(late, t, track["width"], left=1.0)}
    return out, _fmt(lag_mean_ms=round(1000 * mean), lag_swing_ms=round(1000 * swing), lag_period_s=period,
                     damping=damp)


# ----------------------------------------------------------------------------------------------------------------
# partial


class PartialFake:
    """A clip fake in one 0.5-1.5 s segment only: new words, a decoded face, or both (``partial``)."""

    def __init__(self, rng: np.random.Generator, g: dict[str, float], nz: dict[str, Any]) -> None:
        self.rng, self.g = rng, g
        duration, lead, fps = nz["duration"], nz["lead"], nz["fps"]
        self.mode = str(rng.choice(["audio", "video", "both"], p=[0.35, 0.3, 0.35]))
        length = round(float(min(rng.uniform(0.5, 1.5), duration - lead - 0.3)), 3)
        # whole milliseconds, so that the recorded segment is exactly the one manipulated
        self.start = round(float(rng.uniform(lead + 0.1, duration - length - 0.1)), 3)
        self.end = round(self.start + length, 3)
        t = (np.arange(nz["n_frames"]) + 0.5) / fps
        self.frames = (t >= self.start) & (t < self.end)
        self.fade = float(rng.uniform(0.01, 0.025))  # s, audio cross-fade at each end
        self.gain_db = float(rng.uniform(-3.0, 3.0))
        self.rate = float(rng.uniform(1.0, 1.15))
        # the decoder: 2 ** levels down, then x2 stages each with a per-phase gain imbalance
        self.levels = int(rng.integers(1, 3))
        self.imbalance = float(rng.uniform(0.05, 0.1))
        self.phase_gain = [1.0 + self.imbalance * _balanced(rng) for _ in range(self.levels)]
        h, cx, cy = g["h"], g["cx"], g["cy"]
        shape = (int(g["ph"]), int(g["pw"]))
        self.mask = ellipse_mask(shape, (cx, cy + 0.04 * h), (0.82 * g["a"], 0.44 * h), 0.03 * h)
        ys, xs = np.nonzero(self.mask > 0.01)
        self.box = (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1)
        self.new_track: dict[str, np.ndarray] | None = None

    @property
    def video(self) -> bool:
        return self.mode in ("video", "both")

    def params(self) -> str:
        return _fmt(mode=self.mode, fade_ms=round(1000 * self.fade), gain_db=self.gain_db,
                    decoder_levels=self.levels, imbalance=self.imbalance)

    def audio(self, speech: np.ndarray, spk: dict[str, float], nz: dict[str, Any]) -> np.ndarray:
        """``speech`` (unit RMS) with the segment's words replaced by new ones from a 16 kHz synthesiser.

        Also sets ``new_track``, the mouth track of the new words (used in ``both``). Outside the segment (and its
        cross-fades) the samples are ``speech``'s, unchanged.
        """
        sr, duration = nz["sample_rate"], nz["duration"]
        voice = dict(spk, rate=spk["rate"] * self.rate)
        words = utterance(self.rng, voice, duration, self.start - 0.05, 16000)
        up, down = sr // np.gcd(sr, 16000), 16000 // np.gcd(sr, 16000)
        new = np.zeros(len(speech))
        res = signal.resample_poly(words["audio"].astype(np.float64), up, down)
        new[: min(len(new), len(res))] = res[: len(new)] * 10.0 ** (self.gain_db / 20.0)
        ts = np.arange(len(speech)) / sr
        ramp = lambda x: np.clip(x / self.fade, 0.0, 1.0)  # noqa: E731
        w = ramp(ts - self.start) * ramp(self.end - ts)
        w = 0.5 - 0.5 * np.cos(np.pi * w)
        self.new_track = mouth_track(new, words["formants"], sr, nz["fps"], nz["n_frames"])
        return (speech * (1.0 - w) + new * w).astype(np.float32)

    def apply(self, patch: np.ndarray, f: int, state: tuple[float, float, float, float]) -> np.ndarray:
        """Frame ``f`` of the face patch: inside the segment, the face interior goes through the decoder."""
        if not (self.video and self.frames[f]):
            return patch
        y0, y1, x0, x1 = self.box
        region = patch[y0:y1, x0:x1].astype(np.float32)
        hh, ww = region.shape[:2]
        k = 2 ** self.levels
        img = cv2.resize(region, (max(2, ww // k), max(2, hh // k)), interpolation=cv2.INTER_AREA)
        for gain in self.phase_gain:
            img = cv2.resize(img, (img.shape[1] * 2, img.shape[0] * 2), interpolation=cv2.INTER_LINEAR)
            img *= np.tile(gain, (img.shape[0] // 2, img.shape[1] // 2))[..., None].astype(np.float32)
        img = cv2.resize(img, (ww, hh), interpolation=cv2.INTER_NEAREST)
        m = self.mask[y0:y1, x0:x1, None]
        out = patch.copy()
        out[y0:y1, x0:x1] = np.clip(region * (1 - m) + img * m, 0, 255).astype(np.uint8)
        return out


def _balanced(rng: np.random.Generator) -> np.ndarray:
    """A 2x2 per-phase gain offset with zero mean and unit peak (the checkerboard of a stride-2 upsampling)."""
    d = rng.normal(0.0, 1.0, (2, 2))
    d -= d.mean()
    return d / (np.abs(d).max() + 1e-9)
