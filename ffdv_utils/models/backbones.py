"""Backbones: timm models by name with pooled features, weights from a registry package, a local file or a Kaggle
dataset (never downloaded inside a kernel), input scaling that follows the weights, and the layer Grad-CAM weighs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from ..core.paths import find_kaggle_file, resolve_path
from .pretrained import INPUT_NORMS, check_arch, load_packaged, norm_values, resolve_norm, source_kind, weights_file
from .rules import ModelRuleError


def resolve_pretrained(pretrained: Any) -> tuple[bool, str | None]:
    """``pretrained`` parameter -> (use weights, local file or None).

    false: random init. true: timm's ImageNet weights (needs internet; refused inside a Kaggle kernel).
    ``package:NAME``: ImageNet-1K weights shipped in an installed registry package (``models.pretrained.PACKAGED``,
    e.g. ``package:efficientnet_lite0``), found through importlib, never downloaded.
    A path (absolute, relative to the project root, or found under /kaggle/input): that local weights file.
    """
    kind = source_kind(pretrained)
    if kind == "none":
        return False, None
    if kind == "timm":
        return True, None
    if kind == "package":
        return True, str(weights_file(str(pretrained)))
    path = resolve_path(str(pretrained))
    if path is not None and path.is_file():
        return True, str(path)
    hit = find_kaggle_file(Path(str(pretrained)).name)  # attached as a Kaggle dataset (None elsewhere)
    if hit is not None:
        return True, str(hit)
    raise ModelRuleError(f"pretrained weights file {pretrained!r} not found (resolved to {path}); attach ImageNet-1K "
                         "weights as a file (e.g. a Kaggle dataset), use packaged weights (pretrained: "
                         "package:efficientnet_lite0 with model: tf_efficientnet_lite0) or set pretrained: false")


def embedding_dim(backbone: nn.Module) -> int:
    """Width of a ``num_classes=0`` timm backbone's output: ``head_hidden_size`` where a pre-logits layer follows
    the pooling (MobileNetV3, EfficientNet-V2 variants), else ``num_features``."""
    return int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)


def _renormalise(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: ImageNet-normalised input -> the scaling the weights want (one multiply-add)."""
    x = args[0]
    return (x * module.input_scale.to(x.dtype) + module.input_shift.to(x.dtype), *args[1:])


def set_input_norm(backbone: nn.Module, input_norm: Any) -> nn.Module:
    """Make ``backbone`` re-map its ImageNet-normalised input to ``input_norm`` (a concrete setting).

    The batches are normalised with ImageNet's mean and std (``features.batches.prepare_batch``); weights trained
    with another scaling (the Lite weights: (x - 0.5) / 0.5) get it through a per-channel affine held in
    non-persistent buffers, so state dicts, checkpoints and Grad-CAM's ``cam_layer`` are unchanged. ImageNet's own
    scaling adds nothing. ``backbone.input_norm`` records the setting.
    """
    mean, std = norm_values(input_norm)
    in_mean, in_std = INPUT_NORMS["imagenet"]
    backbone.input_norm = input_norm
    if (mean, std) == (in_mean, in_std):
        return backbone
    m, s = torch.tensor(mean), torch.tensor(std)
    im, ist = torch.tensor(in_mean), torch.tensor(in_std)
    # x01 = x * ist + im, wanted (x01 - m) / s = x * (ist / s) + (im - m) / s
    backbone.register_buffer("input_scale", (ist / s).view(1, 3, 1, 1), persistent=False)
    backbone.register_buffer("input_shift", ((im - m) / s).view(1, 3, 1, 1), persistent=False)
    backbone.register_forward_pre_hook(_renormalise)
    return backbone


def create_backbone(name: str, pretrained: Any = False, input_norm: Any = "auto", **kwargs: Any) -> nn.Module:
    """timm backbone with pooled features (``num_classes=0`` unless given or ``features_only``).

    Weights: a local file through timm's ``pretrained_cfg_overlay``; packaged weights (``package:NAME``) mapped onto
    the timm model's tensors in order, every shape checked (``models.pretrained.load_packaged``; also onto a
    ``features_only`` net). ``input_norm`` (``auto``: as the weights want) sets the input re-mapping
    (``set_input_norm``); the module's ``pretrained_record`` says which weights file it started from.
    """
    kind = source_kind(pretrained)
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:8]
        raise ModelRuleError(f"unknown timm model {name!r}; similar names: {', '.join(close) or 'none'}")
    if kind == "package":
        check_arch(str(pretrained), name)
    if kind == "timm" and os.environ.get("KAGGLE_KERNEL_RUN_TYPE") and not os.environ.get("FFDV_ALLOW_DOWNLOAD"):
        raise ModelRuleError("pretrained: true downloads weights, which a Kaggle kernel with internet off cannot do; "
                             "use packaged weights (pretrained: package:efficientnet_lite0) or pass the path of an "
                             "attached ImageNet-1K weights file instead")
    use, file = resolve_pretrained(pretrained)
    if not kwargs.get("features_only"):
        kwargs.setdefault("num_classes", 0)
    if kind == "package":
        model = timm.create_model(name, pretrained=False, **kwargs)
        record = load_packaged(model, str(pretrained), file)
    else:
        extra = {"pretrained_cfg_overlay": {"file": file}} if file else {}
        model = timm.create_model(name, pretrained=use, **extra, **kwargs)
        record = {"pretrained_source": None if kind == "none" else str(pretrained), "pretrained_file": file}
    model.pretrained_record = record
    return set_input_norm(model, resolve_norm(input_norm, pretrained, name))


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
