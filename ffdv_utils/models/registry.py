"""``create_model(params)``: the one door to every detector, chosen by ``model_type`` in a params file (timm style).

A detector class registers itself under a ``model_type`` with ``models.registration.register_model`` (its backbones,
whether it can be frozen, its own defaults) and builds itself ``from_params`` (a run's parameters with every
``core.schema.MODEL`` key and its own defaults filled): a new model type is one decorated class, in a module imported
here. ``create_model`` applies the
200M-parameter rule (``models.rules``) to whatever it builds, and makes ``input_norm`` concrete
(``resolve_model_params``): a checkpoint's model is rebuilt with ``pretrained: false``, so the scaling its weights
were trained with must be saved as a value, not re-derived from a source that is no longer there.

Every model takes a batch dict (``mel`` (B,3,H,W), ``faces`` (B,T,3,S,S), ``has_audio`` (B,)) and returns a dict
with ``logit`` (B,) -- probability of fake is ``sigmoid(logit)`` -- and optionally ``aux_loss``. One logit with
binary cross-entropy is the same decision rule as the baseline's two-class softmax (p = sigmoid(z1 - z0)) and
takes soft MixUp targets directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..core.schema import MODEL, with_defaults
from .backbones import resolve_pretrained
from . import heads, marle, profile  # noqa: F401  (their classes register themselves)
from .layers import freeze_choice
from .pretrained import resolve_norm, source_kind, weights_sha256
from .registration import MODELS, model_spec, model_types
from .rules import ModelRuleError, check_size

MODEL_TYPES = model_types()  # the built-in ones; ``model_types()`` also lists those registered later


def create_model(params: Mapping[str, Any], check: bool = True) -> nn.Module:
    """The model a run's parameters describe; refuses one over the 200M-parameter rule (or ``max_params``).

    Built under ``torch.device("meta")`` it allocates nothing, which is how a size check of a huge backbone
    stays cheap (``parameter_count`` passes ``check=False`` to get the count of a refused model).
    """
    p = resolve_model_params(params)
    model = MODELS[p["model_type"]].cls.from_params(p)
    if check:
        check_size(model, p["model_type"], p["model"], p["max_params"])
    return model


build_model = create_model  # the name the notebooks use


def backbone_names(params: Mapping[str, Any]) -> list[str]:
    """The timm names of the backbones ``params`` build (model type by model type, as their ``from_params``)."""
    p = with_defaults(params, MODEL)
    return list(model_spec(p["model_type"]).backbones(p))


def resolve_model_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with every MODEL key and a concrete ``input_norm`` (``auto`` -> what the weights want).

    ``training.loop.fit`` saves these into the checkpoint, so a model rebuilt with ``pretrained: false`` scales
    its input as in training. Backbones whose weights want different scalings need ``input_norm`` set by hand.
    """
    p = with_defaults(params, MODEL)
    kind = p["model_type"]
    spec = model_spec(kind)
    p = with_defaults(p, spec.defaults)
    try:
        p["freeze_backbone"] = freeze_choice(p["freeze_backbone"])
    except ValueError as e:
        raise ModelRuleError(str(e)) from None
    if p["freeze_backbone"] and not spec.freezable:
        *rest, last = model_types(freezable=True)
        raise ModelRuleError(f"freeze_backbone works with model_type {', '.join(rest)} or {last}, not {kind!r}")
    wanted = {name: resolve_norm(p["input_norm"], p["pretrained"], name) for name in backbone_names(p)}
    values = list(wanted.values()) or [resolve_norm(p["input_norm"], False, "")]
    if any(v != values[0] for v in values):
        raise ModelRuleError(f"input_norm: auto is ambiguous: the backbones' weights want {wanted}; "
                             "set input_norm to one of them")
    p["input_norm"] = values[0]
    return p


def pretrained_record(params: Mapping[str, Any]) -> dict[str, Any]:
    """Which weights file the model started from and its sha256 (None where there is none or timm downloads it):
    what a run records in its checkpoints and metrics.json."""
    source = with_defaults(params, MODEL)["pretrained"]
    kind = source_kind(source)
    file = resolve_pretrained(source)[1] if kind in ("package", "file") else None
    return {"pretrained_source": None if kind == "none" else str(source), "pretrained_file": file,
            "pretrained_sha256": weights_sha256(file) if file else None}


def model_inputs(model: nn.Module) -> tuple[str, ...]:
    """What the model reads from a batch (``mel``, ``faces``): the features to extract for it."""
    return tuple(getattr(model, "inputs", ("mel",)))


def parameter_count(params: Mapping[str, Any]) -> int:
    """Parameters of the model ``params`` describe, counted without allocating weights (meta device)."""
    p = {**dict(params), "pretrained": False}
    with torch.device("meta"):
        model = create_model(p, check=False)  # the caller flags an oversized model; counting must not refuse it
    return sum(t.numel() for t in model.parameters())
