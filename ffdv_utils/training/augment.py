"""Augmentation on batched tensors (after the loader, on the training device) and MixUp / CutMix.

Presets (``augment`` parameter):

- ``none``: nothing.
- ``baseline``: the public baseline's random horizontal and vertical flips of the mel image.
- ``spec``: SpecAugment-style time and frequency masks, a random circular time shift and a gain change in dB
  (a brightness shift of the log-mel image) -- transformations that keep what a spectrogram means.
- ``strong``: ``spec`` plus random time stretch (resize along time) and light noise.

Face crops get flips, brightness/contrast jitter and, in ``strong``, random erasing.
Each transform is applied per sample with its own random draw, vectorised over the batch.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

PRESETS = ("none", "baseline", "spec", "strong")


def _rand(b: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
    return torch.rand(b, device=device, generator=generator)


def _band_mask(b: int, size: int, max_width: int, device: torch.device, n: int = 1) -> torch.Tensor:
    """(B, size) bool: up to ``n`` random bands of width < max_width per sample."""
    pos = torch.arange(size, device=device).view(1, size)
    mask = torch.zeros(b, size, dtype=torch.bool, device=device)
    for _ in range(n):
        width = (torch.rand(b, 1, device=device) * max_width).long()
        start = (torch.rand(b, 1, device=device) * (size - width).clamp(min=1)).long()
        mask |= (pos >= start) & (pos < start + width)
    return mask


def augment_mel(x: torch.Tensor, preset: str = "baseline", p: float = 0.5) -> torch.Tensor:
    """Augment a batch of mel images (B, C, H=freq, W=time), values already normalised."""
    if preset not in PRESETS:
        raise ValueError(f"unknown augment preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if preset == "none":
        return x
    b, _, h, w = x.shape
    dev = x.device
    if preset == "baseline":
        flip_w = (_rand(b, dev) < p).view(b, 1, 1, 1)
        x = torch.where(flip_w, x.flip(3), x)
        flip_h = (_rand(b, dev) < p).view(b, 1, 1, 1)
        return torch.where(flip_h, x.flip(2), x)
    # spec / strong: shift in time, gain, masks
    shifts = (_rand(b, dev) * w).long()
    idx = (torch.arange(w, device=dev).view(1, w) + shifts.view(b, 1)) % w
    do_shift = (_rand(b, dev) < p).view(b, 1)
    idx = torch.where(do_shift, idx, torch.arange(w, device=dev).view(1, w).expand(b, w))
    x = torch.gather(x, 3, idx.view(b, 1, 1, w).expand_as(x))
    gain = (torch.rand(b, 1, 1, 1, device=dev) - 0.5) * 0.5 * (_rand(b, dev) < p).view(b, 1, 1, 1)
    x = x + gain
    fill = x.mean(dim=(1, 2, 3), keepdim=True)
    fmask = _band_mask(b, h, max(1, h // 8), dev, n=2).view(b, 1, h, 1)
    tmask = _band_mask(b, w, max(1, w // 10), dev, n=2).view(b, 1, 1, w)
    x = torch.where(fmask | tmask, fill.expand_as(x), x)
    if preset == "strong":
        rate = 0.8 + 0.4 * torch.rand(1).item()
        new_w = max(8, int(round(w * rate)))
        stretched = F.interpolate(x, size=(h, new_w), mode="bilinear", align_corners=False)
        x = stretched[..., :w] if new_w >= w else F.pad(stretched, (0, w - new_w, 0, 0), mode="replicate")
        x = x + 0.05 * torch.randn_like(x)
    return x


def augment_faces(x: torch.Tensor, preset: str = "baseline", p: float = 0.5) -> torch.Tensor:
    """Augment face crops (B, T, 3, S, S) consistently across a clip's frames."""
    if preset == "none":
        return x
    b = x.shape[0]
    dev = x.device
    flip = (_rand(b, dev) < p).view(b, 1, 1, 1, 1)
    x = torch.where(flip, x.flip(-1), x)
    if preset in ("spec", "strong"):
        bright = (torch.rand(b, 1, 1, 1, 1, device=dev) - 0.5) * 0.4
        contrast = 1 + (torch.rand(b, 1, 1, 1, 1, device=dev) - 0.5) * 0.4
        mean = x.mean(dim=(2, 3, 4), keepdim=True)
        x = (x - mean) * contrast + mean + bright
    if preset == "strong":
        s = x.shape[-1]
        box = _band_mask(b, s, s // 3, dev).view(b, 1, 1, s, 1) & _band_mask(b, s, s // 3, dev).view(b, 1, 1, 1, s)
        x = torch.where(box & (_rand(b, dev) < p).view(b, 1, 1, 1, 1), torch.zeros_like(x), x)
    return x


def mix_batch(batch: Mapping[str, torch.Tensor], mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
              prob: float = 1.0, generator: torch.Generator | None = None) -> dict:
    """MixUp or CutMix (one chosen per batch when both are on) with soft targets.

    Inputs of every modality are mixed with the same partner and weight, so an audio-visual pair stays a pair.
    CutMix cuts a time span of the mel image (and the same share of face frames), which keeps the axes'
    meaning; the target weight is the share of the area taken from the partner.
    """
    out = dict(batch)
    if (mixup_alpha <= 0 and cutmix_alpha <= 0) or torch.rand(1, generator=generator).item() >= prob:
        return out
    target = batch["target"].float()
    b = target.shape[0]
    perm = torch.randperm(b, generator=generator).to(target.device)
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or torch.rand(1, generator=generator).item() < 0.5)
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    lam = float(torch.distributions.Beta(alpha, alpha).sample().item())
    keys = [k for k in ("mel", "faces", "mouths", "mel_emb", "face_emb") if k in batch]
    if use_cutmix:
        if "mel" in batch:
            w = batch["mel"].shape[-1]
            cut = int(round(w * (1 - lam)))
            start = int(torch.randint(0, max(1, w - cut + 1), (1,), generator=generator).item())
            mel = batch["mel"].clone()
            mel[..., start:start + cut] = batch["mel"][perm][..., start:start + cut]
            out["mel"] = mel
            lam = 1 - cut / w
        if "faces" in batch:
            t = batch["faces"].shape[1]
            n = int(round(t * (1 - lam)))
            faces = batch["faces"].clone()
            if n:
                faces[:, :n] = batch["faces"][perm][:, :n]
            out["faces"] = faces
        # the mouth crops and cached embeddings of frozen backbones: the same frames as the crops, the mel one mixed
        # by the share cut
        for key in ("face_emb", "mouths"):
            if key in batch and "faces" in batch:
                x = batch[key].clone()
                if n:
                    x[:, :n] = batch[key][perm][:, :n]
                out[key] = x
        if "mel_emb" in batch:
            out["mel_emb"] = lam * batch["mel_emb"] + (1 - lam) * batch["mel_emb"][perm]
    else:
        for k in keys:
            out[k] = lam * batch[k].float() + (1 - lam) * batch[k][perm].float()
    out["target"] = lam * target + (1 - lam) * target[perm]
    return out
