"""Notebook 04: what each augmentation preset does to a batch, and one short training run per variant.

The transforms themselves are ``training.augment`` (training applies them); this module shows and compares them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import pandas as pd
import torch

from ..core.plots import image_grid
from ..data.labels import load_split
from ..features.batches import prepare_batch
from ..features.clips import clip_features
from ..training.augment import augment_mel
from .candidates import leaderboard_frame, run_in_process


def example_batch(params: Mapping, n: int = 4) -> dict:
    """``n`` training mel images (normalised, as the model gets them) for showing what augmentation does."""
    train = load_split(params["data_root"], "train").head(max(1, n))
    feats = clip_features(params, train, ("mel",), progress=False)
    mel = torch.from_numpy(feats["mels"][: len(train)].copy())[:, None]
    return prepare_batch({"mel": mel, "target": torch.tensor(train.target.to_numpy(), dtype=torch.float32)})


def augment_examples(batch: Mapping, presets: Sequence[str], path: str | Path | None = None) -> plt.Figure:
    """The same mel images through each augmentation preset (one row per preset)."""
    import torch


    torch.manual_seed(0)
    mel = batch["mel"]
    images, titles = [], []
    for preset in presets:
        out = augment_mel(mel.clone(), preset, p=1.0 if preset != "none" else 0.5)
        for i in range(out.shape[0]):
            images.append(out[i, 0].numpy())
            titles.append(preset if i == 0 else "")
    return image_grid(images, titles, cols=mel.shape[0], path=path)


def run_variants(base: Mapping[str, Any], variants: Sequence[Mapping[str, Any]], progress: bool = False) -> pd.DataFrame:
    """Train ``base`` + each variant's overrides in this process (``outputs/<run>-<variant>``): the leaderboard."""
    return leaderboard_frame(run_in_process(base, variants, progress=progress))
