"""Face drawing of the sample dataset: appearance, geometry, the static patch, eyes and mouth per frame, the
background and head motion."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

_SKIN_TONES = np.array([
    [236, 200, 176], [228, 182, 150], [214, 160, 124], [196, 138, 104],
    [170, 116, 84], [141, 94, 66], [112, 74, 52], [88, 58, 42],
], dtype=np.float64)
_HAIR_COLOURS = np.array([
    [22, 18, 16], [48, 34, 26], [86, 60, 40], [120, 84, 52], [184, 152, 104], [150, 146, 140], [132, 62, 32],
], dtype=np.float64)
_IRIS_COLOURS = np.array([[70, 45, 30], [40, 28, 20], [70, 100, 130], [80, 100, 60], [110, 85, 50]], dtype=np.float64)


def draw_look(rng: np.random.Generator) -> dict[str, Any]:
    """Draw the appearance of a face: skin, hair, eyes, lips, texture and lighting."""
    skin = _SKIN_TONES[int(rng.integers(len(_SKIN_TONES)))] * rng.uniform(0.93, 1.07, 3)
    return {
        "skin": np.clip(skin, 20, 250), "hair": _HAIR_COLOURS[int(rng.integers(len(_HAIR_COLOURS)))],
        "hair_style": int(rng.choice(3, p=[0.5, 0.35, 0.15])), "iris": _IRIS_COLOURS[int(rng.integers(5))],
        "lip": np.array([rng.uniform(0.8, 0.95), rng.uniform(0.5, 0.65), rng.uniform(0.5, 0.65)]),
        "tex_lo": float(rng.uniform(0.02, 0.05)), "tex_hi": float(rng.uniform(0.01, 0.035)),
        "light": float(rng.uniform(-0.12, 0.12)), "tex_seed": int(rng.integers(2 ** 31)),
        "sheen": float(rng.uniform(12.0, 26.0)),
    }


def draw_geometry(rng: np.random.Generator, face_h: float) -> dict[str, float]:
    """Place the facial features in patch coordinates for a face ``face_h`` pixels tall."""
    h = face_h
    # the patch is just large enough for hair, ears and the neck: it is warped every frame
    pw, ph = 2 * int(0.57 * h) + 2, 2 * int(0.76 * h) + 2
    cx, cy = pw / 2.0, 0.68 * h + 1
    j = lambda: rng.uniform(0.95, 1.05)  # noqa: E731 - small per-face proportions
    return {
        "h": h, "pw": pw, "ph": ph, "cx": cx, "cy": cy, "a": 0.39 * h * rng.uniform(0.92, 1.06), "b": 0.5 * h,
        "eye_y": cy - 0.08 * h * j(), "eye_dx": 0.17 * h * j(), "eye_w": 0.062 * h * j(), "eye_h": 0.03 * h * j(),
        "brow_dy": 0.072 * h * j(), "brow_w": 0.082 * h * j(), "brow_t": 0.02 * h * j(),
        "nose_y": cy + 0.1 * h * j(), "nose_w": 0.045 * h * j(),
        "mouth_y": cy + 0.245 * h * j(), "mouth_w": 0.105 * h * j(), "lip_t": 0.017 * h * j(),
        "mouth_open": 0.085 * h * j(), "hairline": cy - 0.33 * h * j(),
    }


def ellipse_mask(shape: tuple[int, int], centre: tuple[float, float], axes: tuple[float, float],
                  sigma: float = 0.0) -> np.ndarray:
    """Float mask of a filled ellipse, optionally feathered by a Gaussian blur."""
    m = np.zeros(shape, np.uint8)
    cv2.ellipse(m, (int(round(centre[0])), int(round(centre[1]))), (max(1, int(axes[0])), max(1, int(axes[1]))),
                0, 0, 360, 255, -1, cv2.LINE_AA)
    out = m.astype(np.float32) / 255.0
    return cv2.GaussianBlur(out, (0, 0), sigma) if sigma > 0 else out


def build_base(g: dict[str, float], look: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Static part of the face patch (skin with shading, hair, brows, nose, ears, neck).

    The shading mimics a lit face (dark eye sockets, bright nose bridge and cheeks), the pattern that a Haar
    frontal-face cascade looks for.

    Returns:
        RGB float32 patch (0-255) and its alpha (0-1).
    """
    ph, pw, h, a, b, cx, cy = int(g["ph"]), int(g["pw"]), g["h"], g["a"], g["b"], g["cx"], g["cy"]
    shape = (ph, pw)
    yy, xx = np.mgrid[0:ph, 0:pw].astype(np.float32)
    u, v = (xx - cx) / a, (yy - cy) / b
    rng = np.random.default_rng(look["tex_seed"])
    skin, hair = look["skin"].astype(np.float32), look["hair"].astype(np.float32)

    shade = 1.0 - 0.2 * u ** 2 - 0.06 * np.clip(v, 0, None) ** 2 + look["light"] * u
    blur = 0.035 * h

    def blob(centre: tuple[float, float], axes: tuple[float, float], sigma: float = blur) -> np.ndarray:
        return ellipse_mask(shape, centre, axes, sigma)

    # `shade` scales the skin colour; `sheen` adds grey levels, so that dark skin keeps the light-dark pattern
    # (bright nose bridge, cheekbones and forehead around dark eye sockets) that a Haar cascade relies on
    sheen = np.zeros(shape, np.float32)
    for s in (-1, 1):
        ex = cx + s * g["eye_dx"]
        socket = blob((ex, g["eye_y"] - 0.01 * h), (1.5 * g["eye_w"], 2.4 * g["eye_h"]))
        shade -= 0.3 * socket
        sheen -= 10.0 * socket
        cheek = blob((cx + s * 0.5 * a, cy + 0.08 * h), (0.2 * h, 0.12 * h), 0.06 * h)
        shade += 0.09 * cheek
        sheen += 0.6 * look["sheen"] * cheek
        shade -= 0.08 * blob((cx + s * 0.06 * h, (g["eye_y"] + g["nose_y"]) / 2), (0.02 * h, 0.09 * h), 0.02 * h)
    bridge = np.zeros(shape, np.float32)
    cv2.line(bridge, (int(cx), int(g["eye_y"] - 0.03 * h)), (int(cx), int(g["nose_y"] - 0.01 * h)), 1.0,
             max(2, int(0.05 * h)), cv2.LINE_AA)
    bridge = cv2.GaussianBlur(bridge, (0, 0), 0.015 * h)
    shade += 0.13 * bridge
    sheen += look["sheen"] * bridge
    forehead = blob((cx, cy - 0.3 * h), (0.25 * h, 0.08 * h), 0.05 * h)
    shade += 0.06 * forehead
    sheen += 0.5 * look["sheen"] * forehead
    shade -= 0.16 * blob((cx, g["nose_y"] + 0.03 * h), (0.07 * h, 0.022 * h), 0.012 * h)
    shade -= 0.1 * blob((cx, g["mouth_y"] + 0.07 * h), (0.08 * h, 0.025 * h), 0.02 * h)
    shade -= 0.12 * np.clip((v - 0.7) / 0.3, 0, 1) * (np.abs(u) < 1)
    lo = cv2.GaussianBlur(rng.normal(0, 1, shape).astype(np.float32), (0, 0), 0.04 * h)
    lo /= np.abs(lo).max() + 1e-9
    hi = rng.normal(0, 1, shape).astype(np.float32)
    tex = 1.0 + look["tex_lo"] * lo + look["tex_hi"] * hi
    skin_img = skin[None, None, :] * (shade * tex)[..., None] + sheen[..., None]

    rgb = np.zeros((ph, pw, 3), np.float32)
    alpha = np.zeros(shape, np.float32)

    def paint(mask: np.ndarray, colour: np.ndarray) -> None:
        m = mask[..., None]
        rgb[:] = rgb * (1 - m) + colour * m
        alpha[:] = np.maximum(alpha, mask)

    hair_img = hair[None, None, :] * (1.0 + 0.06 * hi[..., None] + 0.1 * lo[..., None] - 0.15 * np.abs(u)[..., None])
    if look["hair_style"] == 1:  # long hair behind the face
        back = blob((cx, cy + 0.1 * h), (1.22 * a, 0.75 * h), 0.01 * h)
        paint(back * (yy > cy - 0.5 * h), hair_img)
    neck = np.zeros(shape, np.float32)
    cv2.rectangle(neck, (int(cx - 0.45 * a), int(cy + 0.2 * h)), (int(cx + 0.45 * a), ph), 1.0, -1)
    fade = np.clip((cy + 0.76 * h - yy) / (0.08 * h), 0.0, 1.0)  # the neck fades into the shirt collar
    paint(cv2.GaussianBlur(neck, (0, 0), 1.0) * fade, skin_img * 0.78)
    for s in (-1, 1):
        paint(blob((cx + s * 0.98 * a, g["eye_y"] + 0.07 * h), (0.06 * h, 0.11 * h), 0.7), skin_img * 0.85)
    paint(blob((cx, cy), (a, b), 0.8), skin_img)
    if look["hair_style"] != 2:  # 2 = bald / shaved
        cap = blob((cx, cy - 0.06 * h), (1.07 * a, 0.57 * h), 0.6)
        hairline = g["hairline"] + 0.12 * h * u ** 2
        top = (yy < hairline) | ((np.abs(u) > 0.86) & (yy < g["eye_y"] - 0.03 * h))
        paint(cap * cv2.GaussianBlur(top.astype(np.float32), (0, 0), 0.01 * h), hair_img)
    brow_col = np.minimum(hair * 0.7, skin * 0.45)
    for s in (-1, 1):
        brow = np.zeros(shape, np.float32)
        cv2.ellipse(brow, (int(cx + s * g["eye_dx"]), int(g["eye_y"] - g["brow_dy"] + 0.02 * h)),
                    (int(g["brow_w"]), int(0.03 * h)), 0, 200, 340, 1.0, max(2, int(g["brow_t"])), cv2.LINE_AA)
        paint(cv2.GaussianBlur(brow, (0, 0), 0.006 * h + 0.3) * 0.9, brow_col)
    for s in (-1, 1):  # nostrils
        paint(blob((cx + s * g["nose_w"] * 0.6, g["nose_y"]), (0.018 * h, 0.01 * h), 0.004 * h + 0.3) * 0.8,
              skin * 0.35)
    return rgb, alpha


