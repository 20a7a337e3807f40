"""A temporal relation model after MaRLe (masked relation learning, IEEE TIFS 2023), small enough for a CPU.

Detection as graph classification: facial regions are the nodes, their relations the edges, and the graph
evolves over the clip's frames.

1. Per frame, a truncated timm backbone (``features_only``, stage ``marle_stage``) gives a feature map F.
2. N spatial attention maps (a 1x1 convolution, softmax over positions) weight F; attention-weighted average
   pooling gives N region vectors V (N x D per frame).
3. An orthogonal diversity loss pushes the Gram matrix of the normalised V towards the identity, so the heads
   attend to different regions; a temporal-consistency loss keeps each head's vector close between
   neighbouring frames, so head n follows the same region through the clip.
4. A relation matrix between region vectors (scaled dot products of learned projections); during training part
   of it is masked -- the weakest relations below a quantile (``min`` rule) or a random share (``random``) --
   so the model cannot rely on a few redundant edges. Rows are softmax-normalised into an adjacency matrix.
5. A temporal graph network: a graph convolution per frame, then a GRU whose gates are graph convolutions
   carries a hidden state per region through time. The final hidden states, pooled over regions, are classified.

Optionally an audio branch joins before the classifier (``marle_audio``): the mel backbone's embedding, the
audio-visual synchrony head of ``SyncHead``, or both. Auxiliary losses come back as ``aux_loss`` (their
weights are parameters) and, for inspection, each term in ``aux_terms``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..core.schema import MODEL, with_defaults
from .backbones import cam_layer, create_backbone, embedding_dim
from .layers import ScoreLinear
from .registration import register_model
from .sync import SyncHead

MASK_RULES = ("min", "random", "none")
AUDIO_OPTIONS = ("none", "mel", "sync", "both")


class RegionAttention(nn.Module):
    """Feature map (B', C, h, w) -> N region vectors (B', N, D) and the attention maps (B', N, h, w)."""

    def __init__(self, channels: int, n_regions: int, dim: int):
        super().__init__()
        self.maps = nn.Conv2d(channels, n_regions, 1)
        self.proj = nn.Linear(channels, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = fmap.shape
        attn = self.maps(fmap).flatten(2).softmax(-1)  # (B', N, hw): each map sums to one over positions
        pooled = torch.einsum("bnk,bck->bnc", attn, fmap.flatten(2))  # attention-weighted average pooling
        return self.norm(self.proj(pooled)), attn.view(b, -1, h, w)


def diversity_loss(v: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of the normalised regions' Gram matrix from the identity (off-diagonal terms;
    the diagonal is one by construction). ``v``: (..., N, D)."""
    vn = F.normalize(v, dim=-1)
    gram = vn @ vn.transpose(-1, -2)
    n = gram.shape[-1]
    if n < 2:
        return gram.new_zeros(())
    eye = torch.eye(n, device=gram.device, dtype=gram.dtype)
    return ((gram - eye) ** 2).sum((-1, -2)).mean() / (n * (n - 1))


def temporal_consistency_loss(v: torch.Tensor) -> torch.Tensor:
    """Mean squared distance between each head's normalised vectors of neighbouring frames. ``v``: (B, T, N, D)."""
    if v.shape[1] < 2:
        return v.new_zeros(())
    vn = F.normalize(v, dim=-1)
    return ((vn[:, 1:] - vn[:, :-1]) ** 2).sum(-1).mean()


def relation_mask(rel: torch.Tensor, rule: str, ratio: float, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
    """Bool mask (True = dropped) over the off-diagonal relations of ``rel`` (..., N, N).

    ``min``: per graph, the ``ratio`` share of off-diagonal relations with the lowest values; ``random``: each
    off-diagonal relation with probability ``ratio``; ``none``: nothing. Self-loops are never dropped, so every
    row keeps at least one edge.
    """
    n = rel.shape[-1]
    eye = torch.eye(n, dtype=torch.bool, device=rel.device)
    if rule == "none" or ratio <= 0 or n < 2:
        return torch.zeros_like(rel, dtype=torch.bool)
    if rule == "random":
        draw = torch.rand(rel.shape, device=rel.device, generator=generator)
        return (draw < ratio) & ~eye
    if rule == "min":
        k = int(math.floor(ratio * n * (n - 1)))
        if k < 1:
            return torch.zeros_like(rel, dtype=torch.bool)
        off = rel.detach().masked_fill(eye, float("inf")).flatten(-2)
        thr = off.kthvalue(k, dim=-1).values[..., None, None]
        return (rel.detach() <= thr) & ~eye
    raise ValueError(f"unknown relation mask rule {rule!r}; use {', '.join(MASK_RULES)}")


class GraphGRUCell(nn.Module):
    """A GRU over node states whose input and hidden transforms see the graph (A X, A H): a temporal GCN cell."""

    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.gates = nn.Linear(in_dim + hidden, 2 * hidden)
        self.cand = nn.Linear(in_dim + hidden, hidden)

    def forward(self, x: torch.Tensor, h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        ax = adj @ x
        z, r = torch.sigmoid(self.gates(torch.cat([ax, adj @ h], -1))).chunk(2, -1)
        cand = torch.tanh(self.cand(torch.cat([ax, adj @ (r * h)], -1)))
        return (1 - z) * h + z * cand


def marle_backbones(p: Mapping[str, Any]) -> list[str]:
    """The face backbone, and the mel backbone when ``marle_audio`` uses one."""
    return [p["visual_model"] or p["model"]] + ([p["model"]] if p["marle_audio"] in ("mel", "both") else [])


@register_model("marle", backbones=marle_backbones)
class MarleModel(nn.Module):
    """Masked relation learning over face regions and time; see the module docstring.

    Args:
        backbone: timm model name for the face frames (truncated at ``stage``).
        pretrained: as in ``resolve_pretrained`` (a local weights file, or false).
        stage: index of the backbone stage whose feature map is used (``features_only`` out index).
        n_regions: attention heads = graph nodes.
        dim: region vector size.
        hidden: GRU state size per node.
        mask: relation mask rule during training (``min``, ``random`` or ``none``).
        mask_ratio: share of off-diagonal relations masked.
        div_weight: weight of the diversity loss in ``aux_loss``.
        tc_weight: weight of the temporal-consistency loss in ``aux_loss``.
        dropout: before the classifier.
        audio: ``none``, ``mel`` (a mel backbone's embedding), ``sync`` (SyncHead) or ``both``.
        audio_backbone: timm name for the mel branch.
        sync_dim: width of the synchrony head.
    """

    def __init__(self, backbone: str = "resnet18", pretrained: Any = False, stage: int = 2, n_regions: int = 4,
                 dim: int = 128, hidden: int = 128, mask: str = "min", mask_ratio: float = 0.3,
                 div_weight: float = 0.1, tc_weight: float = 0.1, dropout: float = 0.1, audio: str = "none",
                 audio_backbone: str = "resnet18", sync_dim: int = 64, input_norm: Any = "auto"):
        super().__init__()
        if mask not in MASK_RULES:
            raise ValueError(f"unknown marle_mask {mask!r}; use {', '.join(MASK_RULES)}")
        if audio not in AUDIO_OPTIONS:
            raise ValueError(f"unknown marle_audio {audio!r}; use {', '.join(AUDIO_OPTIONS)}")
        self.backbone = create_backbone(backbone, pretrained, input_norm, features_only=True,
                                        out_indices=(int(stage),))
        channels = self.backbone.feature_info.channels()[-1]
        self.regions = RegionAttention(channels, n_regions, dim)
        self.query = nn.Linear(dim, dim, bias=False)
        self.key = nn.Linear(dim, dim, bias=False)
        self.gcn = nn.Linear(dim, dim)
        self.cell = GraphGRUCell(dim, hidden)
        self.mask, self.mask_ratio = mask, float(mask_ratio)
        self.div_weight, self.tc_weight = float(div_weight), float(tc_weight)
        self.hidden = hidden
        self.audio_backbone = (create_backbone(audio_backbone, pretrained, input_norm) if audio in ("mel", "both")
                               else None)
        self.audio_head = ScoreLinear(embedding_dim(self.audio_backbone), 1) if self.audio_backbone is not None else None
        self.sync = SyncHead(sync_dim) if audio in ("sync", "both") else None
        # trained on av_swap's explicit in-sync / out-of-sync targets only (see FusionModel)
        self.sync_head = ScoreLinear(self.sync.out_dim, 1) if self.sync is not None else None
        self.time_aligned = self.sync is not None
        self.inputs = ("faces",) if audio == "none" else ("mel", "faces")
        extra = (embedding_dim(self.audio_backbone) if self.audio_backbone is not None else 0) + \
            (self.sync.out_dim if self.sync is not None else 0) + (1 if audio != "none" else 0)
        self.classifier = nn.Sequential(nn.Dropout(dropout), ScoreLinear(2 * hidden + extra, 1))

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "MarleModel":
        """Build from a run's parameters (``marle_*`` keys; the face backbone is ``visual_model`` or ``model``)."""
        p = with_defaults(params, MODEL)
        return cls(backbone=p["visual_model"] or p["model"], pretrained=p["pretrained"], stage=int(p["marle_stage"]),
                   n_regions=int(p["marle_regions"]), dim=int(p["marle_dim"]), hidden=int(p["marle_hidden"]),
                   mask=str(p["marle_mask"]), mask_ratio=float(p["marle_mask_ratio"]),
                   div_weight=float(p["marle_div_weight"]), tc_weight=float(p["marle_tc_weight"]),
                   dropout=max(float(p["dropout"]), 0.1), audio=str(p["marle_audio"]), audio_backbone=p["model"],
                   sync_dim=int(p["sync_dim"]), input_norm=p["input_norm"])

    def region_vectors(self, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """faces (B, T, 3, S, S) -> region vectors (B, T, N, D) and attention maps (B, T, N, h, w)."""
        b, t = faces.shape[:2]
        fmap = self.backbone(faces.flatten(0, 1))[-1]
        v, attn = self.regions(fmap)
        return v.view(b, t, *v.shape[1:]), attn.view(b, t, *attn.shape[1:])

    def adjacency(self, v: torch.Tensor) -> torch.Tensor:
        """Row-normalised relation graph (B, T, N, N), masked during training."""
        rel = self.query(v) @ self.key(v).transpose(-1, -2) / math.sqrt(v.shape[-1])
        if self.training:
            rel = rel.masked_fill(relation_mask(rel, self.mask, self.mask_ratio), float("-inf"))
        return rel.softmax(-1)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict:
        faces = batch["faces"]
        v, _ = self.region_vectors(faces)
        adj = self.adjacency(v)
        x = v + F.gelu(self.gcn(adj @ v))  # one graph convolution per frame (residual)
        h = x.new_zeros(x.shape[0], x.shape[2], self.hidden)
        for step in range(x.shape[1]):
            h = self.cell(x[:, step], h, adj[:, step])
        parts = [h.mean(1), h.amax(1)]
        out: dict[str, Any] = {}
        if self.inputs != ("faces",):
            b = faces.shape[0]
            has_audio = batch.get("has_audio", torch.ones(b, device=faces.device)).float().view(b, 1)
            if self.audio_backbone is not None:
                fa = self.audio_backbone(batch["mel"])
                parts.append(fa)
                out["branch_logits"] = {"audio": self.audio_head(fa).squeeze(1)}
            if self.sync is not None:
                fs = self.sync(batch["mel"], faces) * has_audio
                parts.append(fs)
                out.setdefault("branch_logits", {})["sync"] = self.sync_head(fs).squeeze(1)
                out["explicit_branches"] = ("sync",)
            parts.append(has_audio)
        out["logit"] = self.classifier(torch.cat(parts, dim=1)).squeeze(1)
        div, tc = diversity_loss(v), temporal_consistency_loss(v)
        out["aux_terms"] = {"diversity": div.detach(), "temporal": tc.detach()}
        out["aux_loss"] = self.div_weight * div + self.tc_weight * tc
        return out

    def cam_layers(self) -> dict[str, nn.Module]:
        layers = {"faces": cam_layer(self.backbone)}
        if self.audio_backbone is not None:
            layers["mel"] = cam_layer(self.audio_backbone)
        return layers
