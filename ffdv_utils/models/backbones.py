"""Backbones: timm models by name with pooled features, weights from a local file or a Kaggle dataset (never
downloaded inside a kernel), and the layer Grad-CAM weighs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import timm
from torch import nn

from ..core.paths import find_kaggle_file, resolve_path
from .rules import ModelRuleError


def resolve_pretrained(pretrained: Any) -> tuple[bool, str | None]:
    """``pretrained`` parameter -> (use weights, local file or None).

    false: random init. true: timm's ImageNet weights (needs internet; refused when offline on Kaggle).
    A path (absolute, relative to the project root, or found under /kaggle/input): that local weights file.
    """
    if pretrained in (None, False, "false", "False", "", 0):
        return False, None
    if pretrained is True or pretrained in ("true", "True", 1):
        return True, None
    path = resolve_path(str(pretrained))
    if path is not None and path.is_file():
        return True, str(path)
    hit = find_kaggle_file(Path(str(pretrained)).name)  # attached as a Kaggle dataset (None elsewhere)
    if hit is not None:
        return True, str(hit)
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
