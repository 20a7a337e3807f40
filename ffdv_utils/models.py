"""Detectors: timm backbones by name, audio / visual / fusion heads, the parameter cap, local pretrained weights.

Every model takes a batch dict (``mel`` (B,3,H,W), ``faces`` (B,T,3,S,S), ``has_audio`` (B,)) and returns a dict
with ``logit`` (B,) -- probability of fake is ``sigmoid(logit)`` -- and optionally ``aux_loss``. One logit with
binary cross-entropy is the same decision rule as the baseline's two-class softmax (p = sigmoid(z1 - z0)) and
takes soft MixUp targets directly.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import timm
import torch
import torch.nn.functional as F
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


def embedding_dim(backbone: nn.Module) -> int:
    """Width of a ``num_classes=0`` timm backbone's output: ``head_hidden_size`` where a pre-logits layer follows
    the pooling (MobileNetV3, EfficientNet-V2 variants), else ``num_features``."""
    return int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)


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
    if not kwargs.get("features_only"):
        extra["num_classes"] = 0
    return timm.create_model(name, pretrained=use, **extra, **kwargs)


def cam_layer(backbone: nn.Module) -> nn.Module:
    """The module whose output is the backbone's last feature map (what Grad-CAM weighs)."""
    info = getattr(backbone, "feature_info", None)
    if info is not None:
        names = info.module_name() if hasattr(info, "module_name") else [info[-1]["module"]]
        name = names[-1]
        try:
            return backbone.get_submodule(name)
        except AttributeError:  # features_only nets flatten "a.b" into "a_b"
            return backbone.get_submodule(name.replace(".", "_"))
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(backbone).__name__} has no convolution for Grad-CAM")
    return convs[-1]


