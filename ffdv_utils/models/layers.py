"""Small layers the detectors share: float32 logit layers, a conv-BN-ReLU block, standardisation, noisy-OR.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ScoreLinear(nn.Linear):
    """A ``nn.Linear`` that computes in float32 even under autocast, for the layers that produce logits.

    A bf16 logit keeps 8 significant bits: thousands of test clips would share a score, which blurs the AUC and
    ruins TPR at FPR=1e-3. The layer is tiny, so full precision costs nothing; its state dict is a Linear's.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kind = x.device.type if x.device.type in ("cuda", "cpu") else "cpu"
        with torch.autocast(kind, enabled=False):
            return F.linear(x.float(), self.weight.float(), None if self.bias is None else self.bias.float())


def conv_bn(cin: int, cout: int, stride: int = 2) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def standardise(x: torch.Tensor, dim: int = 1, eps: float = 1e-5) -> torch.Tensor:
    return (x - x.mean(dim, keepdim=True)) / (x.std(dim, keepdim=True, unbiased=False) + eps)


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


# -------------------------------------------------------------------------------------------- frozen backbones

FREEZE_CHOICES = (False, True, "audio", "visual")


def freeze_choice(value: object) -> bool | str:
    """``freeze_backbone`` as written in a params file -> False, True, "audio" or "visual" (else ValueError)."""
    if isinstance(value, str) and value.lower() in ("false", "no", "off", "none", ""):
        return False
    if isinstance(value, str) and value.lower() in ("true", "yes", "on", "all"):
        return True
    if value in (None, 0):
        return False
    if value == 1:
        return True
    if value not in FREEZE_CHOICES:
        raise ValueError(f"freeze_backbone must be false, true, audio or visual, got {value!r}")
    return value  # type: ignore[return-value]


def freeze(module: nn.Module) -> nn.Module:
    """Freeze a backbone: no gradients, and ``FrozenAware.train`` keeps it in eval mode (BatchNorm statistics stay
    the pretrained ones, so its output on a clip is the cached embedding of that clip)."""
    for t in module.parameters():
        t.requires_grad_(False)
    module.frozen = True
    return module


def is_frozen(module: nn.Module) -> bool:
    return bool(getattr(module, "frozen", False))


class FrozenAware(nn.Module):
    """A detector whose frozen backbones stay in eval mode under ``model.train()``; subclasses name their backbones
    by input (``backbones()``: {"mel": ..., "faces": ...})."""

    def backbones(self) -> dict[str, nn.Module]:
        return {}

    def frozen_backbones(self) -> dict[str, nn.Module]:
        """{input: backbone} of the frozen backbones (``features.embeddings`` caches what they output)."""
        return {key: bb for key, bb in self.backbones().items() if is_frozen(bb)}

    def train(self, mode: bool = True) -> "FrozenAware":
        super().train(mode)
        for m in self.modules():
            if is_frozen(m):
                m.eval()
        return self
