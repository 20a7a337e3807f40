"""Typed parameter groups (``core.params``): they cover the schema, take their defaults from it, and are frozen."""

from __future__ import annotations

import dataclasses

import pytest

from ffdv_utils.core import schema
from ffdv_utils.core.errors import ConfigError
from ffdv_utils.core.params import GROUPS, InferenceParams, RealOnlyParams, RunParams, TrainingParams


@pytest.mark.parametrize("source", ["FEATURES", "MODEL", "TRAINING", "INFERENCE"])
def test_the_groups_cover_every_stage_key_of_the_schema_once(source):
    """The groups read from one schema group split its keys between them: each key in exactly one."""
    fields = [f.name for g in GROUPS if g.SOURCE is getattr(schema, source) for f in dataclasses.fields(g)]
    assert len(fields) == len(set(fields)), "a key in two groups"
    wanted = set(getattr(schema, source))
    assert set(fields) == wanted, f"missing from core/params.py: {sorted(wanted - set(fields))}; " \
                                  f"not in schema.{source}: {sorted(set(fields) - wanted)}"


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.__name__)
def test_defaults_come_from_the_schema_and_groups_are_frozen(group):
    g = group.of({})
    assert g.to_flat() == {k: v for k, v in group.SOURCE.items() if k in g.to_flat()}
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(g, dataclasses.fields(g)[0].name, None)


def test_values_are_read_once_and_converted():
    t = TrainingParams.of({"lr": "1.0e-3", "epochs": "3", "pos_weight": None})
    assert t.lr == 0.001 and t.epochs == 3 and t.pos_weight is None
    assert TrainingParams.of(t) is t  # a group passes through
    assert InferenceParams.of({"fallback_score": 1}).fallback_score == 1.0
    with pytest.raises(ConfigError, match="lr must be a number"):
        TrainingParams.of({"lr": "fast"})
    run = RunParams.of({**schema.TRAIN_DEFAULTS, "real_only_weight": 0.5, "model_type": "fusion"})
    assert run.real_only == RealOnlyParams(0.5, schema.TRAINING["real_only_groups"])
    assert run.model.model_type == "fusion" and run.features.image_size == schema.FEATURES["image_size"]
