"""Explanations: Grad-CAM heat maps on the mel image and on face crops, for a few real and fake clips.

Grad-CAM weighs a convolutional layer's feature maps A_c by the spatially averaged gradient of the score with
respect to them, sums over channels and keeps the positive part: where the layer saw evidence for the score.
The layer is the backbone's last feature map (``model.cam_layers()``: the mel backbone for ``mel``, the face
backbone for ``faces``). The score is the logit signed towards the predicted class, so a map shows what made
the model say "fake" for a clip it calls fake and "real" for one it calls real.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..core.plots import save_figure
from ..data.kinds import attach_kinds, read_kinds
from ..data.labels import load_split
from ..data.splits import read_split
from ..features.batches import ClipDataset, prepare_batch
from ..features.clips import clip_features
from ..models.checkpoint import load_model
from ..models.registry import model_inputs


def grad_cam(model: nn.Module, batch: Mapping[str, torch.Tensor], inputs: Sequence[str] | None = None,
             sign: str = "predicted") -> dict[str, Any]:
    """Grad-CAM maps for every input the model has a CAM layer for.

    Args:
        model: a workspace model with ``cam_layers()``.
        batch: a prepared batch (``prepare_batch``).
        inputs: which of ``mel`` / ``faces`` to explain (default: all the model offers).
        sign: ``predicted`` (evidence for the predicted class), ``fake`` or ``real``.

    Returns:
        ``logit`` (B,) numpy and per input ``<input>`` maps in [0, 1] at input resolution -- mel (B, H, W),
        faces (B, T, S, S) -- plus ``<input>_strength`` (the maps' maxima before normalisation, for picking
        the most telling frame).
    """
    layers = model.cam_layers()
    wanted = [k for k in (inputs or layers) if k in layers and k in batch]
    store: dict[str, dict[str, torch.Tensor]] = {k: {} for k in wanted}
    handles = []

    def make_hook(key: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            out = output[-1] if isinstance(output, (list, tuple)) else output
            store[key]["act"] = out
            out.register_hook(lambda g: store[key].__setitem__("grad", g))
        return hook

    for key in wanted:
        handles.append(layers[key].register_forward_hook(make_hook(key)))
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            # inputs that need gradients: a frozen backbone's weights have none, so its maps would have no graph
            feed = {k: v.detach().float().requires_grad_(True) if k in wanted else v for k, v in batch.items()}
            logit = model(feed)["logit"].float()
            if sign == "predicted":
                direction = torch.where(logit >= 0, 1.0, -1.0)
            elif sign in ("fake", "real"):
                direction = torch.full_like(logit, 1.0 if sign == "fake" else -1.0)
            else:
                raise ValueError(f"sign must be predicted, fake or real, not {sign!r}")
            model.zero_grad(set_to_none=True)
            (logit * direction.detach()).sum().backward()
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    result: dict[str, Any] = {"logit": logit.detach().cpu().numpy()}
    for key in wanted:
        act, grad = store[key].get("act"), store[key].get("grad")
        if act is None or grad is None:
            continue
        weights = grad.mean((2, 3), keepdim=True)
        cam = F.relu((weights * act).sum(1, keepdim=True)).detach()
        size = batch[key].shape[-2:]
        cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0]
        strength = cam.flatten(1).amax(1)
        cam = cam / strength.clamp(min=1e-12).view(-1, 1, 1)
        if key == "faces":
            b, t = batch["faces"].shape[:2]
            cam, strength = cam.view(b, t, *size), strength.view(b, t)
        result[key] = cam.cpu().numpy()
        result[f"{key}_strength"] = strength.cpu().numpy()
    return result


def _eval_clips(params: Mapping[str, Any]) -> pd.DataFrame:
    """The clips a run was validated on: its split file's eval part, else the val split."""
    if params.get("split_csv"):

        return read_split(params["split_csv"], params.get("data_root"))[1]
    return load_split(params.get("data_root"), "val")


