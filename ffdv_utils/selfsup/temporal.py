"""Temporal coherence of face and mouth, learned from real clips: natural runs of consecutive crops against the same
runs disturbed (reordered, resampled or warped frame by frame).

Input: ``length`` consecutive grey face crops and mouth crops (eye-aligned, 25 fps grid, from :mod:`.avruns`) as
channels, with their frame-to-frame differences. A negative is the same run after one disturbance drawn per sample:
two neighbouring frames swapped, a stretch reversed, a local shuffle, double speed (every other frame), half speed
(each frame twice), a dropped and a duplicated frame, or a small per-frame jitter of position, scale and rotation
(the unsteady placement of a swapped or generated face). Binary cross-entropy, half of the draws natural. Clip score:
the mean "disturbed" probability over the clip's own, natural runs: a generator whose frames do not follow each
other the way recorded faces do scores high.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .avruns import AV_DEFAULTS, av_cache, split_row
from .common import COMMON_DEFAULTS, SelfSupModel, windowed_files

__all__ = ["TemporalModel", "TEMPORAL_DEFAULTS", "DISTURBANCES", "disturb", "fit"]

TEMPORAL_DEFAULTS: dict[str, Any] = {
    **COMMON_DEFAULTS,
    **AV_DEFAULTS,
    "length": 8,           # frames per run
    "score_stride": 4,     # frames between scored runs
    "jitter": 0.03,        # per-frame jitter: shift as a fraction of the crop, scale and rotation (radians) alike
    "width": 32,
    "version": 1,
}

DISTURBANCES = ("swap", "reverse", "shuffle", "double_speed", "half_speed", "drop_dup", "jitter")


def _jitter(frames: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    n, h, w = frames.shape
    out = np.empty_like(frames)
    for i in range(n):
        s = 1.0 + rng.uniform(-amount, amount)
        a = np.degrees(rng.uniform(-amount, amount))
        m = cv2.getRotationMatrix2D((w / 2, h / 2), a, s)
        m[:, 2] += rng.uniform(-amount, amount, 2) * (w, h)
        out[i] = cv2.warpAffine(frames[i], m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out


def disturb(run: np.ndarray, length: int, kind: str, rng: np.random.Generator, jitter: float = 0.03) -> np.ndarray:
    """A disturbed ``length``-frame run from ``run`` (a stretch of at least ``2 * length`` natural frames, (N, C, P, P)
    with channels = face and mouth); the natural run is ``run[:length]``."""
    idx = np.arange(length)
    if kind == "swap":
        i = int(rng.integers(0, length - 1))
        idx[i], idx[i + 1] = idx[i + 1], idx[i]
    elif kind == "reverse":
        a = int(rng.integers(0, length - 3))
        b = int(rng.integers(a + 3, length + 1))
        idx[a:b] = idx[a:b][::-1]
    elif kind == "shuffle":
        a = int(rng.integers(0, length - 3))
        seg = idx[a:a + 4].copy()
        while np.array_equal(seg, idx[a:a + 4]):
            rng.shuffle(seg)
        idx[a:a + 4] = seg
    elif kind == "double_speed":
        idx = np.arange(0, 2 * length, 2)
    elif kind == "half_speed":
        idx = np.arange(length) // 2
    elif kind == "drop_dup":
        d = int(rng.integers(1, length - 1))  # frame d is dropped, a later frame is shown twice
        u = int(rng.integers(d, length))
        idx = np.concatenate([np.arange(d), np.arange(d + 1, u + 2), [u + 1], np.arange(u + 2, length + 1)])[:length]
    elif kind == "jitter":
        out = np.asarray(run[:length], np.float32).copy()
        for c in range(out.shape[1]):
            out[:, c] = _jitter(out[:, c], jitter, rng)
        return out
    else:
        raise ValueError(f"unknown disturbance {kind!r}")
    return np.asarray(run[idx], np.float32)


class RunNet(nn.Module):
    """2-D CNN over a run's frames and frame differences stacked as channels (face and mouth), logit of 'disturbed'."""

    def __init__(self, length: int, width: int = 32) -> None:
        super().__init__()
        cin = 2 * (2 * length - 1)
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(cin, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(4 * w), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, 1))

    def forward(self, runs: torch.Tensor) -> torch.Tensor:
        """runs (B, L, 2, P, P) grey 0-255 -> (B,) logits."""
        x = runs.float()
        x = (x - x.mean(dim=(1, 3, 4), keepdim=True)) / (x.std(dim=(1, 3, 4), keepdim=True) + 1e-3)
        d = x[:, 1:] - x[:, :-1]
        b, _, _, p, q = x.shape
        return self.net(torch.cat([x.reshape(b, -1, p, q), 4 * d.reshape(b, -1, p, q)], dim=1)).squeeze(1)


