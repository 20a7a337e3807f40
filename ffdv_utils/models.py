"""Detectors: timm backbones by name, audio / visual / fusion heads, the parameter cap, local pretrained weights.

Every model takes a batch dict (``mel`` (B,3,H,W), ``faces`` (B,T,3,S,S), ``has_audio`` (B,)) and returns a dict
with ``logit`` (B,) -- probability of fake is ``sigmoid(logit)`` -- and optionally ``aux_loss``. One logit with
binary cross-entropy is the same decision rule as the baseline's two-class softmax (p = sigmoid(z1 - z0)) and
takes soft MixUp targets directly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import timm
import torch
from torch import nn

from . import config

MAX_PARAMS = 200_000_000  # competition rule: at most 200M parameters, one model
MODEL_TYPES = ("audio", "visual", "fusion", "marle")


class ModelRuleError(ValueError):
    """A model configuration that breaks a competition rule (size, weights source)."""


def count_parameters(model: nn.Module) -> int:
    """All parameters, trainable or not (the rule counts the model, not what is being trained)."""
    return sum(p.numel() for p in model.parameters())


def resolve_pretrained(pretrained: Any) -> tuple[bool, str | None]:
    """``pretrained`` parameter -> (use weights, local file or None).

    false: random init. true: timm's ImageNet weights (needs internet; refused when offline on Kaggle).
    A path (absolute, relative to the project root, or found under /kaggle/input): that local weights file.
    """
    if pretrained in (None, False, "false", "False", "", 0):
        return False, None
    if pretrained is True or pretrained in ("true", "True", 1):
        return True, None
    path = config.resolve_path(str(pretrained))
    if path is not None and path.is_file():
        return True, str(path)
    if config.is_kaggle():
        name = Path(str(pretrained)).name
        hits = sorted(config.KAGGLE_INPUT.rglob(name)) if config.KAGGLE_INPUT.is_dir() else []
        if hits:
            return True, str(hits[0])
    raise ModelRuleError(f"pretrained weights file {pretrained!r} not found (resolved to {path}); attach ImageNet-1K "
                         "weights as a file (e.g. a Kaggle dataset) or set pretrained: false")


def create_backbone(name: str, pretrained: Any = False, **kwargs: Any) -> nn.Module:
    """timm backbone with pooled features (``num_classes=0``); local weights through ``pretrained_cfg_overlay``."""
    use, file = resolve_pretrained(pretrained)
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:8]
        raise ModelRuleError(f"unknown timm model {name!r}; similar names: {', '.join(close) or 'none'}")
    if use and file is None and os.environ.get("KAGGLE_KERNEL_RUN_TYPE") and not os.environ.get("FFDV_ALLOW_DOWNLOAD"):
        raise ModelRuleError("pretrained: true downloads weights, which a Kaggle kernel with internet off cannot do; "
                             "pass the path of an attached ImageNet-1K weights file instead")
    extra = {"pretrained_cfg_overlay": {"file": file}} if file else {}
    return timm.create_model(name, pretrained=use, num_classes=0, **extra, **kwargs)


def _to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float() if not torch.is_floating_point(x) else x


class AudioModel(nn.Module):
    """The public baseline's idea: an image backbone on the mel spectrogram image."""

    inputs = ("mel",)

    def __init__(self, backbone: str = "resnet18", pretrained: Any = False, dropout: float = 0.0):
        super().__init__()
        self.backbone = create_backbone(backbone, pretrained)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.backbone.num_features, 1))

    def features(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.backbone(batch["mel"])

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict:
        return {"logit": self.head(self.features(batch)).squeeze(1)}


class FrameAggregator(nn.Module):
    """Per-frame features (B, T, C) -> clip feature (B, C) and per-frame logits by mean, max, top-k or attention."""

    def __init__(self, dim: int, mode: str = "mean", topk: int = 3):
        super().__init__()
        if mode not in ("mean", "max", "topk", "attention"):
            raise ValueError(f"unknown aggregation {mode!r}; use mean, max, topk or attention")
        self.mode, self.topk = mode, topk
        self.frame_head = nn.Linear(dim, 1)
        self.attn = nn.Linear(dim, 1) if mode == "attention" else None

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frame_logits = self.frame_head(feats).squeeze(-1)  # (B, T)
        if self.mode == "mean":
            weights = torch.full_like(frame_logits, 1.0 / feats.shape[1])
        elif self.mode == "attention":
            weights = torch.softmax(self.attn(feats).squeeze(-1), dim=1)
        else:
            k = 1 if self.mode == "max" else min(self.topk, feats.shape[1])
            idx = frame_logits.topk(k, dim=1).indices
            weights = torch.zeros_like(frame_logits).scatter(1, idx, 1.0 / k)
        clip_feat = (weights.unsqueeze(-1) * feats).sum(1)
        return clip_feat, (weights * frame_logits).sum(1)


class VisualModel(nn.Module):
    """A frame-level backbone on face crops, aggregated to a clip score."""

    inputs = ("faces",)

    def __init__(self, backbone: str = "resnet18", pretrained: Any = False, aggregate: str = "mean",
                 topk: int = 3, dropout: float = 0.0):
        super().__init__()
        self.backbone = create_backbone(backbone, pretrained)
        self.dropout = nn.Dropout(dropout)
        self.aggregate = FrameAggregator(self.backbone.num_features, aggregate, topk)

    def features(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        faces = batch["faces"]
        b, t = faces.shape[:2]
        feats = self.backbone(faces.flatten(0, 1)).view(b, t, -1)
        return self.aggregate(self.dropout(feats))[0]

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict:
        faces = batch["faces"]
        b, t = faces.shape[:2]
        feats = self.backbone(faces.flatten(0, 1)).view(b, t, -1)
        _, logit = self.aggregate(self.dropout(feats))
        return {"logit": logit}


class FusionModel(nn.Module):
    """Audio and visual branches joined by an MLP over both embeddings and the has-audio flag.

    Auxiliary per-branch heads (weighted by ``branch_loss``) keep each branch learning on its own, so the
    fusion head cannot lean on one modality and let the other go untrained.
    """

    inputs = ("mel", "faces")

    def __init__(self, audio_backbone: str = "resnet18", visual_backbone: str = "resnet18", pretrained: Any = False,
                 aggregate: str = "attention", hidden: int = 256, dropout: float = 0.1, branch_loss: float = 0.3):
        super().__init__()
        self.audio = AudioModel(audio_backbone, pretrained)
        self.visual = VisualModel(visual_backbone, pretrained, aggregate)
        da, dv = self.audio.backbone.num_features, self.visual.backbone.num_features
        self.fuse = nn.Sequential(nn.Linear(da + dv + 1, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1))
        self.branch_loss = branch_loss

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict:
        fa = self.audio.features(batch)
        faces = batch["faces"]
        b, t = faces.shape[:2]
        fv_frames = self.visual.backbone(faces.flatten(0, 1)).view(b, t, -1)
        fv, v_logit = self.visual.aggregate(fv_frames)
        has_audio = batch.get("has_audio", torch.ones(b, device=fa.device)).float().view(b, 1)
        logit = self.fuse(torch.cat([fa, fv, has_audio], dim=1)).squeeze(1)
        out = {"logit": logit, "branch_logits": {"audio": self.audio.head(fa).squeeze(1), "visual": v_logit}}
        return out


def build_model(params: Mapping[str, Any]) -> nn.Module:
    """The model a run's parameters describe; refuses one over the 200M-parameter rule."""
    kind = params.get("model_type", "audio")
    name = params.get("model", "resnet18")
    pretrained = params.get("pretrained", False)
    dropout = float(params.get("dropout", 0.0))
    if kind == "audio":
        model = AudioModel(name, pretrained, dropout)
    elif kind == "visual":
        model = VisualModel(name, pretrained, params.get("aggregate", "mean"), int(params.get("topk", 3)), dropout)
    elif kind == "fusion":
        model = FusionModel(name, params.get("visual_model") or name, pretrained, params.get("aggregate", "attention"),
                            dropout=max(dropout, 0.1), branch_loss=float(params.get("branch_loss", 0.3)))
    elif kind == "marle":
        from .marle import MarleModel

        model = MarleModel.from_params(params)
    else:
        raise ModelRuleError(f"unknown model_type {kind!r}; choose one of {', '.join(MODEL_TYPES)}")
    n = count_parameters(model)
    limit = int(params.get("max_params", MAX_PARAMS))
    if n > min(limit, MAX_PARAMS):
        raise ModelRuleError(f"{kind} model {name!r} has {n / 1e6:.1f}M parameters, over the competition's 200M cap")
    return model


def model_inputs(model: nn.Module) -> tuple[str, ...]:
    return tuple(getattr(model, "inputs", ("mel",)))