def draw_dynamic(base: np.ndarray, g: dict[str, float], look: dict[str, Any], mouth_open: float,
                  mouth_width: float, eye_open: float, gaze: float) -> np.ndarray:
    """Draw eyes and mouth for one frame onto a copy of the static patch; returns uint8 RGB."""
    img = np.clip(base, 0, 255).astype(np.uint8)
    h, cx = g["h"], g["cx"]
    skin = look["skin"]
    for s in (-1, 1):
        ex, ey = cx + s * g["eye_dx"], g["eye_y"]
        ew, eh = g["eye_w"], g["eye_h"]
        x0, y0 = int(ex - ew - 3), int(ey - 2 * eh - 3)
        x1, y1 = int(ex + ew + 4), int(ey + 2 * eh + 4)
        roi = img[y0:y1, x0:x1]
        c = (ex - x0, ey - y0)
        if eye_open > 0.15:
            sclera = ellipse_mask(roi.shape[:2], c, (ew, eh * eye_open))
            iris = np.zeros(roi.shape[:2], np.float32)
            ir = 0.85 * eh
            cv2.circle(iris, (int(c[0] + gaze * ew * 0.35), int(c[1])), max(1, int(ir)), 1.0, -1, cv2.LINE_AA)
            pupil = np.zeros_like(iris)
            cv2.circle(pupil, (int(c[0] + gaze * ew * 0.35), int(c[1])), max(1, int(0.45 * ir)), 1.0, -1,
                       cv2.LINE_AA)
            layer = roi.astype(np.float32)
            white = 0.45 * skin + 0.55 * np.array([215.0, 210.0, 200.0])  # the eye white lies in shadow
            for mask, col in ((sclera, white), (sclera * iris, look["iris"]), (sclera * pupil, (15, 12, 12))):
                layer = layer * (1 - mask[..., None]) + np.asarray(col, np.float32) * mask[..., None]
            roi[:] = np.clip(layer, 0, 255).astype(np.uint8)
        lid_col = tuple(int(v) for v in skin * 0.25)
        lid_h = max(1, int(eh * max(eye_open, 0.05)))
        cv2.ellipse(roi, (int(c[0]), int(c[1])), (int(ew), lid_h), 0, 180, 360, lid_col, max(1, int(0.016 * h)),
                    cv2.LINE_AA)
    mx, my = cx, g["mouth_y"]
    mw = g["mouth_w"] * mouth_width
    op = g["mouth_open"] * mouth_open
    lip_col = tuple(int(v) for v in np.clip(skin * look["lip"], 0, 255))
    cv2.ellipse(img, (int(mx), int(my + op / 2)), (int(mw), int(g["lip_t"] * 1.5 + op / 2)), 0, 0, 360, lip_col, -1,
                cv2.LINE_AA)
    if op >= 2:
        x0, y0 = int(mx - mw - 2), int(my - 2)
        x1, y1 = int(mx + mw + 3), int(my + op + 3)
        roi = img[y0:y1, x0:x1]
        cavity = ellipse_mask(roi.shape[:2], (mx - x0, my + op / 2 - y0), (0.8 * mw, op / 2))
        teeth = ellipse_mask(roi.shape[:2], (mx - x0, my - y0), (0.6 * mw, 0.35 * op)) * cavity
        layer = roi.astype(np.float32)
        layer = layer * (1 - cavity[..., None]) + np.array([45, 14, 16], np.float32) * cavity[..., None]
        layer = layer * (1 - teeth[..., None]) + np.array([220, 214, 200], np.float32) * teeth[..., None]
        roi[:] = np.clip(layer, 0, 255).astype(np.uint8)
    else:
        dark = tuple(int(v) for v in np.clip(skin * look["lip"] * 0.45, 0, 255))
        cv2.ellipse(img, (int(mx), int(my)), (int(0.85 * mw), 1), 0, 0, 360, dark, max(1, int(0.008 * h)),
                    cv2.LINE_AA)
    # soften only the redrawn features; the static patch needs no per-frame work
    y0 = max(0, int(g["eye_y"] - 3 * g["eye_h"] - 4))
    y1 = int(g["mouth_y"] + g["mouth_open"] + 2 * g["lip_t"] + 6)
    x0 = max(0, int(cx - g["eye_dx"] - g["eye_w"] - 6))
    x1 = int(cx + g["eye_dx"] + g["eye_w"] + 7)
    img[y0:y1, x0:x1] = cv2.GaussianBlur(img[y0:y1, x0:x1], (0, 0), 0.004 * h + 0.3)
    return img


