"""Face crops: the largest face per frame, carried to frames without one, and a centre crop when a clip has no
detection at all.

``haar`` (OpenCV's bundled frontal-face cascade): square crops of the box with a margin. ``mtcnn`` (facenet-pytorch's
MTCNN, imported only for it): full detection on a few frames, its last stage tracking the face on every frame, crops
aligned on the eyes, a mouth crop and the 5 landmarks per frame (:func:`face_entry`).
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
    centre crop of ``center_scale`` times the shorter side. ``detector="mtcnn"``: the eye-aligned crops of
    :func:`face_entry` (which also gives the mouth crops and landmarks).

    Args:
        frames: uint8 (T, H, W, 3) RGB.
        fp: Face parameters.

    Returns:
        (crops uint8 (T, size, size, 3), found bool (T,)).
    """
    fp = face_params(fp)
    if fp["detector"] == "mtcnn":
        entry = face_entry(frames, fp)
        return entry["faces"], entry["found"]
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


# ---------------------------------------------------------------------------------------------------------------
# MTCNN: detection on a few frames, ONet tracking on every frame, eye-aligned faces and mouth crops

# Where an aligned face puts the eyes: the "face square" (what the margin is added to) is the square in which the
# eyes lie EYE_SPAN of its side apart, centred horizontally, EYE_Y of its side below its top edge; it matches the
# framing of a Haar box (about 0.45 eye distances per box side, eyes at 0.36-0.40 of its height).
EYE_SPAN = 0.46
EYE_Y = 0.36
# The rest of the mean face, in eye distances from the eye midpoint (x right, y down): nose, mouth corners. Only
# used where a clip has no detection at all (template landmarks of the centre crop).
_MEAN_FACE = np.array([[-0.5, 0.0], [0.5, 0.0], [0.0, 0.57], [-0.41, 1.15], [0.41, 1.15]], np.float32)

_MTCNN: dict[str, Any] = {}


def load_mtcnn(device: str = "cpu") -> Any:
    """The process's MTCNN for ``device`` ("cpu", or "cuda" where CUDA is available), built once.

    Its weights (pnet.pt, rnet.pt, onet.pt) ship inside the facenet-pytorch wheel; nothing is downloaded.
    """
    if device not in _MTCNN:
        # Lazy on purpose: facenet_pytorch imports torch and torchvision (seconds, and about 0.5 GB per process), which
        # haar / center workers must not pay (tests/test_import_layers.py checks extract does not import torch).
        import torch
        from facenet_pytorch import MTCNN

        dev = torch.device("cuda" if device == "cuda" and torch.cuda.is_available() else "cpu")
        _MTCNN[device] = MTCNN(select_largest=True, keep_all=True, device=dev).eval()
    return _MTCNN[device]


def _key_frames(t: int, k: int) -> list[int]:
    """Indices of the ``k`` evenly spaced frames (first and last included) that get a full detection."""
    if k <= 0 or k >= t:
        return list(range(t))
    return sorted({int(round(x)) for x in np.linspace(0, t - 1, k)})


def _detect_mtcnn(model: Any, frames: np.ndarray, idx: list[int], fp: Mapping[str, Any]) -> dict[int, np.ndarray]:
    """Full MTCNN on frames ``idx`` (one batch, at ``detect_width``): {index: (cx, cy, side)} of the largest face."""
    if not idx:
        return {}
    h, w = frames.shape[1:3]
    scale = min(1.0, fp["detect_width"] / w) if fp["detect_width"] else 1.0
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    small = np.stack([cv2.resize(frames[i], size, interpolation=cv2.INTER_AREA) for i in idx])
    model.min_face_size = max(12, int(fp["min_face"] * min(size)))
    boxes, _, _ = model.detect(small, landmarks=True)
    out = {}
    for i, b in zip(idx, boxes):
        if b is None or len(b) == 0:
            continue
        x1, y1, x2, y2 = (float(v) / scale for v in b[0])  # sorted largest first
        out[i] = np.array([(x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1)], np.float64)
    return out


def _interpolate_boxes(seeds: Mapping[int, np.ndarray], t: int) -> np.ndarray:
    """(T, 3) boxes (cx, cy, side): linear between detections, the nearest one carried beyond the first and last."""
    keys = np.array(sorted(seeds))
    vals = np.stack([seeds[k] for k in keys])
    return np.stack([np.interp(np.arange(t), keys, vals[:, j]) for j in range(3)], axis=1)


