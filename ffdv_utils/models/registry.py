"""``create_model(params)``: the one door to every detector, chosen by ``model_type`` in a params file (timm style).

A detector class registers under a ``model_type`` and builds itself ``from_params`` (a run's parameters with every
``core.schema.MODEL`` key filled), so a new model type is one class and one line here. ``create_model`` applies the
200M-parameter rule (``models.rules``) to whatever it builds.

Every model takes a batch dict (``mel`` (B,3,H,W), ``faces`` (B,T,3,S,S), ``has_audio`` (B,)) and returns a dict
with ``logit`` (B,) -- probability of fake is ``sigmoid(logit)`` -- and optionally ``aux_loss``. One logit with
binary cross-entropy is the same decision rule as the baseline's two-class softmax (p = sigmoid(z1 - z0)) and
takes soft MixUp targets directly.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from ..core.schema import MODEL, with_defaults
from .heads import AudioModel, FusionModel, VisualModel
from .marle import MarleModel
from .rules import ModelRuleError, check_size

MODELS: dict[str, type[nn.Module]] = {"audio": AudioModel, "visual": VisualModel, "fusion": FusionModel,
                                      "marle": MarleModel}
MODEL_TYPES = tuple(MODELS)


def create_model(params: Mapping[str, Any], check: bool = True) -> nn.Module:
    """The model a run's parameters describe; refuses one over the 200M-parameter rule (or ``max_params``).

    Built under ``torch.device("meta")`` it allocates nothing, which is how a size check of a huge backbone
    stays cheap (``parameter_count`` passes ``check=False`` to get the count of a refused model).
    """
    p = with_defaults(params, MODEL)
    kind = p["model_type"]
    if kind not in MODELS:
        raise ModelRuleError(f"unknown model_type {kind!r}; choose one of {', '.join(MODEL_TYPES)}")
    model = MODELS[kind].from_params(p)
    if check:
        check_size(model, kind, p["model"], p["max_params"])
    return model


build_model = create_model  # the name the notebooks and older code use


def model_inputs(model: nn.Module) -> tuple[str, ...]:
    """What the model reads from a batch (``mel``, ``faces``): the features to extract for it."""
    return tuple(getattr(model, "inputs", ("mel",)))


def parameter_count(params: Mapping[str, Any]) -> int:
    """Parameters of the model ``params`` describe, counted without allocating weights (meta device)."""
    p = {**dict(params), "pretrained": False}
    with torch.device("meta"):
        model = create_model(p, check=False)  # the caller flags an oversized model; counting must not refuse it
    return sum(t.numel() for t in model.parameters())
