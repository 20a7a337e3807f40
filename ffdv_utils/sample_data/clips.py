"""Small synthetic clips for tests and benchmarks (a face-like ellipse and a voiced tone), written with the sample
dataset's mp4 writer (``sample_data.mp4.write_mp4``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..core.files import atomic_path
from ..core.progress import progress_bar
from .mp4 import write_mp4


def make_clip(path: str | os.PathLike, seconds: float = 1.0, width: int = 160, height: int = 120, fps: int = 25,
              audio: bool = True, sample_rate: int = 44100, channels: int = 2, video: bool = True,
              vcodec: str = "libx264", acodec: str = "aac", seed: int = 0, silent: bool = False,
              face: bool = True, preset: str = "veryfast") -> Path:
    """Writes a small synthetic clip with PyAV.

    The picture is a drifting gradient with noise and (``face``) a skin-toned ellipse with two dark "eyes" and a
    "mouth", enough for a Haar cascade to have something to look at; the sound is a few harmonics with a
    syllable-like envelope plus noise, so spectrograms have structure.

    Args:
        path: Output file (.mp4 recommended).
        seconds: Duration.
        width: Frame width (even).
        height: Frame height (even).
        fps: Frame rate.
        audio: Write an audio stream.
        sample_rate: Audio sample rate.
        channels: 1 or 2.
        video: Write a video stream.
        vcodec: Video encoder (libx264, mpeg4, ...).
        acodec: Audio encoder.
        seed: Random seed for the content.
        silent: Write digital silence instead of sound.
        face: Draw the face-like ellipse.
        preset: x264 preset (ignored by other encoders).

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    frames = _frames(int(round(seconds * fps)), width, height, face, rng) if video else None
    sound = None
    if audio:
        n = int(round(seconds * sample_rate))
        t = np.arange(n) / sample_rate
        f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t + seed)
        phase = 2 * np.pi * np.cumsum(f0) / sample_rate
        env = 0.5 * (1 + np.sin(2 * np.pi * 3.1 * t)) ** 2 / 4
        sig = sum(np.sin(k * phase) / k for k in range(1, 12)) * env * 0.3
        sig = np.zeros(n) if silent else sig + rng.normal(0, 0.01, n)
        sound = np.tile(sig.astype(np.float32), (2 if channels == 2 else 1, 1))
    options = {"preset": preset, "crf": "23"} if vcodec == "libx264" else {}
    return write_mp4(path, frames, sound, width=width, height=height, fps=fps, sample_rate=sample_rate, vcodec=vcodec,
                     video_options=options, acodec=acodec)


def _frames(n: int, width: int, height: int, face: bool, rng: np.random.Generator):
    """Yields synthetic RGB frames. A dozen distinct frames (3 noise patterns x 4 mouth openings) are drawn once
    and then cycled and shifted sideways, so a 1080p clip costs the encoder's time, not numpy's."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([60 + 80 * xx / width, 80 + 60 * yy / height, 120 - 30 * xx / width], -1)
    layer = None
    if face:
        cy, cx, ry, rx = height * 0.45, width * 0.5, height * 0.28, height * 0.21
        ell = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
        eyes = [((xx - cx - ex * rx) / (rx * 0.18)) ** 2 + ((yy - cy + 0.25 * ry) / (ry * 0.09)) ** 2 <= 1
                for ex in (-0.38, 0.38)]
        layer = (ell, eyes, [((xx - cx) / (rx * 0.4)) ** 2 + ((yy - cy - 0.45 * ry) / (ry * m)) ** 2 <= 1
                             for m in (0.06, 0.08, 0.1, 0.11)])
    bank = []
    for k in range(3):
        noisy = base + rng.normal(0, 6, base.shape).astype(np.float32)
        for m in range(4 if face else 1):
            img = noisy.copy()
            if layer is not None:
                ell, eyes, mouths = layer
                img[ell] = np.array((205, 160, 135), np.float32) + (img[ell] - base[ell])
                for eye in eyes:
                    img[eye] = (40, 30, 30)
                img[mouths[m]] = (120, 40, 50)
            bank.append(np.clip(img, 0, 255).astype(np.uint8))
    del yy, xx, base
    per = 4 if face else 1
    for i in range(n):
        img = bank[(i % 3) * per + (int(abs(np.sin(i / 3.0)) * 3.99) if face else 0)]
        yield np.roll(img, int(round(3 * np.sin(i / 7.0))), axis=1)


# ---------------------------------------------------------------------------------------------------------------
# clips for benchmarks

# (width, height, seconds): 320p to 1080p, 5 to 10 s, the spread of the FFDV clips.
BENCH_SHAPES = [(568, 320, 5.0), (640, 360, 6.0), (854, 480, 8.0), (1280, 720, 10.0), (1920, 1080, 10.0),
                (640, 360, 10.0), (854, 480, 5.0), (1280, 720, 7.0)]

# (width, height, seconds, sample rate, channels): short clips, 3 to 6 s, 320x240 to 640x480, AAC at 16 to 48 kHz,
# mono and stereo (clips like FFDV's, where a fixed cost per clip shows most).
SHORT_SHAPES = [(320, 240, 3.0, 16000, 1), (480, 360, 4.5, 22050, 2), (640, 360, 3.5, 44100, 2),
                (640, 480, 5.5, 48000, 1), (320, 240, 6.0, 44100, 2), (480, 360, 3.2, 48000, 2),
                (640, 360, 5.0, 16000, 2), (640, 480, 4.0, 22050, 1)]


def make_clips(folder: str | os.PathLike, n: int, progress: bool = True,
               shapes: list[tuple] | None = None) -> list[Path]:
    """Writes ``n`` H.264 + AAC benchmark clips (shapes cycle through ``shapes``, default BENCH_SHAPES); existing
    ones are reused. A shape is (width, height, seconds) or (width, height, seconds, sample_rate, channels)."""
    folder = Path(folder)
    shapes = shapes or BENCH_SHAPES
    out = []
    for i in progress_bar(range(n), desc="make clips", unit="clip", disable=not progress):
        w, h, s, *audio = shapes[i % len(shapes)]
        sr, ch = audio if audio else (44100, 2)
        name = f"bench_{i:03d}_{h}p_{s:g}s.mp4" if not audio else f"short_{i:03d}_{w}x{h}_{s:g}s_{sr}hz_{ch}ch.mp4"
        path = folder / name
        if not path.is_file():
            with atomic_path(path, ".tmp.mp4") as tmp:
                make_clip(tmp, seconds=s, width=w, height=h, seed=i, sample_rate=sr, channels=ch)
        out.append(path)
    return out