def _similarity(scale: np.ndarray, angle: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(T, 2, 3) affine maps that scale by ``scale``, rotate by -``angle`` and move ``src`` (T, 2) to ``dst``."""
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    rot = np.stack([np.stack([c, s], -1), np.stack([-s, c], -1)], -2)  # (T, 2, 2)
    shift = dst - np.einsum("tij,tj->ti", rot, src)
    return np.concatenate([rot, shift[..., None]], axis=-1)


def _apply(maps: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Points (T, K, 2) through per-frame affine maps (T, 2, 3)."""
    return np.einsum("tij,tkj->tki", maps[..., :2], pts) + maps[:, None, :, 2]


def _warp(frame: np.ndarray, amap: np.ndarray, out: int) -> np.ndarray:
    """``out`` x ``out`` crop through the affine ``amap`` (frame -> crop), black outside the frame.

    A strong reduction first shrinks the source region with INTER_AREA (warpAffine's linear interpolation would
    alias), so the warp itself never scales by less than 1.
    """
    k = float(np.sqrt(abs(np.linalg.det(amap[:, :2]))))
    if k < 0.9:
        inv = cv2.invertAffineTransform(amap)
        corners = inv[:, :2] @ np.array([[-1, out, -1, out], [-1, -1, out, out]], float) + inv[:, 2:]
        h, w = frame.shape[:2]
        x0, y0 = (max(0, int(np.floor(v)) - 1) for v in corners.min(axis=1))
        x1, y1 = min(w, int(np.ceil(corners[0].max())) + 2), min(h, int(np.ceil(corners[1].max())) + 2)
        if x1 - x0 > 1 and y1 - y0 > 1:
            roi = frame[y0:y1, x0:x1]
            sw, sh = max(1, int(round((x1 - x0) * k))), max(1, int(round((y1 - y0) * k)))
            frame = cv2.resize(roi, (sw, sh), interpolation=cv2.INTER_AREA)
            fx, fy = sw / (x1 - x0), sh / (y1 - y0)
            # small pixel p <-> frame pixel (p + 0.5) / f - 0.5 + origin (pixel centres, as cv2.resize maps them)
            back = np.array([[1 / fx, 0, x0 + 0.5 / fx - 0.5], [0, 1 / fy, y0 + 0.5 / fy - 0.5], [0, 0, 1]])
            amap = amap @ back
    return cv2.warpAffine(frame, amap.astype(np.float64), (out, out), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def _onet(model: Any, frames: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MTCNN's last stage on one square box per frame: (face probability (T,), 5 landmarks (T, 5, 2), refined box).

    This is the tracker: it checks and locates the face in frames that had no full detection, for about 2 ms a frame.
    """
    import torch  # already imported by load_mtcnn; only MTCNN runs reach here

    side = boxes[:, 2]
    x0, y0 = boxes[:, 0] - side / 2, boxes[:, 1] - side / 2
    maps = _similarity(48 / side, np.zeros_like(side), np.stack([x0, y0], 1), np.full((len(side), 2), -0.5))
    crops = np.stack([_warp(f, m, 48) for f, m in zip(frames, maps)])
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float().sub_(127.5).mul_(0.0078125).to(model.device)
    with torch.inference_mode():
        reg, marks, prob = (o.float().cpu().numpy() for o in model.onet(x))
    pts = np.stack([x0[:, None] + marks[:, :5] * side[:, None], y0[:, None] + marks[:, 5:] * side[:, None]], -1)
    bx1, by1 = x0 + reg[:, 0] * side, y0 + reg[:, 1] * side
    bx2, by2 = x0 + side + reg[:, 2] * side, y0 + side + reg[:, 3] * side
    refined = np.stack([(bx1 + bx2) / 2, (by1 + by2) / 2, np.maximum(bx2 - bx1, by2 - by1)], 1)
    return prob[:, 1], pts, refined


def mtcnn_landmarks(frames: np.ndarray, fp: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The 5 MTCNN landmarks of the largest face in every frame, in frame pixels.

    Full MTCNN runs on ``detect_frames`` evenly spaced frames (on every other frame only when none of those found a
    face); the boxes are interpolated to every frame and MTCNN's last stage (ONet) runs twice on each frame's box,
    the second time on the box it refined, which gives that frame's landmarks and says whether a face is there.

    Returns:
        (found bool (T,), landmarks float32 (T, 5, 2): left eye, right eye, nose, left and right mouth corner as
        seen in the image; NaN where not found).
    """
    fp = face_params(fp)
    t = len(frames)
    model = load_mtcnn(fp["device"])
    keys = _key_frames(t, fp["detect_frames"])
    seeds = _detect_mtcnn(model, frames, keys, fp)
    if not seeds:  # nothing on the key frames: look at the rest before giving up
        seeds = _detect_mtcnn(model, frames, [i for i in range(t) if i not in keys], fp)
    found = np.zeros(t, bool)
    pts = np.full((t, 5, 2), np.nan, np.float32)
    if not seeds:
        return found, pts
    boxes = _interpolate_boxes(seeds, t)
    prob, marks, refined = _onet(model, frames, boxes)
    ok = (prob >= model.thresholds[2]) & (refined[:, 2] > 4)
    boxes = np.where(ok[:, None], refined, boxes)
    prob, marks, _ = _onet(model, frames, boxes)
    found = prob >= model.thresholds[2]
    pts[found] = marks[found]
    return found, pts


def _smooth(x: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average along the first axis (edges average what they have)."""
    if window <= 1 or len(x) < 2:
        return x
    half = window // 2
    csum = np.concatenate([np.zeros((1, *x.shape[1:])), np.cumsum(x, axis=0)])
    lo = np.clip(np.arange(len(x)) - half, 0, len(x))
    hi = np.clip(np.arange(len(x)) + window - half, 0, len(x))
    return (csum[hi] - csum[lo]) / (hi - lo).reshape(-1, *([1] * (x.ndim - 1)))


def _face_template(fp: Mapping[str, Any]) -> tuple[float, float, float]:
    """(eye midpoint x, y, eye distance) in aligned-crop pixels (pixel centres at integers)."""
    s, m = fp["size"], fp["margin"]
    return (s - 1) / 2, s * (m + EYE_Y) / (1 + 2 * m) - 0.5, s * EYE_SPAN / (1 + 2 * m)


def aligned_crops(frames: np.ndarray, pts: np.ndarray, fp: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Eye-aligned face crops and mouth crops from per-frame landmarks (every frame's, none missing).

    The eye midpoint, eye distance and eye angle are smoothed over ``smooth`` frames, then each frame is rotated and
    scaled so the eyes lie level at the template position (``_face_template``). The mouth crop is a square centred
    on the frame's mouth-corner midpoint, ``mouth_scale`` times the clip's median corner distance wide (a fixed
    side per clip, so a widening mouth shows), in the face's smoothed orientation.

    Returns:
        faces uint8 (T, size, size, 3), mouths uint8 (T, mouth_size, mouth_size, 3), landmarks float32 (T, 5, 2) in
        face-crop pixels.
    """
    fp = face_params(fp)
    pts = pts.astype(np.float64)
    eye_l, eye_r = pts[:, 0], pts[:, 1]
    vec = eye_r - eye_l
    centre = _smooth((eye_l + eye_r) / 2, fp["smooth"])
    dist = _smooth(np.maximum(np.hypot(vec[:, 0], vec[:, 1]), 1e-3), fp["smooth"])
    angle = _smooth(np.arctan2(vec[:, 1], vec[:, 0]), fp["smooth"])
    tx, ty, span = _face_template(fp)
    t = len(pts)
    face_maps = _similarity(span / dist, angle, centre, np.tile([tx, ty], (t, 1)))
    mouth_c = (pts[:, 3] + pts[:, 4]) / 2
    corner = np.hypot(*(pts[:, 4] - pts[:, 3]).T)
    side = fp["mouth_scale"] * max(float(np.median(corner)), 1.0)
    ms = fp["mouth_size"]
    mouth_maps = _similarity(np.full(t, ms / side), angle, mouth_c, np.full((t, 2), (ms - 1) / 2))
    return {"faces": np.stack([_warp(f, m, fp["size"]) for f, m in zip(frames, face_maps)]),
            "mouths": np.stack([_warp(f, m, ms) for f, m in zip(frames, mouth_maps)]),
            "landmarks": _apply(face_maps, pts).astype(np.float32)}


def _centre_landmarks(frames: np.ndarray, fp: Mapping[str, Any]) -> np.ndarray:
    """The mean face's landmarks placed in the centre crop (frame pixels): the layout used when nothing is found."""
    t, h, w = frames.shape[:3]
    side = fp["center_scale"] * min(h, w)
    tx, ty, span = _face_template(fp)
    crop = _MEAN_FACE * span + [tx, ty]  # crop pixels
    k = side / fp["size"]
    one = (crop + 0.5) * k - 0.5 + [w / 2 - side / 2, h / 2 - side / 2]
    return np.repeat(one[None].astype(np.float32), t, axis=0)


def face_entry(frames: np.ndarray, fp: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """What the face cache stores for one clip.

    ``haar`` and ``center``: ``faces`` and ``found`` (see :func:`face_crops`). ``mtcnn``: also ``mouths`` uint8
    (T, mouth_size, mouth_size, 3), ``landmarks`` float32 (T, 5, 2) in face-crop pixels and ``landmarks_frame``
    (T, 5, 2) in pixels of the decoded frame (``work_size``). A frame without its own face borrows the nearest found
    frame's landmarks (``found`` False); a clip without any gets the centre crop (as ``center``), with the mean
    face's landmarks placed in it and the mouth crop taken where that mean face's mouth would be.
    """
    fp = face_params(fp)
    if fp["detector"] != "mtcnn":
        crops, found = face_crops(frames, fp)
        return {"faces": crops, "found": found}
    found, pts = mtcnn_landmarks(frames, fp)
    hits = np.flatnonzero(found)
    if hits.size:
        nearest = hits[np.argmin(np.abs(hits[None, :] - np.arange(len(found))[:, None]), axis=1)]
        pts = pts[nearest]
    else:
        pts = _centre_landmarks(frames, fp)
    out = aligned_crops(frames, pts, fp)
    if not hits.size:
        out["faces"] = face_crops(frames, {**fp, "detector": "center"})[0]
    return {"faces": out["faces"], "found": found, "mouths": out["mouths"], "landmarks": out["landmarks"],
            "landmarks_frame": pts.astype(np.float32)}
