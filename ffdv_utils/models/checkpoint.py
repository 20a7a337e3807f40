"""Checkpoints: a run's ``best.pt`` found by run name, folder or file (on Kaggle also by file name under
``/kaggle/input``), and the model rebuilt from the parameters saved in it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..core.device import resolve_device
from ..core.paths import KAGGLE_INPUT, RUN_NAME_RE, find_kaggle_file, is_kaggle, run_dir
from ..core.schema import TRAIN_DEFAULTS
from .registry import build_model, resolve_model_params


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


def _load(ckpt: Path, device: str = "auto") -> tuple[torch.nn.Module, dict, dict]:
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    params = {**TRAIN_DEFAULTS, **saved["params"]}
    if "input_norm" not in saved["params"]:
        params["input_norm"] = "imagenet"  # saved before input_norm existed: every input was ImageNet-scaled
    # the scaling follows the weights the model was trained from (fit saves it concrete; "auto" is resolved from
    # the saved source, which needs no file), then the weights come from the checkpoint
    params = {**resolve_model_params(params), "pretrained": False}
    model = build_model(params)
    model.load_state_dict(saved["model"])
    model.to(resolve_device(device)).eval()
    model.real_only_state = saved.get("real_only")  # the fitted real-only score, if the run has one
    meta = {k: saved.get(k) for k in ("epoch", "metrics", "n_params")}
    return model, params, meta


def load_model(run_or_checkpoint: str | os.PathLike, device: str = "auto") -> tuple[torch.nn.Module, dict]:
    """The trained model (eval mode) and the parameters it was trained with (features are made from these)."""
    model, params, _ = _load(checkpoint_path(run_or_checkpoint), device)
    return model, params
