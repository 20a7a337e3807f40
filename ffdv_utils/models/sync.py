"""Audio-visual synchrony: does the mouth move with the sound? The fixed lip-sync cue and the learned ``SyncHead``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import conv_bn, standardise


def sample_at_frames(x: torch.Tensor, t: int) -> torch.Tensor:
    """(B, C, W) sequence -> (B, T, C) values at the instants of T frames, linearly interpolated.

    ``media.load_frames`` picks the middle of T equal slices of the clip and the mel image spans the same clip,
    so frame i sits at (i + 0.5) / T of the width.
    """
    w = x.shape[-1]
    pos = ((torch.arange(t, device=x.device, dtype=x.dtype) + 0.5) * w / t - 0.5).clamp(0, w - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=w - 1)
    frac = (pos - lo.to(x.dtype)).view(1, 1, t)
    return ((1 - frac) * x[..., lo] + frac * x[..., hi]).transpose(1, 2)


MOUTH_BOX = (0.62, 0.9, 0.3, 0.7)  # rows from, to, columns from, to, as fractions of a face crop
MOUTH_CROP_BOX = (0.2, 0.8, 0.15, 0.85)  # the same for a mouth crop (side: twice the mouth-corner distance)


def speech_energy(mel: torch.Tensor, t: int) -> torch.Tensor:
    """(B, C, H, W) normalised mel image -> (B, T, 1) loudness (mean over the mel bands) at the T frame instants."""
    return sample_at_frames(mel[:, :1].mean(2), t)


def mouth_spread(faces: torch.Tensor, box: Sequence[float] = MOUTH_BOX) -> torch.Tensor:
    """(B, T, C, H, W) face crops -> (B, T, 1) grey-level spread of a box round the lips.

    An open mouth puts a dark hole between light lips, so the spread rises and falls with the mouth. On the
    sample data (160 clips, 16 frames) its correlation with speech energy separates real clips from audio-visual
    mismatches with AUC 0.88, against 0.66 for the spread of the whole lower half of the crop (docs/models.md,
    "Why the synchrony head works").
    """
    rows, cols = faces.shape[-2], faces.shape[-1]
    r0, r1 = int(round(box[0] * rows)), int(round(box[1] * rows))
    c0, c1 = int(round(box[2] * cols)), int(round(box[3] * cols))
    grey = faces[..., r0:max(r1, r0 + 1), c0:max(c1, c0 + 1)].mean(2)  # (B, T, h, w)
    return grey.flatten(2).std(2, unbiased=False).unsqueeze(2)


def lip_sync_cue(mel: torch.Tensor, faces: torch.Tensor, box: Sequence[float] = MOUTH_BOX) -> torch.Tensor:
    """(B,) correlation over time between speech energy and mouth spread: high when the lips move with the sound,
    near 0 when the audio belongs to another clip. The fixed cue that ``SyncHead`` starts from, without training."""
    t = faces.shape[1]
    e = standardise(speech_energy(mel, t).float())
    m = standardise(mouth_spread(faces, box).float())
    return (e * m).mean((1, 2))


class SyncHead(nn.Module):
    """Audio-visual synchrony: does the mouth move with the sound?

    A fake that pairs a natural face with natural (but other) speech fools a model that looks at each modality
    alone; what gives it away is that lip motion and speech energy do not rise and fall together. The audio
    stream is the mel image pooled into a few frequency bands and filtered along time by 1-D convolutions,
    sampled at the T frame instants. The visual stream is a small CNN on the lower part of each face crop (the
    mouth). Their per-instant projections are compared by normalised correlation over time at lags -1, 0 and
    +1 (an explicit, data-cheap cue), and a temporal convolution over both streams learns the rest. Two fixed
    channels join the learned projections in the correlation -- speech energy (mean of the mel image) and the
    grey-level spread of a box round the lips (an open mouth adds a dark hole to light lips) -- so the cue is there from
    the first step instead of having to be discovered from a few hundred clips.

    The head assumes the mel image and the frames are time-aligned: augmentations that shift, flip or stretch
    the mel image in time break that (train.py turns mel augmentation off for models with ``time_aligned``).
    """

    def __init__(self, dim: int = 64, n_bands: int = 32, n_corr: int = 4, mouth_from: float = 0.5,
                 lags: tuple[int, ...] = (-1, 0, 1), mouth_box: Sequence[float] = MOUTH_BOX):
        super().__init__()
        self.n_bands, self.mouth_from, self.lags = n_bands, mouth_from, tuple(lags)
        self.mouth_box = tuple(mouth_box)
        self.audio = nn.Sequential(nn.Conv1d(n_bands, dim, 5, padding=2), nn.GELU(),
                                   nn.Conv1d(dim, dim, 3, padding=1), nn.GELU())
        self.mouth = nn.Sequential(conv_bn(3, 16), conv_bn(16, 32), conv_bn(32, dim // 2))
        self.proj_a = nn.Linear(dim, n_corr)
        self.proj_v = nn.Linear(dim, n_corr)
        self.temporal = nn.Sequential(nn.Conv1d(3 * dim, dim, 3, padding=1), nn.GELU(),
                                      nn.Conv1d(dim, dim, 3, padding=1), nn.GELU())
        k = n_corr + 1
        self.out_dim = 2 * dim + len(self.lags) * k * k

    def streams(self, mel: torch.Tensor, faces: torch.Tensor,
                mouths: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """Per-frame audio and mouth features (B, T, dim) and the fixed energy / mouth-spread channels (B, T, 1).

        ``mouths`` (B, T, C, M, M): crops centred on the mouth corners (``face_detector: mtcnn``); without them the
        mouth is the lower part of the face crop and its spread is taken in the fixed ``mouth_box``.
        """
        b, t = faces.shape[:2]
        bands = F.adaptive_avg_pool2d(mel[:, :1], (self.n_bands, mel.shape[-1])).squeeze(1)  # (B, bands, W)
        a = sample_at_frames(self.audio(bands), t)
        energy = speech_energy(mel, t)
        if mouths is not None:
            mouth, spread = mouths.flatten(0, 1), mouth_spread(mouths, MOUTH_CROP_BOX)
        else:
            rows = faces.shape[-2]
            mouth, spread = faces[..., int(rows * self.mouth_from):, :].flatten(0, 1), mouth_spread(faces, self.mouth_box)
        fmap = self.mouth(mouth)
        # max pooling as well as mean: the mouth is a small part of the lower face and must not be averaged away
        v = torch.cat([fmap.mean((2, 3)), fmap.amax((2, 3))], dim=1).view(b, t, -1)
        return a, v, energy, spread

    def forward(self, mel: torch.Tensor, faces: torch.Tensor, mouths: torch.Tensor | None = None) -> torch.Tensor:
        a, v, energy, spread = self.streams(mel, faces, mouths)
        t = a.shape[1]
        pa = standardise(torch.cat([self.proj_a(a), energy], dim=2))  # (B, T, k): zero mean, unit std over time
        pv = standardise(torch.cat([self.proj_v(v), spread], dim=2))
        corrs = []
        for lag in self.lags:
            if abs(lag) >= t:
                corrs.append(pa.new_zeros(pa.shape[0], pa.shape[2] * pv.shape[2]))
                continue
            x = pa[:, max(0, -lag):t - max(0, lag)]
            y = pv[:, max(0, lag):t - max(0, -lag)]
            corrs.append(torch.einsum("bti,btj->bij", x, y).flatten(1) / x.shape[1])
        h = self.temporal(torch.cat([a, v, a * v], dim=2).transpose(1, 2))  # (B, dim, T)
        return torch.cat([h.mean(2), h.amax(2), *corrs], dim=1)