class ScoreLinear(nn.Linear):
    """A ``nn.Linear`` that computes in float32 even under autocast, for the layers that produce logits.

    A bf16 logit keeps 8 significant bits: thousands of test clips would share a score, which blurs the AUC and
    ruins TPR at FPR=1e-3. The layer is tiny, so full precision costs nothing; its state dict is a Linear's.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kind = x.device.type if x.device.type in ("cuda", "cpu") else "cpu"
        with torch.autocast(kind, enabled=False):
            return F.linear(x.float(), self.weight.float(), None if self.bias is None else self.bias.float())


class AudioModel(nn.Module):
    """The public baseline's idea: an image backbone on the mel spectrogram image."""

    inputs = ("mel",)

    def __init__(self, backbone: str = "resnet18", pretrained: Any = False, dropout: float = 0.0):
        super().__init__()
        self.backbone = create_backbone(backbone, pretrained)
        self.head = nn.Sequential(nn.Dropout(dropout), ScoreLinear(embedding_dim(self.backbone), 1))

    def features(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
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


class VisualModel(nn.Module):
    """A frame-level backbone on face crops, aggregated to a clip score."""

    inputs = ("faces",)

    def __init__(self, backbone: str = "resnet18", pretrained: Any = False, aggregate: str = "mean",
                 topk: int = 3, dropout: float = 0.0):
        super().__init__()
        self.backbone = create_backbone(backbone, pretrained)
        self.dropout = nn.Dropout(dropout)
        self.aggregate = FrameAggregator(embedding_dim(self.backbone), aggregate, topk)

    def frame_features(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B, T, C) pooled backbone features of every frame."""
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


def _conv_bn(cin: int, cout: int, stride: int = 2) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


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


def _standardise(x: torch.Tensor, dim: int = 1, eps: float = 1e-5) -> torch.Tensor:
    return (x - x.mean(dim, keepdim=True)) / (x.std(dim, keepdim=True, unbiased=False) + eps)


MOUTH_BOX = (0.62, 0.9, 0.3, 0.7)  # rows from, to, columns from, to, as fractions of a face crop


def speech_energy(mel: torch.Tensor, t: int) -> torch.Tensor:
    """(B, C, H, W) normalised mel image -> (B, T, 1) loudness (mean over the mel bands) at the T frame instants."""
    return sample_at_frames(mel[:, :1].mean(2), t)


def mouth_spread(faces: torch.Tensor, box: Sequence[float] = MOUTH_BOX) -> torch.Tensor:
    """(B, T, C, H, W) face crops -> (B, T, 1) grey-level spread of a box round the lips.

    An open mouth puts a dark hole between light lips, so the spread rises and falls with the mouth. On the
    sample data (160 clips, 16 frames) its correlation with speech energy separates real clips from audio-visual
    mismatches with AUC 0.88, against 0.66 for the spread of the whole lower half of the crop (README,
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
    e = _standardise(speech_energy(mel, t).float())
    m = _standardise(mouth_spread(faces, box).float())
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
        self.mouth = nn.Sequential(_conv_bn(3, 16), _conv_bn(16, 32), _conv_bn(32, dim // 2))
        self.proj_a = nn.Linear(dim, n_corr)
        self.proj_v = nn.Linear(dim, n_corr)
        self.temporal = nn.Sequential(nn.Conv1d(3 * dim, dim, 3, padding=1), nn.GELU(),
                                      nn.Conv1d(dim, dim, 3, padding=1), nn.GELU())
        k = n_corr + 1
        self.out_dim = 2 * dim + len(self.lags) * k * k

    def streams(self, mel: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per-frame audio and mouth features (B, T, dim) and the fixed energy / mouth-spread channels (B, T, 1)."""
        b, t = faces.shape[:2]
        bands = F.adaptive_avg_pool2d(mel[:, :1], (self.n_bands, mel.shape[-1])).squeeze(1)  # (B, bands, W)
        a = sample_at_frames(self.audio(bands), t)
        energy = speech_energy(mel, t)
        rows = faces.shape[-2]
        mouth = faces[..., int(rows * self.mouth_from):, :].flatten(0, 1)
        fmap = self.mouth(mouth)
        # max pooling as well as mean: the mouth is a small part of the lower face and must not be averaged away
        v = torch.cat([fmap.mean((2, 3)), fmap.amax((2, 3))], dim=1).view(b, t, -1)
        spread = mouth_spread(faces, self.mouth_box)
        return a, v, energy, spread

    def forward(self, mel: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        a, v, energy, spread = self.streams(mel, faces)
        t = a.shape[1]
        pa = _standardise(torch.cat([self.proj_a(a), energy], dim=2))  # (B, T, k): zero mean, unit std over time
        pv = _standardise(torch.cat([self.proj_v(v), spread], dim=2))
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


def noisy_or_logit(logits: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Logit of 1 - prod_k (1 - sigmoid(z_k)) over the last dimension: fake if ANY branch finds a manipulation.

    -log(1 - sigmoid(z)) = softplus(z), so with S = sum_k softplus(z_k) the combined probability is 1 - exp(-S)
    and its logit is log(expm1(S)) = S + log(1 - exp(-S)). ``weights`` (0..1) switch branches off per sample.
    """
    total = F.softplus(logits)
    if weights is not None:
        total = total * weights
    total = total.sum(-1).clamp(min=1e-6)
    return total + torch.log(-torch.expm1(-total))


FUSION_HEADS = ("mlp", "linear", "or")


class FusionModel(nn.Module):
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
                 modality_dropout: float = 0.0):
        super().__init__()
        if head not in FUSION_HEADS:
            raise ValueError(f"unknown fusion_head {head!r}; use {', '.join(FUSION_HEADS)}")
        self.head = head
        self.audio = AudioModel(audio_backbone, pretrained, dropout)
        self.visual = VisualModel(visual_backbone, pretrained, aggregate, topk, dropout)
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
        fs = self.sync(batch["mel"], batch["faces"]) * has_audio if self.sync is not None else None
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


def _truthy(v: Any) -> bool:
    return v not in (None, False, 0, "false", "False", "no", "off", "")


def build_model(params: Mapping[str, Any], check: bool = True) -> nn.Module:
    """The model a run's parameters describe; refuses one over the 200M-parameter rule (or ``max_params``).

    Built under ``torch.device("meta")`` it allocates nothing, which is how a size check of a huge backbone
    stays cheap (``compare.parameter_count`` passes ``check=False`` to get the count of a refused model).
    """
    kind = params.get("model_type", "audio")
    name = params.get("model", "resnet18")
    pretrained = params.get("pretrained", False)
    dropout = float(params.get("dropout") or 0.0)
    if kind == "audio":
        model = AudioModel(name, pretrained, dropout)
    elif kind == "visual":
        model = VisualModel(name, pretrained, params.get("aggregate", "mean"), int(params.get("topk", 3)), dropout)
    elif kind == "fusion":
        model = FusionModel(name, params.get("visual_model") or name, pretrained, params.get("aggregate", "attention"),
                            dropout=max(dropout, 0.1), branch_loss=float(params.get("branch_loss", 0.3)),
                            sync=_truthy(params.get("sync", True)), sync_dim=int(params.get("sync_dim") or 64),
                            topk=int(params.get("topk", 3)), head=str(params.get("fusion_head") or "mlp"),
                            modality_dropout=float(params.get("modality_dropout") or 0.0))
    elif kind == "marle":
        from .marle import MarleModel

        model = MarleModel.from_params(params)
    else:
        raise ModelRuleError(f"unknown model_type {kind!r}; choose one of {', '.join(MODEL_TYPES)}")
    if check:
        check_size(model, kind, name, params.get("max_params"))
    return model


def check_size(model: nn.Module, kind: str = "", name: str = "", max_params: Any = None) -> int:
    """Parameter count of ``model``; ModelRuleError when over 200M (or the smaller ``max_params``)."""
    n = count_parameters(model)
    limit = min(int(max_params), MAX_PARAMS) if max_params not in (None, "") else MAX_PARAMS
    if n > limit:
        why = "the competition's 200M cap" if limit == MAX_PARAMS else f"max_params = {limit:,}"
        raise ModelRuleError(f"{kind} model {name!r} has {n / 1e6:.1f}M parameters ({n:,}), over {why}; "
                             "choose a smaller backbone")
    return n


def model_inputs(model: nn.Module) -> tuple[str, ...]:
    return tuple(getattr(model, "inputs", ("mel",)))
