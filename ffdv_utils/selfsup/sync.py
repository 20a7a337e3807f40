"""Audio-visual synchrony learned from real clips (the AVAD / AVH-Align idea, without outside pretraining).

A mouth encoder reads ``span`` consecutive grey mouth crops (frames as channels), an audio encoder reads the log-mel
frames of the same time span. For a window at frame ``t`` the audio windows at offsets ``-max_offset .. max_offset``
frames of the same clip are the candidates; cosine similarities over a temperature are the logits and the aligned
one (offset 0) is the target of a cross-entropy (a contrastive loss whose negatives are the clip's own shifted audio:
same voice, same room, same face, only the timing differs). Clip score: 1 - the mean softmax probability of offset
0 over the clip's windows; a clip whose lips do not follow its audio, or follow it at another lag, scores high.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .avruns import AV_DEFAULTS, av_cache, split_row
from .common import COMMON_DEFAULTS, SelfSupModel, windowed_files

__all__ = ["SyncModel", "SYNC_DEFAULTS", "fit", "SyncNet"]

SYNC_DEFAULTS: dict[str, Any] = {
    **COMMON_DEFAULTS,
    **AV_DEFAULTS,
    "span": 9,             # video frames per window (0.36 s at 25 fps)
    "max_offset": 10,      # candidate audio offsets -10 .. 10 frames (+-0.4 s)
    "dim": 128,            # embedding size
    "temperature": 0.1,
    "score_stride": 2,     # frames between scored windows
    "width": 32,           # channels of the first mouth convolution
    "version": 1,
}


class SyncNet(nn.Module):
    """Mouth-run and audio-window encoders into one normalised embedding space."""

    def __init__(self, span: int, crop: int, mel_frames: int, n_mels: int, dim: int = 128, width: int = 32) -> None:
        super().__init__()
        w = width
        self.video = nn.Sequential(
            nn.Conv2d(span, w, 5, stride=2, padding=2, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(4 * w), nn.ReLU(inplace=True),
            nn.Conv2d(4 * w, 4 * w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(4 * w), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16 * w, dim))
        self.audio = nn.Sequential(
            nn.Conv1d(n_mels, 64, 3, padding=1, bias=False), nn.BatchNorm1d(64), nn.ReLU(inplace=True),
            nn.Conv1d(64, 128, 3, stride=2, padding=1, bias=False), nn.BatchNorm1d(128), nn.ReLU(inplace=True),
            nn.Conv1d(128, 128, 3, stride=2, padding=1, bias=False), nn.BatchNorm1d(128), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool1d(4), nn.Flatten(), nn.Linear(512, dim))

    def embed_video(self, mouths: torch.Tensor) -> torch.Tensor:
        """(B, span, P, P) grey 0-255 -> (B, dim), unit length."""
        x = mouths.float()
        x = (x - x.mean(dim=(1, 2, 3), keepdim=True)) / (x.std(dim=(1, 2, 3), keepdim=True) + 1e-3)
        return F.normalize(self.video(x), dim=1)

    def embed_audio(self, mels: torch.Tensor) -> torch.Tensor:
        """(B, frames, mels) -> (B, dim), unit length."""
        return F.normalize(self.audio(mels.float().transpose(1, 2)), dim=1)

    def forward(self, mouths: torch.Tensor, mels: torch.Tensor, temperature: float) -> torch.Tensor:
        """mouths (B, span, P, P), candidate audio (B, K, frames, mels) -> logits (B, K)."""
        b, k = mels.shape[:2]
        v = self.embed_video(mouths)
        a = self.embed_audio(mels.reshape(b * k, *mels.shape[2:])).reshape(b, k, -1)
        return torch.einsum("bd,bkd->bk", v, a) / temperature


def _windows(n_frames: int, span: int, max_offset: int, stride: int = 1) -> np.ndarray:
    """Start frames t whose window and every shifted audio window fit in the clip."""
    last = n_frames - span - max_offset
    if last < max_offset:
        return np.zeros(0, np.int64)
    return np.arange(max_offset, last + 1, stride, dtype=np.int64)


def _candidates(mels: np.ndarray, t: int, span: int, max_offset: int) -> np.ndarray:
    """(2 max_offset + 1, span * A, M) audio windows at offsets -max_offset .. max_offset from frame t."""
    a, m = mels.shape[1:]
    return np.stack([np.asarray(mels[t + o:t + o + span], np.float32).reshape(span * a, m)
                     for o in range(-max_offset, max_offset + 1)])


def _take(arr: np.ndarray, w: int, rng: np.random.Generator, p: Mapping[str, Any]) -> tuple[torch.Tensor, ...]:
    mouths, _, mels = split_row(arr, p)
    t = int(_windows(len(arr), p["span"], p["max_offset"])[w])
    return (torch.from_numpy(np.asarray(mouths[t:t + p["span"]], np.float32)),
            torch.from_numpy(_candidates(mels, t, p["span"], p["max_offset"])))


def _loss(net: nn.Module, batch: Any, temperature: float, target: int) -> torch.Tensor:
    dev = next(net.parameters()).device
    mouths, mels = (x.to(dev, non_blocking=True) for x in batch)
    logits = net(mouths, mels, temperature)
    return F.cross_entropy(logits, torch.full((len(logits),), target, device=dev, dtype=torch.long))


class SyncModel(SelfSupModel):
    """Which audio offset belongs to these mouth frames; clip score = 1 - mean probability of the true offset."""

    kind = "sync"
    defaults = SYNC_DEFAULTS

    @classmethod
    def build_net(cls, config: Mapping[str, Any]) -> nn.Module:
        a = int(round(config["sr"] / config["hop"] / config["fps"]))
        return SyncNet(config["span"], config["crop"], config["span"] * a, config["n_mels"], config["dim"],
                       config["width"])

    @classmethod
    def _fit(cls, paths: Sequence[Path], p: dict[str, Any]) -> SyncModel:
        cache = av_cache(p)
        files, failures = cache.build(paths, workers=int(p["prep_workers"]), progress=bool(p["progress"]))
        keep, counts = windowed_files(files, lambda rows: len(_windows(rows, p["span"], p["max_offset"])), failures)
        prep = {k: p[k] for k in ("crop", "sr", "hop", "fps", "n_mels", "span", "max_offset")}
        return cls.train_windows(keep, counts, partial(_take, p=prep),
                                 partial(_loss, temperature=float(p["temperature"]), target=int(p["max_offset"])),
                                 p, failures)

    def offset_probs(self, entry: np.ndarray, batch: int = 64) -> np.ndarray:
        """(windows, 2 max_offset + 1) softmax over the candidate offsets of one clip's scored windows."""
        c = self.config
        mouths, _, mels = split_row(entry, c)
        starts = _windows(len(entry), c["span"], c["max_offset"], c["score_stride"])
        if not len(starts):  # too short for every offset: the central windows with fewer offsets are not scored
            return np.zeros((0, 2 * c["max_offset"] + 1))
        out = []
        for i in range(0, len(starts), batch):
            ts = starts[i:i + batch]
            mv = torch.from_numpy(np.stack([np.asarray(mouths[t:t + c["span"]], np.float32) for t in ts]))
            ma = torch.from_numpy(np.stack([_candidates(mels, int(t), c["span"], c["max_offset"]) for t in ts]))
            logits = self.net(mv.to(self.device), ma.to(self.device), float(c["temperature"]))
            out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
        return np.concatenate(out)

    def _score_paths(self, paths: Sequence[Path]) -> np.ndarray:
        cache = av_cache(self.config)
        files, self.failures = cache.build(paths, workers=int(self.config.get("prep_workers", 1)))
        out = np.full(len(paths), np.nan)
        k = int(self.config["max_offset"])
        for i, f in enumerate(files):
            if f is None:
                continue
            probs = self.offset_probs(np.load(f))
            if len(probs):
                out[i] = 1.0 - float(probs[:, k].mean())
        return out


def fit(real_paths: Sequence[str | Path], params: Mapping[str, Any] | None = None) -> SyncModel:
    """Trains a :class:`SyncModel` on real clips (see the module docstring)."""
    return SyncModel.fit(real_paths, params)
