"""The one mp4 writer of the project (PyAV): video frames and audio interleaved into one container.

The sample dataset, the benchmark clips and the tests' clips are all written here, so there is one place that
knows how PyAV streams are opened, timed and flushed.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Mapping

import av
import numpy as np

AUDIO_CHUNK = 1024  # samples per audio frame handed to the encoder


def write_mp4(path: str | os.PathLike, frames: Iterable[np.ndarray] | None, audio: np.ndarray | None, *,
              width: int = 0, height: int = 0, fps: int = 25, sample_rate: int = 16000, vcodec: str = "libx264",
              video_options: Mapping[str, str] | None = None, acodec: str = "aac",
              audio_options: Mapping[str, str] | None = None, audio_bitrate: int | None = None,
              container_format: str | None = None) -> Path:
    """Write RGB ``frames`` (uint8 H x W x 3 each; None: no video stream) and ``audio`` (float (channels, n) in
    [-1, 1], 1 or 2 channels; None: no audio stream) to ``path``.

    Audio is interleaved with the video (each frame is followed by the audio up to its end), the encoders are
    flushed at the end. ``container_format`` defaults to the file's suffix (give it for a temporary name).
    """
    path = Path(path)
    layout = None if audio is None else ("mono" if audio.shape[0] == 1 else "stereo")
    with av.open(str(path), mode="w", format=container_format) as container:
        vs = aus = None
        if frames is not None:
            vs = container.add_stream(vcodec, rate=fps, options=dict(video_options or {}))
            vs.width, vs.height, vs.pix_fmt = int(width), int(height), "yuv420p"
        if audio is not None:
            aus = container.add_stream(acodec, rate=sample_rate, layout=layout, options=dict(audio_options or {}))
            if audio_bitrate:
                aus.bit_rate = int(audio_bitrate)
        pos, n = 0, 0 if audio is None else audio.shape[1]

        def push_audio(until: int) -> None:
            nonlocal pos
            while pos < until:
                chunk = np.ascontiguousarray(audio[:, pos:pos + AUDIO_CHUNK], dtype=np.float32)
                af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
                af.sample_rate, af.pts, af.time_base = sample_rate, pos, Fraction(1, sample_rate)
                container.mux(aus.encode(af))
                pos += chunk.shape[1]

        if vs is not None:
            for f, rgb in enumerate(frames):
                # rgb24 in, converted by the encoder (feeding OpenCV's I420 planes gave non-repeatable bitstreams)
                vf = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                vf.pts, vf.time_base = f, Fraction(1, int(fps))
                container.mux(vs.encode(vf))
                if aus is not None:
                    push_audio(min(n, int(round((f + 1) / fps * sample_rate))))
        if aus is not None:
            push_audio(n)
        if vs is not None:
            container.mux(vs.encode(None))
        if aus is not None:
            container.mux(aus.encode(None))
    return path