def pick_clips(clips: pd.DataFrame, n_per_class: int = 2, kinds_csv: Any = None, seed: int = 0) -> pd.DataFrame:
    """``n_per_class`` real clips and fakes -- one per manipulation kind first, when kinds are known."""
    clips = attach_kinds(clips, read_kinds(kinds_csv) if kinds_csv else None)
    rng = np.random.default_rng(seed)
    real = clips[clips.target < 0.5]
    real = real.iloc[rng.permutation(len(real))[:n_per_class]]
    fakes = clips[clips.target >= 0.5]
    fakes = fakes.iloc[rng.permutation(len(fakes))]
    # one of each kind first, then fill up: a kind-balanced handful shows more than n clips of one kind
    ordered = pd.concat([fakes.drop_duplicates("kind"), fakes]).drop_duplicates("video_name")
    n_fake = max(n_per_class, fakes.kind.nunique() if kinds_csv else 0)
    return pd.concat([ordered.head(n_fake), real]).reset_index(drop=True)


def explain_run(run_or_checkpoint: str | os.PathLike, n_per_class: int = 2, kinds_csv: Any = None,
                clips: pd.DataFrame | None = None, device: str = "cpu", seed: int = 0) -> list[dict]:
    """Grad-CAM of a trained run on a few of its validation clips (real and fake).

    Returns:
        One dict per clip: video_name, target, kind, score, and where the model has them ``mel`` (uint8 H x W),
        ``mel_cam``, ``face`` (uint8 S x S x 3, the frame with the strongest evidence), ``face_cam``, ``frame``.
    """
    model, params = load_model(run_or_checkpoint, device)
    chosen = pick_clips(clips if clips is not None else _eval_clips(params), n_per_class, kinds_csv, seed)
    if chosen.empty:
        return []
    inputs = model_inputs(model)
    feats = clip_features(params, chosen, inputs, progress=False)
    ds = ClipDataset(chosen.video_name, chosen.target, mels=feats.get("mels"), has_audio=feats.get("has_audio"),
                     faces=feats.get("faces"))
    raw = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
    cams = grad_cam(model, prepare_batch(raw, device))
    items = []
    for i, row in enumerate(chosen.itertuples()):
        item = {"video_name": row.video_name, "target": int(row.target), "kind": row.kind,
                "score": float(1 / (1 + np.exp(-cams["logit"][i])))}
        if "mel" in cams:
            item["mel"] = raw["mel"][i, 0].numpy()
            item["mel_cam"] = cams["mel"][i]
        if "faces" in cams:
            t = int(np.argmax(cams["faces_strength"][i]))
            item["frame"] = t
            item["face"] = raw["faces"][i, t].permute(1, 2, 0).numpy()
            item["face_cam"] = cams["faces"][i, t]
        items.append(item)
    return items


def plot_explanations(items: Sequence[Mapping[str, Any]], path: str | os.PathLike | None = None,
                      alpha: float = 0.45) -> Any:
    """One row per clip: mel image, its Grad-CAM overlay, face crop, its overlay (columns the model has)."""
    import matplotlib.pyplot as plt

    cols = []
    if any("mel" in it for it in items):
        cols += ["mel", "mel_cam"]
    if any("face" in it for it in items):
        cols += ["face", "face_cam"]
    n = max(1, len(items))
    fig, axes = plt.subplots(n, max(1, len(cols)), figsize=(2.4 * max(1, len(cols)), 2.3 * n), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for r, it in enumerate(items):
        label = f"{'fake' if it['target'] else 'real'}" + (f" ({it['kind']})" if it.get("kind") not in
                                                          (None, "real", "fake") else "")
        for c, col in enumerate(cols):
            ax = axes[r, c]
            if col == "mel" and "mel" in it:
                ax.imshow(it["mel"], cmap="magma", origin="lower", aspect="auto")
                ax.set_title(f"{label} · network p(fake) {it['score']:.2f}", fontsize=8)
            elif col == "mel_cam" and "mel_cam" in it:
                ax.imshow(it["mel"], cmap="gray", origin="lower", aspect="auto")
                ax.imshow(it["mel_cam"], cmap="jet", alpha=alpha, origin="lower", aspect="auto", vmin=0, vmax=1)
                ax.set_title("Grad-CAM (mel)", fontsize=8)
            elif col == "face" and "face" in it:
                ax.imshow(it["face"])
                ax.set_title(f"{it['video_name'][:12]} · frame {it['frame']}", fontsize=8)
            elif col == "face_cam" and "face_cam" in it:
                ax.imshow(it["face"])
                ax.imshow(it["face_cam"], cmap="jet", alpha=alpha, vmin=0, vmax=1)
                ax.set_title("Grad-CAM (face)", fontsize=8)
    fig.suptitle("p(fake): the network's own score for the clip (before any real-only join)", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
