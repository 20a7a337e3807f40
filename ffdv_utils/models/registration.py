"""``register_model``: the decorator that makes a detector class a ``model_type`` (timm's ``register_model``).

A detector is a ``nn.Module`` with a classmethod ``from_params(params)`` (a run's parameters with every
``core.schema.MODEL`` key and the class's own ``defaults`` filled), whose ``forward`` takes a batch dict and returns
``{"logit": (B,), ...}``, and an ``inputs`` tuple naming what it reads (``mel``, ``faces``). The decorator records,
beside the class, what the rest of the package needs to know about it::

    @register_model("audio", backbones=lambda p: [p["model"]], freezable=True)
    class AudioModel(nn.Module):
        ...

``models.registry.create_model`` then builds it from a params file, checks its size, resolves its input scaling from
its backbones' weights and refuses ``freeze_backbone`` where the class does not support it. Nothing else needs
editing: the tests that build, run, save and reload every model find the new one in ``MODELS``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from torch import nn

from .rules import ModelRuleError


def no_backbones(params: Mapping[str, Any]) -> list[str]:
    """For a detector without a timm backbone (its input scaling is then ImageNet's)."""
    return []


@dataclass(frozen=True)
class ModelSpec:
    """A registered detector class and what it needs.

    Attributes:
        name: the ``model_type`` that selects it.
        cls: the class (``from_params(params) -> nn.Module``).
        backbones: params -> the timm names of the backbones it builds (their weights decide ``input_norm: auto``).
        freezable: whether ``freeze_backbone`` applies (its backbones' outputs can come from the embedding cache).
        defaults: its own parameters with their defaults, filled where a params file leaves them out.
    """

    name: str
    cls: type[nn.Module]
    backbones: Callable[[Mapping[str, Any]], list[str]]
    freezable: bool = False
    defaults: Mapping[str, Any] = field(default_factory=dict)


MODELS: dict[str, ModelSpec] = {}

M = TypeVar("M", bound=type[nn.Module])


def register_model(name: str, *, backbones: Callable[[Mapping[str, Any]], list[str]] = no_backbones,
                   freezable: bool = False, defaults: Mapping[str, Any] | None = None) -> Callable[[M], M]:
    """Class decorator: register a detector class as ``model_type: name``.

    Args:
        name: the ``model_type`` value.
        backbones: params -> timm backbone names it builds (default: none).
        freezable: ``freeze_backbone`` is allowed.
        defaults: the class's own parameters and their defaults.

    Returns:
        The decorator; it returns the class unchanged (with ``model_type`` set to ``name``).

    Example:
        >>> @register_model("tiny", defaults={"tiny_width": 8})
        ... class Tiny(nn.Module): ...
    """

    def decorate(cls: M) -> M:
        if name in MODELS and MODELS[name].cls.__qualname__ != cls.__qualname__:
            raise ModelRuleError(f"model_type {name!r} is registered twice ({MODELS[name].cls.__name__}, "
                                 f"{cls.__name__})")
        if not callable(getattr(cls, "from_params", None)):
            raise ModelRuleError(f"{cls.__name__} needs a classmethod from_params(params) to be registered")
        MODELS[name] = ModelSpec(name, cls, backbones, freezable, dict(defaults or {}))
        cls.model_type = name
        return cls

    return decorate


def model_spec(name: str) -> ModelSpec:
    """The registered spec of ``model_type`` ``name`` (``ModelRuleError`` naming the known ones otherwise)."""
    if name not in MODELS:
        raise ModelRuleError(f"unknown model_type {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name]


def model_types(freezable: bool | None = None) -> tuple[str, ...]:
    """Registered ``model_type`` names in registration order (only the freezable ones, or the others, if asked)."""
    return tuple(n for n, s in MODELS.items() if freezable is None or s.freezable == freezable)
