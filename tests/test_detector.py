"""The detector object and the model registry: every registered model builds, runs on a tiny batch and comes back
from its checkpoint with the same output; a new model is one decorated class; the checkpoint format is versioned."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from ffdv_utils.core.errors import ConfigError
from ffdv_utils.core.schema import TRAIN_DEFAULTS
from ffdv_utils.detector import Detector, Part, RealOnlyModel, RealOnlyScorer, Scorer, combine, scorers_from_params
from ffdv_utils.models.checkpoint import CHECKPOINT_VERSION, Checkpoint
from ffdv_utils.models.registration import MODELS, register_model
from ffdv_utils.models.registry import create_model, model_inputs, resolve_model_params
from ffdv_utils.models.rules import ModelRuleError

TINY = {"model": "test_resnet", "pretrained": False}


@register_model("tiny_example", defaults={"tiny_width": 4})
class TinyExample(nn.Module):
    """The whole of a new detector: a class, its decorator, its own parameter (``tiny_width``)."""

    inputs = ("mel",)

    def __init__(self, width: int):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.head = nn.Linear(width, 1)

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> "TinyExample":
        return cls(int(p["tiny_width"]))

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict:
        return {"logit": self.head(self.conv(batch["mel"]).mean((2, 3))).squeeze(1)}


def tiny_batch(b: int = 2, t: int = 4, size: int = 32) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"mel": torch.randn(b, 3, size, size, generator=g), "faces": torch.randn(b, t, 3, size, size, generator=g),
            "has_audio": torch.ones(b)}


@pytest.mark.parametrize("model_type", sorted(MODELS))
def test_every_registered_model_builds_runs_saves_and_loads_the_same(model_type: str, tmp_path) -> None:
    torch.manual_seed(0)
    p = resolve_model_params({**TRAIN_DEFAULTS, **TINY, "model_type": model_type})
    model = create_model(p).eval()
    assert type(model).model_type == model_type and model_inputs(model)
    with torch.no_grad():
        before = model(tiny_batch())["logit"]
    assert before.shape == (2,) and torch.isfinite(before).all()
    path = tmp_path / "best.pt"
    Detector(model, p).save(path, Checkpoint(network={}, params=p, epoch=1, n_params=3))
    again = Detector.load(path, device="cpu")
    assert type(again.network) is type(model) and again.parts == [] and again.checkpoint.epoch == 1
    with torch.no_grad():
        assert torch.equal(again.network(tiny_batch())["logit"], before)


def test_a_new_model_needs_only_its_class_and_decorator() -> None:
    assert "tiny_example" in MODELS and MODELS["tiny_example"].cls is TinyExample
    model = create_model({**TRAIN_DEFAULTS, "model_type": "tiny_example"})  # its own default filled in
    assert model.conv.out_channels == 4
    assert create_model({**TRAIN_DEFAULTS, "model_type": "tiny_example", "tiny_width": 6}).conv.out_channels == 6
    with pytest.raises(ModelRuleError, match="freeze_backbone works with model_type audio, visual or fusion"):
        create_model({**TRAIN_DEFAULTS, "model_type": "tiny_example", "freeze_backbone": True})
    with pytest.raises(ModelRuleError, match="unknown model_type 'nope'.*tiny_example"):
        create_model({**TRAIN_DEFAULTS, "model_type": "nope"})


def test_registering_a_second_class_under_a_taken_name_is_refused() -> None:
    with pytest.raises(ModelRuleError, match="registered twice"):
        @register_model("audio")
        class Other(TinyExample):
            pass


def _stats_table(n: int = 30, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    columns = RealOnlyModel().columns
    table = pd.DataFrame(rng.normal(0, 1, (n, len(columns))), columns=columns)
    table.insert(0, "video_name", [f"c{i}" for i in range(n)])
    table["target"] = 0
    return table


class _FixedScorer(Scorer):
    """A scorer whose score is a column of the clips table: the join's arithmetic without features."""

    def __init__(self, column: str = "s"):
        self.column = column

    @classmethod
    def from_params(cls, params):
        return cls()

    def fit(self, params, clips, progress=False):
        return {}

    def score(self, params, clips):
        return clips[self.column].to_numpy(float)

    def state(self):
        return {"column": self.column}

    @classmethod
    def from_state(cls, state):
        return cls(state["column"])


