"""Checkpoints: the one format of a run's ``best.pt`` (``Checkpoint``: versioned, typed), found by run name, folder
or file (on Kaggle also by file name under ``/kaggle/input``), and the network rebuilt from the parameters saved in
it. The whole detector (the network and the scores joined to it) is rebuilt by ``detector.Detector.load``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from ..core.device import resolve_device
from ..core.files import atomic_path
from ..core.paths import KAGGLE_INPUT, RUN_NAME_RE, find_kaggle_file, is_kaggle, run_dir
from ..core.schema import TRAIN_DEFAULTS
from .registry import build_model, resolve_model_params
from .rules import ModelRuleError

CHECKPOINT_FORMAT = "ffdv-detector"
# 1: network weights and parameters, the real-only score under "real_only"; 2: "format", "version" and the scores
# joined to the network as a list of parts ({"kind", "weight", "state"})
CHECKPOINT_VERSION = 2
PRETRAINED_KEYS = ("pretrained_source", "pretrained_file", "pretrained_sha256")


@dataclass(frozen=True)
class Checkpoint:
    """What ``best.pt`` holds.

    Attributes:
        network: the network's state dict (saved under ``model``).
        params: the resolved parameters it was trained with (``input_norm`` concrete).
        parts: the scores joined to the network, each ``{"kind", "weight", "state"}`` (``detector.scorers``).
        epoch: the epoch (1-based) whose weights these are.
        metrics: that epoch's validation metrics.
        n_params: the network's parameter count.
        pretrained: where its initial weights came from (``models.registry.pretrained_record``).
    """

    network: Mapping[str, torch.Tensor]
    params: Mapping[str, Any]
    parts: tuple[Mapping[str, Any], ...] = ()
    epoch: int | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    n_params: int | None = None
    pretrained: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The dict ``torch.save`` writes (flat: ``model``, ``params``, ``epoch``... read by older tools too)."""
        return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model": dict(self.network),
                "params": dict(self.params), "parts": [dict(x) for x in self.parts], "epoch": self.epoch,
                "metrics": dict(self.metrics), "n_params": self.n_params,
                **{k: self.pretrained.get(k) for k in PRETRAINED_KEYS}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Checkpoint":
        """Read any version up to ``CHECKPOINT_VERSION`` (version 1 had no ``version`` key)."""
        if d.get("format", CHECKPOINT_FORMAT) != CHECKPOINT_FORMAT:
            raise ModelRuleError(f"not a detector checkpoint (format {d.get('format')!r})")
        version = int(d.get("version", 1))
        if version > CHECKPOINT_VERSION:
            raise ModelRuleError(f"checkpoint version {version} is newer than this package reads "
                                 f"({CHECKPOINT_VERSION}); update ffdv_utils")
        if version == 1:
            old = d.get("real_only")
            parts = ({"kind": "real_only", "weight": float(old["weight"]),
                      "state": {k: v for k, v in old.items() if k != "weight"}},) if old else ()
        else:
            parts = tuple(d.get("parts") or ())
        return cls(network=d["model"], params=dict(d["params"]), parts=parts, epoch=d.get("epoch"),
                   metrics=dict(d.get("metrics") or {}), n_params=d.get("n_params"),
                   pretrained={k: d.get(k) for k in PRETRAINED_KEYS})

    @classmethod
    def read(cls, path: str | os.PathLike) -> "Checkpoint":
        return cls.from_dict(torch.load(path, map_location="cpu", weights_only=False))

    def write(self, path: Path) -> None:
        """``torch.save`` through ``core.files.atomic_path``: a kill never leaves a torn checkpoint."""
        with atomic_path(path) as tmp:
            torch.save(self.to_dict(), tmp)

def checkpoint_path(run_or_checkpoint: str | os.PathLike) -> Path:
    """``best.pt`` of a run (name or folder) or a checkpoint file as given.

    On Kaggle a checkpoint that is not where it was named is looked up by file name under ``/kaggle/input``
    (``kaggle stage`` ships a run's weights as ``<run>-best.pt`` in the attached dataset).
    """
    text = str(run_or_checkpoint)
    p = Path(text).expanduser()
    if p.suffix == ".pt":
        if p.is_file():
            return p.resolve()
        hit = find_kaggle_file(p.name)
        if hit is not None:
            return hit
        raise FileNotFoundError(f"checkpoint {text} not found"
                                + (f" (nor a file of that name under {KAGGLE_INPUT})" if is_kaggle()
                                   else ""))
    if RUN_NAME_RE.match(text) and run_dir(text, create=False).is_dir():
        folder = run_dir(text, create=False)
    elif p.is_dir():
        folder = p
    elif RUN_NAME_RE.match(text):
        folder = run_dir(text, create=False)
    else:
        raise FileNotFoundError(f"{text!r} is neither a checkpoint (.pt) file, a run folder nor a run name")
    ckpt = folder / "checkpoints" / "best.pt"
    if ckpt.is_file():
        return ckpt.resolve()
    hit = find_kaggle_file(f"{folder.name}-best.pt")
    if hit is not None:
        return hit
    raise FileNotFoundError(f"no checkpoint for {text!r}: {ckpt} does not exist; train the run first"
                            + (f" or attach {folder.name}-best.pt as a dataset" if is_kaggle() else ""))


def network_params(saved: Checkpoint) -> dict[str, Any]:
    """The parameters a checkpoint's network is rebuilt from: the saved ones over the defaults, ``pretrained: false``
    (the weights come from the checkpoint) and the input scaling the weights were trained with."""
    params = {**TRAIN_DEFAULTS, **saved.params}
    if "input_norm" not in saved.params:
        params["input_norm"] = "imagenet"  # saved before input_norm existed: every input was ImageNet-scaled
    # fit saves input_norm concrete; "auto" is resolved from the saved source, which needs no file
    return {**resolve_model_params(params), "pretrained": False}


def load_network(saved: Checkpoint, device: str = "auto") -> tuple[torch.nn.Module, dict]:
    """The checkpoint's network (eval mode, on ``device``) and the parameters it was rebuilt from."""
    params = network_params(saved)
    model = build_model(params)
    model.load_state_dict(saved.network)
    model.to(resolve_device(device)).eval()
    return model, params


def load_model(run_or_checkpoint: str | os.PathLike, device: str = "auto") -> tuple[torch.nn.Module, dict]:
    """The trained network alone (eval mode) and the parameters it was trained with (features are made from these);
    ``detector.load_detector`` gives the run's whole score."""
    return load_network(Checkpoint.read(checkpoint_path(run_or_checkpoint)), device)
