"""The profile detector: a linear model on two measured signatures of how a clip was made, no backbone.

- **The speech spectrum's shape** (``spectral_profile``): the mel image averaged over its louder half of columns, in
  ``profile_bins`` bands -- the long-term spectrum of the speech. Generated and re-synthesised speech is band-limited
  and shaped by its vocoder (16 / 22 / 24 kHz pipelines leave no energy above their Nyquist frequency, whatever
  the container's sample rate says); real recordings carry the microphone's and the room's full band. Wants a mel
  preset whose band reaches past 8 kHz (``seed``: 11 kHz; ``wide``: 24 kHz).
- **How steady the face's sharpness is** (``sharpness_signature``): per face crop, the log mean Laplacian magnitude of
  the eye band, the mouth and the cheeks and of the whole crop; their mean and spread over the clip's frames.
  A generator renders every frame with the same sharpness and a pasted mouth is sharper or softer than the eyes;
  a camera's focus, motion blur and compression vary from frame to frame.

On 123 real-world clips of 30 sources, trained on some sources and tested on the others (grouped 5-fold), these two
signatures carried further than any backbone feature tried (docs/models.md, docs/runs/realworld_select).
They are low-level traces, not the manipulation itself: a fake re-encoded through a full-band camera pipeline
hides both, and the detector should then be joined with one that looks at content.

Batch: ``mel`` (B, 3, H, W) ImageNet-normalised grey image, ``faces`` (B, T, 3, S, S) ImageNet-normalised crops.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ScoreLinear
from .registration import register_model

IMAGENET_MEAN0, IMAGENET_STD0 = 0.485, 0.229  # the grey mel image is the same in all three channels
# face-crop regions (rows, columns) as fractions of an eye-aligned crop
REGIONS = {"eyes": (0.25, 0.45, 0.2, 0.8), "mouth": (0.65, 0.9, 0.25, 0.75), "cheeks": (0.45, 0.65, 0.1, 0.9),
           "whole": (0.0, 1.0, 0.0, 1.0)}
N_SHARPNESS = 8


def spectral_profile(mel: torch.Tensor, bins: int = 32) -> torch.Tensor:
    """(B, 3, H, W) normalised mel image -> (B, bins): the mean level of each band over the clip's louder half of
    columns (silence and pauses left out), in [0, 1] image units."""
    x = mel[:, 0] * IMAGENET_STD0 + IMAGENET_MEAN0  # (B, H, W) back to [0, 1]
    loud = x.mean(1)  # (B, W)
    keep = (loud >= loud.median(dim=1, keepdim=True).values).float()
    prof = (x * keep[:, None, :]).sum(2) / keep.sum(1, keepdim=True).clamp(min=1)  # (B, H)
    return F.adaptive_avg_pool1d(prof[:, None, :], bins)[:, 0]


_LAPLACE = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def sharpness_signature(faces: torch.Tensor) -> torch.Tensor:
    """(B, T, 3, S, S) normalised face crops -> (B, 8): mean and spread over frames of log sharpness of the mouth
    against the eyes, of the whole crop, of the mouth against the cheeks, and of the eyes."""
    b, t, _, s, _ = faces.shape
    grey = faces.mean(2).reshape(b * t, 1, s, s)
    lap = F.conv2d(grey, _LAPLACE.to(faces)[None, None], padding=1).abs()[:, 0]
    level = {}
    for name, (r0, r1, c0, c1) in REGIONS.items():
        part = lap[:, int(r0 * s):max(int(r1 * s), int(r0 * s) + 1), int(c0 * s):max(int(c1 * s), int(c0 * s) + 1)]
        level[name] = torch.log(part.mean((1, 2)) + 1e-3).view(b, t)
    per_frame = torch.stack([level["mouth"] - level["eyes"], level["whole"], level["mouth"] - level["cheeks"],
                             level["eyes"]], dim=2)  # (B, T, 4)
    spread = per_frame.std(1) if t > 1 else torch.zeros_like(per_frame[:, 0])
    return torch.cat([per_frame.mean(1), spread], dim=1)


@register_model("profile", defaults={"profile_bins": 32, "profile_faces": True})
class ProfileModel(nn.Module):
    """A linear score on the spectral profile and the sharpness signature (see the module docstring).

    The signatures are measured, not learned: the only parameters are a batch-norm that standardises them and one
    linear layer, so the model trains in seconds and cannot memorise a source's pictures.
    """

    inputs = ("mel", "faces")
    # the mel image's frequency axis is the measurement: no flips or shifts of it in training
    time_aligned = True

    def __init__(self, bins: int = 32, dropout: float = 0.0, use_faces: bool = True):
        super().__init__()
        self.bins, self.use_faces = int(bins), bool(use_faces)
        n = self.bins + (N_SHARPNESS if self.use_faces else 0)
        self.norm = nn.BatchNorm1d(n, affine=False)
        self.head = nn.Sequential(nn.Dropout(dropout), ScoreLinear(n, 1))
        if not self.use_faces:
            self.inputs = ("mel",)

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> "ProfileModel":
        """From a run's parameters with every ``core.schema.MODEL`` key present."""
        return cls(int(p["profile_bins"]), float(p["dropout"]), use_faces=bool(p["profile_faces"]))

    def signature(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B, n) the measured signatures, before standardisation."""
        parts = [spectral_profile(batch["mel"].float(), self.bins)]
        if self.use_faces:
            parts.append(sharpness_signature(batch["faces"].float()))
        return torch.cat(parts, dim=1)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict:
        return {"logit": self.head(self.norm(self.signature(batch))).squeeze(1)}

    def cam_layers(self) -> dict[str, nn.Module]:
        return {}  # no feature map to explain: the signatures themselves are the explanation (``signature``)
