"""Notebook 01's picture of real and fake clips: each clip's middle frame beside its mel image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..core.plots import LABEL_NAMES, image_grid
from ..media.decode import MediaError, load_audio, load_frames
from .mel import mel_image


def clip_examples(examples: pd.DataFrame, mel_params: Mapping, path: str | Path | None = None) -> plt.Figure:
    """For each clip: its middle frame and its mel image (as the ``mel_params`` compute it), real vs fake titled."""
    images, titles = [], []
    for row in examples.itertuples():
        label = LABEL_NAMES.get(int(row.target), "?")
        try:
            frame = load_frames(row.path, 1)[0]
        except MediaError:
            frame = np.zeros((64, 64, 3), np.uint8)
        try:
            mel = mel_image(load_audio(row.path, int(mel_params["sr"])), mel_params)
        except MediaError:
            mel = np.zeros((8, 8), np.uint8)
        images += [frame, mel]
        titles += [f"{label} · {row.video_name[:10]}", f"{label} · mel"]
    return image_grid(images, titles, cols=4, path=path)
