"""The competition's model rules in one place: at most 200M parameters (all of them, trainable or not).
"""

from __future__ import annotations

from typing import Any

from torch import nn

MAX_PARAMS = 200_000_000  # competition rule: at most 200M parameters, one model


class ModelRuleError(ValueError):
    """A model configuration that breaks a competition rule (size, weights source)."""


def count_parameters(model: nn.Module) -> int:
    """All parameters, trainable or not (the rule counts the model, not what is being trained)."""
    return sum(p.numel() for p in model.parameters())


def check_size(model: nn.Module, kind: str = "", name: str = "", max_params: Any = None) -> int:
    """Parameter count of ``model``; ModelRuleError when over 200M (or the smaller ``max_params``)."""
    n = count_parameters(model)
    limit = min(int(max_params), MAX_PARAMS) if max_params not in (None, "") else MAX_PARAMS
    if n > limit:
        why = "the competition's 200M cap" if limit == MAX_PARAMS else f"max_params = {limit:,}"
        raise ModelRuleError(f"{kind} model {name!r} has {n / 1e6:.1f}M parameters ({n:,}), over {why}; "
                             "choose a smaller backbone")
    return n
