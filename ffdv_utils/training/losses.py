"""Losses: BCE or focal loss with label smoothing and class weight, plus per-branch and auxiliary losses.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from ..core.schema import MODEL, TRAINING, with_defaults


def focal_loss(logit: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
               pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Binary focal loss on logits (soft targets allowed): BCE scaled by (1 - p_t)^gamma."""
    bce = F.binary_cross_entropy_with_logits(logit, target, reduction="none", pos_weight=pos_weight)
    p = torch.sigmoid(logit)
    p_t = p * target + (1 - p) * (1 - target)
    return ((1 - p_t).clamp(min=0) ** gamma * bce).mean()


def classification_loss(logit: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any]) -> torch.Tensor:
    """BCE (or focal) loss on logits with the run's label smoothing and positive-class weight."""
    return _classification_loss(logit, target, with_defaults(params, TRAINING))


def _classification_loss(logit: torch.Tensor, target: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
    """``classification_loss`` on parameters whose TRAINING keys are all present (filled once per step)."""
    smoothing = float(p["label_smoothing"])
    if smoothing:
        target = target * (1 - smoothing) + 0.5 * smoothing
    pw = p["pos_weight"]
    pos_weight = torch.tensor(float(pw), device=logit.device) if pw not in (None, "") else None
    logit = logit.float()
    if p["loss"] == "focal":
        return focal_loss(logit, target, float(p["focal_gamma"]), pos_weight)
    if p["loss"] not in ("bce", "ce"):
        raise ValueError(f"unknown loss {p['loss']!r}; use bce or focal")
    return F.binary_cross_entropy_with_logits(logit, target, pos_weight=pos_weight)


def total_loss(out: Mapping[str, Any], target: torch.Tensor, params: Mapping[str, Any],
               branch_targets: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Classification loss + ``branch_loss`` x each branch's loss + the model's ``aux_loss``.

    ``branch_targets`` (from ``av_swap_prob``): a branch is scored against its own input's truth, since an
    audio-visual swap makes the pair fake while its audio and its faces may each be real.
    """
    params = with_defaults(params, TRAINING, MODEL)
    loss = _classification_loss(out["logit"], target, params)
    explicit = set(out.get("explicit_branches") or ())  # branches trained only where a target is given
    for name, logit in (out.get("branch_logits") or {}).items():
        t = (branch_targets or {}).get(name, None if name in explicit else target)
        valid = torch.isfinite(t) if t is not None else None  # NaN: no target for that item
        if valid is not None and valid.any():
            loss = loss + float(params["branch_loss"]) * _classification_loss(
                logit[valid], t[valid].to(logit.dtype), params)
    if out.get("aux_loss") is not None:
        loss = loss + out["aux_loss"]
    return loss
