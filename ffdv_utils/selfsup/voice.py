"""Voice naturalness: a small CNN that tells real speech windows from the same speech re-synthesised by vocoders.

Training (real clips only): each clip's audio (16 kHz, the first ``train_seconds``) is re-synthesised by every
vocoder of :mod:`.vocoders`; log-linear spectrogram windows (``win`` frames of a ``n_fft`` STFT, 10 ms hop) are cut
at the same speech-active places from the original and from every copy. The network sees one window at a time,
half of them real, and learns "re-synthesised or not" (binary cross-entropy). Because both sides carry the same
words, speaker and recording, what it can learn is how a vocoder changes speech, which is what a generated voice
shares with a vocoded one (Wang & Yamagishi, ICASSP 2023). Scoring: the mean (or a quantile, ``pool``) of the
re-synthesised probability over the speech-active windows of a clip's own audio; a clip without audio gets NaN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..media.decode import load_audio
from .common import COMMON_DEFAULTS, ClipCache, SelfSupModel
from .vocoders import available_vocoders, codec_roundtrip, resynthesise

__all__ = ["VoiceModel", "VOICE_DEFAULTS", "fit", "log_spectrogram", "speech_windows", "SpecCNN"]

VOICE_DEFAULTS: dict[str, Any] = {
    **COMMON_DEFAULTS,
    "sr": 16000,
    "n_fft": 512,
    "hop": 160,
    "win": 64,                  # frames per window (0.64 s at a 10 ms hop)
    "train_seconds": 10.0,      # audio per training clip that is re-synthesised
    "train_windows": 12,        # stretches kept per training clip (each with every vocoder's copy)
    "train_span": 2,            # a stretch is this many windows long; each draw crops one window at random
    "score_seconds": 30.0,      # audio read per scored clip
    "score_windows": 32,        # windows scored per clip at most (evenly spread over the speech)
    "vocoders": ["griffin_lim", "lpc", "phase_vocoder", "world"],
    "active_db": 30.0,          # a frame is speech-active within this many dB of the clip's loudest frame
    "dither_db": -60.0,         # white noise added to every version, relative to the clip's RMS (hides digital silence)
    "codec_aug": 0.5,           # probability that each version (real and re-synthesised alike) passes a lossy codec
    "width": 16,                # channels of the first convolution
    "pool": "mean",             # clip score: "mean" of window probabilities or a quantile such as "q0.9"
    # "plain": the pooled probability that the clip's windows are re-synthesised. "relative": the clip's own windows
    # against its own re-synthesised copies (mean logit of the clip minus mean logit of its copies, pooled over
    # windows): real speech stands apart from its copies, speech that already went through a vocoder hardly does;
    # the recording's channel (codec, noise, room) is on both sides and cancels
    "score_mode": "plain",
    "version": 1,
}


def log_spectrogram(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """(frames, n_fft // 2 + 1) float32 power in dB."""
    spec = np.abs(librosa.stft(np.asarray(x, np.float32), n_fft=n_fft, hop_length=hop, center=True)) ** 2
    return (10.0 * np.log10(spec + 1e-10)).T.astype(np.float32)


def speech_windows(spec_db: np.ndarray, win: int, k: int, active_db: float) -> np.ndarray:
    """Start frames of at most ``k`` windows, evenly spread over the speech-active ones (half-window hop).

    A frame is active within ``active_db`` of the loudest frame; a window is active when 60% of its frames are.
    Without any active window the loudest windows are taken; a clip shorter than a window gives one start, 0.
    """
    n = len(spec_db)
    if n <= win:
        return np.zeros(1, np.int64)
    energy = 10.0 * np.log10(np.sum(10.0 ** (spec_db / 10.0), axis=1) + 1e-10)
    active = energy > energy.max() - active_db
    starts = np.arange(0, n - win + 1, max(1, win // 2))
    frac = np.array([active[s:s + win].mean() for s in starts])
    good = starts[frac >= 0.6]
    if len(good) == 0:
        good = starts[np.argsort(-frac)[:k]]
        good.sort()
    if len(good) > k:
        good = good[np.round(np.linspace(0, len(good) - 1, k)).astype(int)]
    return good.astype(np.int64)


def _pad_frames(spec: np.ndarray, win: int) -> np.ndarray:
    if len(spec) >= win:
        return spec
    floor = spec.min() if spec.size else -100.0
    return np.concatenate([spec, np.full((win - len(spec), spec.shape[1]), floor, np.float32)])


def _dither(x: np.ndarray, db: float, rng: np.random.Generator) -> np.ndarray:
    rms = float(np.sqrt(np.mean(x ** 2))) if x.size else 0.0
    return (x + rng.normal(0, max(rms, 1e-4) * 10 ** (db / 20), x.shape)).astype(np.float32)


def _seed_of(path: Path) -> int:
    return int.from_bytes(path.name.encode()[:8].ljust(8, b"\0"), "little") % (2**31)


def train_entry(path: Path, p: Mapping[str, Any], seconds_key: str = "train_seconds",
                windows_key: str = "train_windows", span: int = 1) -> np.ndarray:
    """float16 (1 + n_vocoders, n_windows, win, bins): windows of the clip's audio, then of each vocoder's copy."""
    x = load_audio(path, p["sr"], p[seconds_key])
    if x.size < p["n_fft"]:
        raise ValueError("no audio (or under one FFT frame)")
    rng = np.random.default_rng(_seed_of(path))
    versions = [x] + [resynthesise(x, p["sr"], name, rng) for name in p["vocoders"]]
    if p.get("codec_aug", 0.0) > 0:
        versions = [codec_roundtrip(v, p["sr"], rng) if rng.random() < p["codec_aug"] else v for v in versions]
    length = p["win"] * span
    specs = [_pad_frames(log_spectrogram(_dither(v, p["dither_db"], rng), p["n_fft"], p["hop"]), length)
             for v in versions]
    starts = speech_windows(specs[0], length, p[windows_key], p["active_db"])
    return np.stack([np.stack([s[a:a + length] for a in starts]) for s in specs]).astype(np.float16)


def score_entry(path: Path, p: Mapping[str, Any]) -> np.ndarray:
    """float16 (n_windows, win, bins): the speech-active windows of a clip's own audio."""
    x = load_audio(path, p["sr"], p["score_seconds"])
    if x.size < p["n_fft"]:
        raise ValueError("no audio (or under one FFT frame)")
    rng = np.random.default_rng(_seed_of(path))
    spec = _pad_frames(log_spectrogram(_dither(x, p["dither_db"], rng), p["n_fft"], p["hop"]), p["win"])
    starts = speech_windows(spec, p["win"], p["score_windows"], p["active_db"])
    return np.stack([spec[a:a + p["win"]] for a in starts]).astype(np.float16)


_PREP_KEYS = ("sr", "n_fft", "hop", "win", "active_db", "dither_db", "version")


def train_cache(p: Mapping[str, Any]) -> ClipCache:
    prep = {k: p[k] for k in _PREP_KEYS + ("train_seconds", "train_windows", "train_span", "vocoders", "codec_aug")}
    return ClipCache("voice-train", prep, partial(train_entry, p=prep, span=int(p["train_span"])))


def relative_cache(p: Mapping[str, Any]) -> ClipCache:
    prep = {k: p[k] for k in _PREP_KEYS + ("score_seconds", "score_windows", "vocoders")}
    return ClipCache("voice-rel", prep, partial(train_entry, p=prep, seconds_key="score_seconds",
                                                windows_key="score_windows"))


def score_cache(p: Mapping[str, Any]) -> ClipCache:
    prep = {k: p[k] for k in _PREP_KEYS + ("score_seconds", "score_windows")}
    return ClipCache("voice-score", prep, partial(score_entry, p=prep))


class SpecCNN(nn.Module):
    """Strided 3x3 convolutions over (frequency, time); time is averaged out, frequency positions are kept for the
    head (a vocoder's traces sit at particular frequencies). About 60k parameters at width 16 and 257 bins."""

    def __init__(self, n_bins: int, win: int, width: int = 16) -> None:
        super().__init__()
        chans = [1, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(chans[i + 1]), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            f = self.features(torch.zeros(1, 1, n_bins, win)).shape
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(f[1] * f[2], 64), nn.ReLU(inplace=True), nn.Dropout(0.2),
                                  nn.Linear(64, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, win, bins) dB -> logit (B,) of "re-synthesised"."""
        x = x.float()
        x = (x - x.mean(dim=(1, 2), keepdim=True)) / (x.std(dim=(1, 2), keepdim=True) + 1e-5)
        h = self.features(x.transpose(1, 2).unsqueeze(1)).mean(dim=3)  # (B, C, F')
        return self.head(h).squeeze(1)


def _take_train(arr: np.ndarray, w: int, rng: np.random.Generator, win: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A pair: a window cropped at random from a real stretch, and the same window of one vocoder's copy.

    Pairs make the two sides share words, speaker and recording in every batch, and random crops keep the network
    from memorising the few real windows of a small training set (which would make every unseen clip look fake).
    """
    a = int(rng.integers(0, arr.shape[2] - win + 1))
    v = int(rng.integers(1, arr.shape[0]))
    return (torch.from_numpy(np.asarray(arr[0, w, a:a + win], np.float32)),
            torch.from_numpy(np.asarray(arr[v, w, a:a + win], np.float32)))


def _loss(net: nn.Module, batch: Any) -> torch.Tensor:
    dev = next(net.parameters()).device
    real, voc = (t.to(dev, non_blocking=True) for t in batch)
    y = torch.cat([torch.zeros(len(real)), torch.ones(len(voc))]).to(dev)
    return F.binary_cross_entropy_with_logits(net(torch.cat([real, voc])), y)


def _pool(probs: np.ndarray, how: str) -> float:
    if how == "mean":
        return float(np.mean(probs))
    if how.startswith("q"):
        return float(np.quantile(probs, float(how[1:])))
    raise ValueError(f"pool must be 'mean' or 'q<quantile>', not {how!r}")


class VoiceModel(SelfSupModel):
    """Real vs vocoder-re-synthesised speech windows; clip score = pooled window probability of re-synthesis."""

    kind = "voice"
    defaults = VOICE_DEFAULTS

    @classmethod
    def build_net(cls, config: Mapping[str, Any]) -> nn.Module:
        return SpecCNN(config["n_fft"] // 2 + 1, config["win"], config["width"])

    @classmethod
    def _fit(cls, paths: Sequence[Path], p: dict[str, Any]) -> VoiceModel:
        p["vocoders"] = available_vocoders(p["vocoders"])
        if not p["vocoders"]:
            raise ValueError("no vocoder available")
        cache = train_cache(p)
        files, failures = cache.build(paths, workers=int(p["prep_workers"]), progress=bool(p["progress"]))
        keep = [f for f in files if f is not None]
        if not keep:
            raise ValueError(f"no training clip could be read: {failures[:3]}")
        counts = [np.load(f, mmap_mode="r").shape[1] for f in keep]
        return cls.train_windows(keep, counts, partial(_take_train, win=int(p["win"])), _loss, p, failures)

    def window_probs(self, entry: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.asarray(entry, np.float32)).to(self.device)
        return torch.sigmoid(self.net(x)).float().cpu().numpy()

    def window_logits(self, entry: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.asarray(entry, np.float32)).to(self.device)
        return self.net(x).float().cpu().numpy()

    def _score_paths(self, paths: Sequence[Path]) -> np.ndarray:
        mode = self.config.get("score_mode", "plain")
        if mode not in ("plain", "relative"):
            raise ValueError(f"score_mode must be 'plain' or 'relative', not {mode!r}")
        cache = score_cache(self.config) if mode == "plain" else relative_cache(self.config)
        files, self.failures = cache.build(paths, workers=int(self.config.get("prep_workers", 1)))
        out = np.full(len(paths), np.nan)
        for i, f in enumerate(files):
            if f is None:
                continue
            entry = np.load(f)
            if mode == "plain":
                out[i] = _pool(self.window_probs(entry), self.config["pool"])
            else:
                v, n = entry.shape[:2]
                logits = self.window_logits(entry.reshape(v * n, *entry.shape[2:])).reshape(v, n)
                out[i] = _pool(logits[0] - logits[1:].mean(axis=0), self.config["pool"])
        return out


def fit(real_paths: Sequence[str | Path], params: Mapping[str, Any] | None = None) -> VoiceModel:
    """Trains a :class:`VoiceModel` on real clips (see the module docstring)."""
    return VoiceModel.fit(real_paths, params)
