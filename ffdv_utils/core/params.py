"""Typed parameter groups: the flat parameters (what notebooks, ``params/*.yaml`` and the CLI see) read once into
frozen dataclasses, one per stage -- features, model, training, real-only, inference -- so that a stage receives its
own group and reads attributes, not keys of one dict of every parameter.

``core.schema`` stays the one source of defaults: a group has no defaults of its own; ``of(params)`` fills what
``params`` leaves out from the schema, keeps only the group's keys and converts numbers to the field's type. A test
checks that the groups' fields cover every key of the schema's feature, model, training and inference groups.

Example:
    >>> from ffdv_utils.core.params import TrainingParams
    >>> TrainingParams.of({"lr": "1.0e-3"}).lr
    0.001
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, TypeVar

from .errors import ConfigError
from .schema import FEATURES, INFERENCE, MODEL, TRAINING, with_defaults

G = TypeVar("G", bound="ParamGroup")


class ParamGroup:
    """The reading every group shares (``of``, ``to_flat``)."""

    SOURCE: ClassVar[Mapping[str, Any]] = {}  # the schema group its defaults come from

    @classmethod
    def of(cls: type[G], params: Mapping[str, Any] | G | None) -> G:
        """The group of ``params`` (flat parameters; a group of this type is returned as it is)."""
        if isinstance(params, cls):
            return params
        p = with_defaults(params, cls.SOURCE)
        hints = typing.get_type_hints(cls)
        values = {}
        for f in dataclasses.fields(cls):
            values[f.name] = _convert(f.name, p.get(f.name), hints[f.name])
        return cls(**values)

    def to_flat(self) -> dict[str, Any]:
        """The group's keys and values, as the flat parameters hold them."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _convert(name: str, value: Any, hint: Any) -> Any:
    """``value`` as a field annotated ``int`` / ``float`` (or ``... | None``) wants it; anything else as given."""
    if value is None:
        return None
    args = set(typing.get_args(hint)) - {type(None)} or {hint}
    try:
        if args == {float}:
            return float(value)
        if args == {int} and not isinstance(value, bool):
            return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    return value


@dataclass(frozen=True)
class FeatureParams(ParamGroup):
    """What the feature cache is keyed by (``mel_*`` / ``face_*`` fine-tuning keys stay in the flat parameters)."""

    SOURCE: ClassVar[Mapping[str, Any]] = FEATURES
    mel_preset: str
    image_size: int
    feature_workers: Any
    face_frames: int
    face_size: int
    face_detector: str


@dataclass(frozen=True)
class ModelParams(ParamGroup):
    """What ``models.registry.create_model`` builds."""

    SOURCE: ClassVar[Mapping[str, Any]] = MODEL
    model_type: str
    model: str
    pretrained: Any
    input_norm: Any
    freeze_backbone: Any
    visual_model: str | None
    aggregate: str
    topk: int
    dropout: float
    branch_loss: float
    fusion_head: str
    sync: Any
    sync_dim: int
    modality_dropout: float
    max_params: Any
    marle_stage: int
    marle_regions: int
    marle_dim: int
    marle_hidden: int
    marle_mask: str
    marle_mask_ratio: float
    marle_div_weight: float
    marle_tc_weight: float
    marle_audio: str
    profile_bins: int
    profile_faces: bool


@dataclass(frozen=True)
class TrainingParams(ParamGroup):
    """How ``training.fit`` trains: optimiser and schedule, loss, augmentation, pseudo-fakes, runtime."""

    SOURCE: ClassVar[Mapping[str, Any]] = TRAINING
    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    weight_decay: float
    scheduler: str
    step_size: int
    gamma: float
    warmup_epochs: int
    loss: str
    focal_gamma: float
    pos_weight: float | None
    label_smoothing: float
    augment: str
    mixup_alpha: float | None
    cutmix_alpha: float | None
    mix_prob: float
    av_swap_prob: float
    pseudo_fakes: Any
    pseudo_fakes_off: Any
    pseudo_variants: int
    pseudo_local: float
    select_metric: str
    seed: int
    device: str
    amp: Any
    channels_last: bool
    compile: Any
    deterministic: bool
    num_workers: Any
    drop_last: bool
    find_unused_parameters: bool
    dist_timeout_min: float
    max_train_clips: int | None
    resume: bool
    progress: bool
    split_csv: str | None


@dataclass(frozen=True)
class RealOnlyParams(ParamGroup):
    """The real-only score joined to the network's (``detector.real_only``): its weight and statistics groups."""

    SOURCE: ClassVar[Mapping[str, Any]] = TRAINING
    real_only_weight: float
    real_only_groups: Any


@dataclass(frozen=True)
class ProfilePartParams(ParamGroup):
    """The profile part joined to the network's score (``detector.profile_part``): its weight and audio image."""

    SOURCE: ClassVar[Mapping[str, Any]] = TRAINING
    profile_weight: float
    profile_mel_preset: str


@dataclass(frozen=True)
class InferenceParams(ParamGroup):
    """Scoring: which runs, how they are ensembled, TTA, the fallback score of an unreadable clip, the device."""

    SOURCE: ClassVar[Mapping[str, Any]] = INFERENCE
    runs: Any
    ensemble: str
    tta: int
    fallback_score: float
    device: str


GROUPS: tuple[type[ParamGroup], ...] = (FeatureParams, ModelParams, TrainingParams, RealOnlyParams, ProfilePartParams,
                                         InferenceParams)


@dataclass(frozen=True)
class RunParams:
    """Every group of a run, read once at an entry point (``training.fit``)."""

    features: FeatureParams
    model: ModelParams
    training: TrainingParams
    real_only: RealOnlyParams

    @classmethod
    def of(cls, params: Mapping[str, Any]) -> "RunParams":
        return cls(FeatureParams.of(params), ModelParams.of(params), TrainingParams.of(params),
                   RealOnlyParams.of(params))
