"""Scores of a trained model over a loader (with test-time augmentation), gathered across DDP ranks.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..core.progress import progress_bar
from ..features.batches import prepare_batch
from .runtime import gather_predictions

# ----------------------------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def predict_loader(model: nn.Module, loader: DataLoader, device: torch.device, amp: torch.dtype | None = None,
                   channels_last: bool = False, tta: int = 1, progress: bool = False,
                   desc: str = "predict") -> tuple[np.ndarray, np.ndarray]:
    """Fake probabilities for every item of ``loader`` -> (indices, scores). ``tta`` > 1 averages in probability
    space over the plain input and its time-reversed / flipped variants."""
    model.eval()
    idx_all, score_all = [], []
    ctx = torch.autocast(device.type, dtype=amp) if amp is not None else nullcontext()
    for batch in progress_bar(loader, desc=desc, unit="batch", disable=not progress, leave=False):
        b = prepare_batch(batch, device, channels_last)
        probs = []
        for k in range(max(1, int(tta))):
            view = dict(b)
            if k % 2 == 1 and "mel" in view:
                view["mel"] = view["mel"].flip(3)
            if k % 2 == 1 and "faces" in view:
                view["faces"] = view["faces"].flip(-1)
            if k >= 2 and "mel" in view:
                view["mel"] = torch.roll(view["mel"], shifts=view["mel"].shape[-1] * k // (2 * tta), dims=3)
            with ctx:
                probs.append(torch.sigmoid(model(view)["logit"].float()))
        score_all.append(torch.stack(probs).mean(0).cpu().numpy())
        idx_all.append(np.asarray(batch["index"]))
    if not idx_all:
        return np.zeros(0, int), np.zeros(0, np.float32)
    return np.concatenate(idx_all), np.concatenate(score_all)


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, amp: torch.dtype | None = None,
             channels_last: bool = False, world: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Scores of a (sharded) validation loader, gathered from every rank and sorted by index."""
    idx, scores = predict_loader(model, loader, device, amp, channels_last)
    return gather_predictions(idx, scores, world)
