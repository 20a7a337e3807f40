"""Detectors: the audio model (a backbone on the mel image, the public baseline's idea), the visual model (a backbone
on face crops, frames aggregated) and the audio-visual fusion model with its synchrony head.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import nn

from .backbones import cam_layer, create_backbone, embedding_dim
from .layers import FrozenAware, ScoreLinear, is_frozen, noisy_or_logit
from .layers import freeze as freeze_module
from .registration import register_model
from .sync import SyncHead


def _cached(backbone: nn.Module, emb: torch.Tensor, raw: torch.Tensor, stale: torch.Tensor | None) -> torch.Tensor:
    """A frozen backbone's cached embeddings, recomputed from the pictures for the rows a pseudo-fake changed
    (``stale``); ``raw`` is (B, C, H, W) for mel images, (B, T, C, S, S) for face crops."""
    emb = emb.float()
    if stale is None or not bool(stale.any()):
        return emb
    rows = stale.nonzero().flatten()
    x = raw[rows]
    with torch.no_grad():
        fresh = backbone(x.flatten(0, 1)).view(len(rows), x.shape[1], -1) if x.dim() == 5 else backbone(x)
    emb = emb.clone()
    emb[rows] = fresh.to(emb.dtype)
    return emb


@register_model("audio", backbones=lambda p: [p["model"]], freezable=True)
class AudioModel(FrozenAware):
    """The public baseline's idea: an image backbone on the mel spectrogram image.

    With a frozen backbone (``freeze=True``) a batch may carry ``mel_emb`` (B, C), the backbone's output cached by
    ``features.embeddings``: the backbone is then skipped, which is what makes CPU training take seconds.
    """

    inputs = ("mel",)

    def __init__(self, backbone: str = "resnet18", pretrained: Any = False, dropout: float = 0.0,
                 input_norm: Any = "auto", freeze: bool = False):
        super().__init__()
        self.backbone = create_backbone(backbone, pretrained, input_norm)
        if freeze:
            freeze_module(self.backbone)
        self.head = nn.Sequential(nn.Dropout(dropout), ScoreLinear(embedding_dim(self.backbone), 1))

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> "AudioModel":
        """From a run's parameters with every ``core.schema.MODEL`` key present."""
        return cls(p["model"], p["pretrained"], float(p["dropout"]), p["input_norm"],
                   freeze=p["freeze_backbone"] in (True, "audio"))

    def backbones(self) -> dict[str, nn.Module]:
        return {"mel": self.backbone}

    def features(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if "mel_emb" in batch and is_frozen(self.backbone):
            return _cached(self.backbone, batch["mel_emb"], batch["mel"], batch.get("mel_stale"))
        return self.backbone(batch["mel"])

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict:
        return {"logit": self.head(self.features(batch)).squeeze(1)}

    def cam_layers(self) -> dict[str, nn.Module]:
        return {"mel": cam_layer(self.backbone)}


class FrameAggregator(nn.Module):
    """Per-frame features (B, T, C) -> clip feature (B, C) and clip logit by mean, max, top-k or attention.

    The clip logit is the weighted sum of per-frame logits, so ``max`` / ``topk`` score a clip by its most
    suspicious frames (a manipulation confined to a few frames is not averaged away).
    """

    def __init__(self, dim: int, mode: str = "mean", topk: int = 3):
        super().__init__()
        if mode not in AGGREGATES:
            raise ValueError(f"unknown aggregation {mode!r}; use {', '.join(AGGREGATES)}")
        self.mode, self.topk = mode, topk
        self.frame_head = ScoreLinear(dim, 1)
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


AGGREGATES = ("mean", "max", "topk", "attention")


@register_model("visual", backbones=lambda p: [p["model"]], freezable=True)
class VisualModel(FrozenAware):
    """A frame-level backbone on face crops, aggregated to a clip score (``face_emb`` (B, T, C) as ``mel_emb``)."""

    inputs = ("faces",)

    def __init__(self, backbone: str = "resnet18", pretrained: Any = False, aggregate: str = "mean",
                 topk: int = 3, dropout: float = 0.0, input_norm: Any = "auto", freeze: bool = False):
        super().__init__()
        self.backbone = create_backbone(backbone, pretrained, input_norm)
        if freeze:
            freeze_module(self.backbone)
        self.dropout = nn.Dropout(dropout)
        self.aggregate = FrameAggregator(embedding_dim(self.backbone), aggregate, topk)

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> "VisualModel":
        """From a run's parameters with every ``core.schema.MODEL`` key present."""
        return cls(p["model"], p["pretrained"], p["aggregate"], int(p["topk"]), float(p["dropout"]), p["input_norm"],
                   freeze=p["freeze_backbone"] in (True, "visual"))

    def backbones(self) -> dict[str, nn.Module]:
        return {"faces": self.backbone}

    def frame_features(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B, T, C) pooled backbone features of every frame."""
        if "face_emb" in batch and is_frozen(self.backbone):
            return _cached(self.backbone, batch["face_emb"], batch["faces"], batch.get("face_stale"))
        faces = batch["faces"]
        b, t = faces.shape[:2]
        return self.backbone(faces.flatten(0, 1)).view(b, t, -1)

    def features(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.aggregate(self.dropout(self.frame_features(batch)))[0]

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict:
        _, logit = self.aggregate(self.dropout(self.frame_features(batch)))
        return {"logit": logit}

    def cam_layers(self) -> dict[str, nn.Module]:
        return {"faces": cam_layer(self.backbone)}


FUSION_HEADS = ("mlp", "linear", "or")


def truthy(v: Any) -> bool:
    """A parameter switch written as YAML or text: false, 0, no, off, none and '' are off."""
    return v not in (None, False, 0, "false", "False", "no", "off", "none", "")


@register_model("fusion", backbones=lambda p: [p["model"], p["visual_model"] or p["model"]],
                freezable=True)
class FusionModel(FrozenAware):
    """Audio and visual branches plus an audio-visual synchrony head, joined with the has-audio flag.

    Three branches each give a logit: ``audio`` (mel backbone), ``visual`` (face backbone, frames aggregated)
    and ``sync`` (``SyncHead``: do lips and sound belong together?). The synchrony head is what catches fakes
    whose audio and video are each untouched but do not belong together. Heads (``fusion_head``):

    - ``mlp`` (default): an MLP over both embeddings, the synchrony features, the flag and the three branch
      logits (the branches' verdicts go in directly, so the MLP need not re-learn them).
    - ``linear``: a logistic regression over the branch logits and the flag -- four weights, nothing to overfit.
    - ``or``: the clip is fake if any branch fires (noisy-OR of the branch probabilities); a fake needs only
      one branch to explain it (multiple-instance learning).

    Branch losses (train.py, weight ``branch_loss``) train each branch on its own truth where the batch has it:
    with ``av_swap_prob`` the audio branch sees its audio clip's label, the visual branch its face clip's label,
    and the sync branch learns from swaps (out of sync) and untouched real clips (in sync) only -- the clip
    label would be wrong for it, since an audio or visual fake can be perfectly in sync. ``modality_dropout``
    zeroes whole embeddings at random during training (``mlp`` head).
    """

    inputs = ("mel", "faces")

    def __init__(self, audio_backbone: str = "resnet18", visual_backbone: str = "resnet18", pretrained: Any = False,
                 aggregate: str = "attention", hidden: int = 256, dropout: float = 0.1, branch_loss: float = 0.3,
                 sync: bool = True, sync_dim: int = 64, topk: int = 3, head: str = "mlp",
                 modality_dropout: float = 0.0, input_norm: Any = "auto", freeze: bool | str = False):
        super().__init__()
        if head not in FUSION_HEADS:
            raise ValueError(f"unknown fusion_head {head!r}; use {', '.join(FUSION_HEADS)}")
        self.head = head
        self.audio = AudioModel(audio_backbone, pretrained, dropout, input_norm, freeze=freeze in (True, "audio"))
        self.visual = VisualModel(visual_backbone, pretrained, aggregate, topk, dropout, input_norm,
                                  freeze=freeze in (True, "visual"))
        self.sync = SyncHead(sync_dim) if sync else None
        self.time_aligned = sync  # train.py: no time shifts / flips of the mel image
        da, dv = embedding_dim(self.audio.backbone), embedding_dim(self.visual.backbone)
        ds = self.sync.out_dim if self.sync is not None else 0
        self.sync_head = nn.Sequential(nn.Dropout(dropout), ScoreLinear(ds, 1)) if self.sync is not None else None
        n_branches = 3 if self.sync is not None else 2
        if head == "mlp":
            # the branch logits go in next to the embeddings: each branch is trained to call its own kind of fake
            # (branch losses), and the MLP can take their verdicts directly instead of re-learning them
            self.fuse = nn.Sequential(nn.Linear(da + dv + ds + 1 + n_branches, hidden), nn.GELU(),
                                      nn.Dropout(dropout), ScoreLinear(hidden, 1))
        elif head == "linear":
            self.fuse = ScoreLinear(n_branches + 1, 1)
            nn.init.constant_(self.fuse.weight, 1.0)
            nn.init.zeros_(self.fuse.bias)
        else:
            # start every branch at p = 1 - 0.5 ** (1 / k), so the combined score starts at 0.5, not near 1
            bias = math.log((1 - 0.5 ** (1 / n_branches)) / 0.5 ** (1 / n_branches))
            for lin in (self.audio.head[-1], self.visual.aggregate.frame_head,
                        *([self.sync_head[-1]] if self.sync_head is not None else [])):
                nn.init.constant_(lin.bias, bias)
        self.branch_loss = branch_loss
        self.modality_dropout = float(modality_dropout)

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> "FusionModel":
        """From a run's parameters with every ``core.schema.MODEL`` key present (dropout at least 0.1)."""
        return cls(p["model"], p["visual_model"] or p["model"], p["pretrained"], p["aggregate"],
                   dropout=max(float(p["dropout"]), 0.1), branch_loss=float(p["branch_loss"]),
                   sync=truthy(p["sync"]), sync_dim=int(p["sync_dim"]), topk=int(p["topk"]),
                   head=str(p["fusion_head"]), modality_dropout=float(p["modality_dropout"]),
                   input_norm=p["input_norm"], freeze=p["freeze_backbone"])

    def backbones(self) -> dict[str, nn.Module]:
        return {**self.audio.backbones(), **self.visual.backbones()}

    def _drop(self, parts: list[torch.Tensor]) -> list[torch.Tensor]:
        """Training only: zero each part of each sample with probability ``modality_dropout`` (never all parts of
        a sample), so the head cannot rest on whichever branch memorises the training clips first."""
        if not self.training or self.modality_dropout <= 0 or len(parts) < 2:
            return parts
        b = parts[0].shape[0]
        keep = torch.rand(b, len(parts), device=parts[0].device) >= self.modality_dropout
        keep[keep.sum(1) == 0, 0] = True
        return [x * keep[:, i:i + 1].to(x.dtype) for i, x in enumerate(parts)]

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict:
        fa = self.audio.features(batch)
        fv, v_logit = self.visual.aggregate(self.visual.dropout(self.visual.frame_features(batch)))
        b = fa.shape[0]
        has_audio = batch.get("has_audio", torch.ones(b, device=fa.device)).float().view(b, 1)
        a_logit = self.audio.head(fa).squeeze(1)
        branches = {"audio": a_logit, "visual": v_logit}
        # without a soundtrack there is nothing to be in sync with: the flag alone speaks for it
        fs = self.sync(batch["mel"], batch["faces"], batch.get("mouths")) * has_audio if self.sync is not None else None
        if fs is not None:
            branches["sync"] = self.sync_head(fs).squeeze(1)
        if self.head == "mlp":
            parts = self._drop([fa, fv] + ([fs] if fs is not None else []))
            logit = self.fuse(torch.cat([*parts, has_audio, torch.stack(list(branches.values()), 1)], 1)).squeeze(1)
        elif self.head == "linear":
            logit = self.fuse(torch.cat([torch.stack(list(branches.values()), 1), has_audio], 1)).squeeze(1)
        else:
            zs, ws = [a_logit, v_logit], [has_audio[:, 0], torch.ones_like(v_logit)]
            if fs is not None:
                zs.append(branches["sync"])
                ws.append(has_audio[:, 0])
            logit = noisy_or_logit(torch.stack(zs, 1), torch.stack(ws, 1))
        # "sync" learns only from explicit targets (av_swap: swapped = 1, untouched real = 0); the clip label
        # would be wrong for it, since an audio or visual fake may be perfectly in sync
        return {"logit": logit, "branch_logits": branches, "explicit_branches": ("sync",),
                "branch_scores": {k: torch.sigmoid(v.detach()) for k, v in branches.items()}}

    def cam_layers(self) -> dict[str, nn.Module]:
        return {"mel": cam_layer(self.audio.backbone), "faces": cam_layer(self.visual.backbone)}