def test_the_join_weights_each_part_and_gives_the_network_the_rest() -> None:
    clips = pd.DataFrame({"video_name": ["a", "b", "c"], "s": [0.0, 0.5, 1.0]})
    net = np.array([0.2, 0.4, 0.6])
    one = Detector(nn.Identity(), {}, [Part(_FixedScorer(), 0.25)])
    found = one.part_scores(clips)
    assert np.allclose(one.join(net, found), combine(net, clips.s, 0.25))  # the real-only join of earlier runs
    two = Detector(nn.Identity(), {}, [Part(_FixedScorer(), 0.25), Part(_FixedScorer(), 0.5)])
    assert np.allclose(two.join(net, {"": clips.s.to_numpy()}), 0.25 * net + 0.75 * clips.s)
    assert np.allclose(Detector(nn.Identity(), {}).join(net, {}), net)


def test_parts_come_from_the_weight_parameters_and_bad_weights_fail_early() -> None:
    assert scorers_from_params({**TRAIN_DEFAULTS, "real_only_weight": 0.0}) == []
    parts = scorers_from_params({**TRAIN_DEFAULTS, "real_only_weight": 0.3})
    assert [(p.kind, p.weight) for p in parts] == [("real_only", 0.3)]
    assert isinstance(parts[0].scorer, RealOnlyScorer)
    with pytest.raises(ConfigError, match=r"real_only_weight must be in \[0, 1\]"):
        scorers_from_params({**TRAIN_DEFAULTS, "real_only_weight": 1.5})


def test_a_detector_with_a_fitted_part_round_trips_through_its_checkpoint(tmp_path) -> None:
    torch.manual_seed(0)
    p = resolve_model_params({**TRAIN_DEFAULTS, **TINY, "model_type": "audio", "real_only_weight": 0.4})
    scorer = RealOnlyScorer(RealOnlyModel().fit(_stats_table()))
    det = Detector(create_model(p), p, [Part(scorer, 0.4)])
    path = tmp_path / "best.pt"
    det.save(path, Checkpoint(network={}, params=p, epoch=3, metrics={"auc": 0.7}))
    saved = torch.load(path, map_location="cpu", weights_only=False)
    assert saved["format"] == "ffdv-detector" and saved["version"] == CHECKPOINT_VERSION
    again = Detector.load(path, device="cpu")
    assert again.weights == {"real_only": 0.4} and again.checkpoint.metrics == {"auc": 0.7}
    table = _stats_table(seed=1)
    assert np.allclose(again.parts[0].scorer.model.score(table), scorer.model.score(table))


def test_version_1_checkpoints_are_read_and_newer_ones_refused(tmp_path) -> None:
    p = resolve_model_params({**TRAIN_DEFAULTS, **TINY, "model_type": "audio"})
    model = create_model(p)
    state = RealOnlyModel().fit(_stats_table()).state()
    old = {"model": model.state_dict(), "params": p, "epoch": 2, "metrics": {}, "n_params": 5,
           "real_only": {**state, "weight": 0.2}}
    ckpt = Checkpoint.from_dict(old)
    assert ckpt.epoch == 2 and ckpt.parts[0]["kind"] == "real_only" and ckpt.parts[0]["weight"] == 0.2
    assert Detector.from_checkpoint(ckpt, device="cpu").weights == {"real_only": 0.2}
    with pytest.raises(ModelRuleError, match="newer"):
        Checkpoint.from_dict({**old, "format": "ffdv-detector", "version": CHECKPOINT_VERSION + 1})
    with pytest.raises(ModelRuleError, match="not a detector checkpoint"):
        Checkpoint.from_dict({**old, "format": "something-else"})
