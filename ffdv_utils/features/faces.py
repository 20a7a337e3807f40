"""Face crops: the largest frontal face per frame (OpenCV's bundled Haar cascade), carried to frames without one,
square crops with a margin, and a centre crop when a clip has no detection at all.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import cv2
import numpy as np

from .params import face_params

# ---------------------------------------------------------------------------------------------------------------
# face crops

_CASCADE: Any = None


def _cascade() -> Any:
    global _CASCADE
    if _CASCADE is None:
        _CASCADE = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml"))
        if _CASCADE.empty():
            raise RuntimeError("OpenCV's bundled Haar cascade could not be loaded")
    return _CASCADE


def _detect(frame: np.ndarray, fp: Mapping[str, Any]) -> tuple[float, float, float, float] | None:
    """Largest frontal face as (x, y, w, h) in frame pixels, or None."""
    h, w = frame.shape[:2]
    scale = min(1.0, fp["detect_width"] / w) if fp["detect_width"] else 1.0
    small = cv2.resize(frame, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
    grey = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
    side = max(12, int(fp["min_face"] * min(grey.shape)))
    boxes = _cascade().detectMultiScale(grey, scaleFactor=1.2, minNeighbors=4, minSize=(side, side))
    if len(boxes) == 0:
        return None
    x, y, bw, bh = max(boxes, key=lambda b: b[2] * b[3])
    return x / scale, y / scale, bw / scale, bh / scale


def _square_crop(frame: np.ndarray, cx: float, cy: float, side: float, out: int) -> np.ndarray:
    """Square crop centred at (cx, cy), shifted inside the frame where it fits, black-padded where it does not."""
    h, w = frame.shape[:2]
    side = max(2, int(round(side)))
    x0 = int(round(cx - side / 2))
    y0 = int(round(cy - side / 2))
    if side <= w:
        x0 = min(max(0, x0), w - side)
    if side <= h:
        y0 = min(max(0, y0), h - side)
    pad = max(0, -x0, -y0, x0 + side - w, y0 + side - h)
    if pad:
        frame = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        x0, y0 = x0 + pad, y0 + pad
    crop = frame[y0:y0 + side, x0:x0 + side]
    interp = cv2.INTER_AREA if side > out else cv2.INTER_LINEAR
    return cv2.resize(crop, (out, out), interpolation=interp)


def face_crops(frames: np.ndarray, fp: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Crops faces from RGB frames.

    Each frame gets the largest Haar detection (``detector="haar"``); a frame without one borrows the box of the
    nearest frame that has one (flag stays False); a clip without any detection (or ``detector="center"``) gets a
    centre crop of ``center_scale`` times the shorter side.

    Args:
        frames: uint8 (T, H, W, 3) RGB.
        fp: Face parameters.

    Returns:
        (crops uint8 (T, size, size, 3), found bool (T,)).
    """
    fp = face_params(fp)
    t, h, w = frames.shape[:3]
    boxes = [_detect(f, fp) for f in frames] if fp["detector"] == "haar" else [None] * t
    found = np.array([b is not None for b in boxes], bool)
    hits = np.flatnonzero(found)
    crops = np.empty((t, fp["size"], fp["size"], 3), np.uint8)
    for i, frame in enumerate(frames):
        if hits.size:
            x, y, bw, bh = boxes[int(hits[np.argmin(np.abs(hits - i))])]
            side = max(bw, bh) * (1 + 2 * fp["margin"])
            crops[i] = _square_crop(frame, x + bw / 2, y + bh / 2, side, fp["size"])
        else:
            crops[i] = _square_crop(frame, w / 2, h / 2, fp["center_scale"] * min(h, w), fp["size"])
    return crops, found