def _stack(arr: np.ndarray, p: Mapping[str, Any]) -> np.ndarray:
    mouths, faces, _ = split_row(arr, p)
    return np.stack([faces, mouths], axis=1)  # (T, 2, P, P)


def _take(arr: np.ndarray, w: int, rng: np.random.Generator, p: Mapping[str, Any]) -> tuple[torch.Tensor, ...]:
    crops = _stack(arr, p)
    n = p["length"]
    run = crops[w:w + 2 * n + 1]
    if rng.random() < 0.5:
        return torch.from_numpy(np.asarray(run[:n], np.float32)), torch.tensor(0.0)
    kind = DISTURBANCES[int(rng.integers(len(DISTURBANCES)))]
    return torch.from_numpy(disturb(run, n, kind, rng, p["jitter"])), torch.tensor(1.0)


def _loss(net: nn.Module, batch: Any) -> torch.Tensor:
    dev = next(net.parameters()).device
    x, y = (t.to(dev, non_blocking=True) for t in batch)
    return F.binary_cross_entropy_with_logits(net(x), y)


class TemporalModel(SelfSupModel):
    """Natural against disturbed runs of face and mouth crops; clip score = mean disturbed probability of its runs."""

    kind = "temporal"
    defaults = TEMPORAL_DEFAULTS

    @classmethod
    def build_net(cls, config: Mapping[str, Any]) -> nn.Module:
        return RunNet(config["length"], config["width"])

    @classmethod
    def _fit(cls, paths: Sequence[Path], p: dict[str, Any]) -> TemporalModel:
        files, failures = av_cache(p).build(paths, workers=int(p["prep_workers"]), progress=bool(p["progress"]))
        keep, counts = windowed_files(files, lambda rows: rows - 2 * p["length"], failures)
        prep = {k: p[k] for k in ("crop", "sr", "hop", "fps", "n_mels", "length", "jitter")}
        return cls.train_windows(keep, counts, partial(_take, p=prep), _loss, p, failures)

    def run_probs(self, entry: np.ndarray) -> np.ndarray:
        c = self.config
        crops = _stack(entry, c)
        n = c["length"]
        starts = np.arange(0, len(crops) - n + 1, c["score_stride"])
        if not len(starts):
            return np.zeros(0)
        x = torch.from_numpy(np.stack([np.asarray(crops[s:s + n], np.float32) for s in starts]))
        return torch.sigmoid(self.net(x.to(self.device))).float().cpu().numpy()

    def _score_paths(self, paths: Sequence[Path]) -> np.ndarray:
        files, self.failures = av_cache(self.config).build(paths, workers=int(self.config.get("prep_workers", 1)))
        out = np.full(len(paths), np.nan)
        for i, f in enumerate(files):
            if f is not None:
                probs = self.run_probs(np.load(f))
                if len(probs):
                    out[i] = float(probs.mean())
        return out


def fit(real_paths: Sequence[str | Path], params: Mapping[str, Any] | None = None) -> TemporalModel:
    """Trains a :class:`TemporalModel` on real clips (see the module docstring)."""
    return TemporalModel.fit(real_paths, params)