def background(rng: np.random.Generator, w: int, hgt: int, face: tuple[float, float, float]) -> np.ndarray:
    """A static scene (gradient, wall panels or a room with a window) and the shoulders under the face."""
    base = rng.uniform(40, 220, 3)
    other = np.clip(base + rng.uniform(-70, 70, 3), 10, 245)
    ramp = np.linspace(0.0, 1.0, hgt, dtype=np.float32)[:, None, None]
    img = (base * (1 - ramp) + other * ramp) * np.ones((1, w, 1), np.float32)
    style = int(rng.integers(3))
    if style == 0:
        for _ in range(int(rng.integers(2, 6))):
            c = (float(rng.uniform(0, w)), float(rng.uniform(0, hgt)))
            m = ellipse_mask((hgt, w), c, (rng.uniform(0.1, 0.4) * w, rng.uniform(0.1, 0.4) * hgt), 0.08 * w)
            img += m[..., None] * rng.uniform(-50, 50, 3)
    elif style == 1:
        period = int(rng.integers(max(8, w // 30), max(9, w // 6)))
        stripes = ((np.arange(w) // period) % 2).astype(np.float32)[None, :, None]
        img *= 1.0 - rng.uniform(0.04, 0.15) * stripes
    else:
        for _ in range(int(rng.integers(2, 5))):
            x0, y0 = int(rng.uniform(0, w * 0.9)), int(rng.uniform(0, hgt * 0.8))
            x1, y1 = x0 + int(rng.uniform(0.1, 0.4) * w), y0 + int(rng.uniform(0.1, 0.5) * hgt)
            cv2.rectangle(img, (x0, y0), (x1, y1), tuple(float(v) for v in rng.uniform(20, 250, 3)), -1)
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(1.5, 5.0))
    fx, fy, fh = face
    shirt = tuple(float(v) for v in rng.uniform(20, 230, 3))
    pts = np.array([[fx - 0.3 * fh, fy + 0.62 * fh], [fx + 0.3 * fh, fy + 0.62 * fh], [fx + 0.95 * fh, fy + 0.85 * fh],
                    [fx + 1.15 * fh, hgt + 5], [fx - 1.15 * fh, hgt + 5], [fx - 0.95 * fh, fy + 0.85 * fh]])
    cv2.fillPoly(img, [pts.astype(np.int32)], shirt, cv2.LINE_AA)
    return np.clip(img, 0, 255).astype(np.float32)


def head_motion(rng: np.random.Generator, n_frames: int, fps: int, face_h: float) -> np.ndarray:
    """Slight head motion per frame: columns dx, dy (pixels), angle (degrees), scale."""
    t = np.arange(n_frames) / fps
    out = np.zeros((n_frames, 4))
    amps = (rng.uniform(0.01, 0.035) * face_h, rng.uniform(0.005, 0.02) * face_h, rng.uniform(0.8, 4.0), 0.015)
    for col, amp in enumerate(amps):
        f1, f2 = rng.uniform(0.12, 0.6, 2)
        p1, p2 = rng.uniform(0, 2 * np.pi, 2)
        out[:, col] = amp * (0.7 * np.sin(2 * np.pi * f1 * t + p1) + 0.3 * np.sin(2 * np.pi * f2 * t + p2))
    out[:, 3] += 1.0
    return out


def blinks(rng: np.random.Generator, n_frames: int, fps: int) -> np.ndarray:
    """Eye openness per frame (1 open, 0 closed) with blinks every 1.5-4.5 s."""
    t = np.arange(n_frames) / fps
    eye = np.ones(n_frames)
    tb = rng.uniform(0.2, 2.5)
    while tb < t[-1] + 1:
        d = rng.uniform(0.12, 0.22)
        eye = np.minimum(eye, np.clip(np.abs(t - tb) / (d / 2), 0, 1))
        tb += rng.uniform(1.5, 4.5)
    return eye
