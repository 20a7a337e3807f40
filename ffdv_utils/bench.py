"""Benchmarks: ``python -m ffdv_utils bench <what>``.

``bench extraction`` times the public baseline's audio path (moviepy writes a wav, librosa reads it back) against
the workspace's PyAV path, plus face crops, on the same clips. Other benchmarks (``bench train``) plug in by
adding a function ``_add_<what>(bench_subparsers)`` and listing it in ``BENCHES``.

This module also holds :func:`make_clip`, a tiny H.264/AAC clip writer (PyAV only) used by the tests and by
the benchmark when no videos are given.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import av
import numpy as np

__all__ = ["make_clip", "make_clips", "bench_extraction", "add_bench_parser", "BENCHES"]


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
    with av.open(str(path), mode="w") as out:
        vs = as_ = None
        if video:
            vs = out.add_stream(vcodec, rate=fps)
            vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
            if vcodec == "libx264":
                vs.options = {"preset": preset, "crf": "23"}
        if audio:
            as_ = out.add_stream(acodec, rate=sample_rate)
            as_.layout = "stereo" if channels == 2 else "mono"
        n_frames = int(round(seconds * fps)) if video else 0
        if vs is not None:
            yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
            cy, cx = height * 0.45, width * 0.5
            ry, rx = height * 0.28, height * 0.21
            for i in range(n_frames):
                shift = 40.0 * i / max(1, n_frames)
                img = np.empty((height, width, 3), np.float32)
                img[..., 0] = 60 + 80 * xx / width + shift
                img[..., 1] = 80 + 60 * yy / height
                img[..., 2] = 120 - shift
                if face:
                    dx = cx + 3 * np.sin(i / 7.0)
                    ell = ((xx - dx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
                    img[ell] = (205, 160, 135)
                    for ex in (-0.38, 0.38):
                        eye = ((xx - dx - ex * rx) / (rx * 0.18)) ** 2 + ((yy - cy + 0.25 * ry) / (ry * 0.09)) ** 2 <= 1
                        img[eye] = (40, 30, 30)
                    mouth_h = 0.06 + 0.05 * abs(np.sin(i / 3.0))
                    mouth = ((xx - dx) / (rx * 0.4)) ** 2 + ((yy - cy - 0.45 * ry) / (ry * mouth_h)) ** 2 <= 1
                    img[mouth] = (120, 40, 50)
                img += rng.normal(0, 6, img.shape).astype(np.float32)
                frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
                for pkt in vs.encode(frame):
                    out.mux(pkt)
            for pkt in vs.encode(None):
                out.mux(pkt)
        if as_ is not None:
            n = int(round(seconds * sample_rate))
            t = np.arange(n) / sample_rate
            f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t + seed)
            phase = 2 * np.pi * np.cumsum(f0) / sample_rate
            env = 0.5 * (1 + np.sin(2 * np.pi * 3.1 * t)) ** 2 / 4
            sig = sum(np.sin(k * phase) / k for k in range(1, 12)) * env * 0.3
            sig = sig + rng.normal(0, 0.01, n)
            if silent:
                sig = np.zeros(n)
            block = 1024
            pts = 0
            for start in range(0, n, block):
                chunk = sig[start:start + block].astype(np.float32)
                data = np.tile(chunk, (channels, 1)) if channels == 2 else chunk[None]
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format="fltp",
                                                   layout="stereo" if channels == 2 else "mono")
                frame.sample_rate = sample_rate
                frame.pts = pts
                frame.time_base = Fraction(1, sample_rate)
                pts += chunk.shape[0]
                for pkt in as_.encode(frame):
                    out.mux(pkt)
            for pkt in as_.encode(None):
                out.mux(pkt)
    return path
