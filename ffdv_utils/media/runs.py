"""Runs of consecutive video frames on a fixed time grid (for models of motion and audio-visual timing).

:func:`load_frames` in :mod:`.decode` picks a few evenly spaced frames of a whole clip; the models of
``ffdv_utils.selfsup`` need every frame of a stretch instead, resampled to one frame rate so that frame ``i`` is at
``start + i / fps`` seconds whatever the clip's own rate (the nearest decoded frame at or before that time).
"""

from __future__ import annotations

import os

import av
import numpy as np

from .decode import MediaError, frame_size, open_container, video_stream

__all__ = ["load_frame_run"]


def load_frame_run(path: str | os.PathLike, seconds: float, fps: float = 25.0, size: int | None = None,
                   start: float = 0.0, *, threads: int = 0) -> np.ndarray:
    """Decodes the frames from ``start`` to ``start + seconds`` on a ``fps`` grid, as RGB.

    Args:
        path: Media file.
        seconds: Length of the run (shorter when the clip ends first).
        fps: Rate of the returned frames (frames are repeated or skipped to reach it).
        size: Shorter side of the returned frames (aspect kept); None keeps the stored size.
        start: First time, in seconds from the stream's first frame.
        threads: Decoder threads (0: FFmpeg's choice).

    Times count from the start of the audio stream when there is one (where :func:`~.decode.load_audio` starts),
    else from the video stream's start.

    Returns:
        uint8 array ``(n, H, W, 3)``, ``n = floor(seconds * fps)`` or fewer at the end of the clip.

    Raises:
        MediaError: No video stream, or no frame decodes.
    """
    if seconds <= 0 or fps <= 0:
        raise ValueError("seconds and fps must be positive")
    n_max = int(np.floor(seconds * fps + 1e-6))
    out: list[np.ndarray] = []
    with open_container(path) as c:
        stream = video_stream(c, path, threads)
        tb = stream.time_base
        first = None
        # times count from the audio stream's start where there is one, so frame i and audio sample
        # round(i / fps * sr) of load_audio are simultaneous (containers often start the two streams apart)
        origin = None
        if c.streams.audio and c.streams.audio[0].start_time is not None:
            a = c.streams.audio[0]
            origin = float(a.start_time * a.time_base)
        width = height = 0
        if start > 0:
            try:
                c.seek(int(start / tb), stream=stream, backward=True)
            except av.error.FFmpegError:
                c.seek(0, stream=stream, backward=True)
        prev = None  # the newest decoded frame at or before the next grid time: (frame, converted array or None)

        def image() -> np.ndarray:
            nonlocal prev, width, height
            frame, img = prev
            if img is None:
                if not width:
                    width, height = frame_size(frame.width, frame.height, size)
                img = frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
                prev = (frame, img)
            return img

        end = None
        try:
            for frame in c.decode(stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * tb)
                if first is None:
                    first = origin if origin is not None else (
                        float(stream.start_time * tb) if stream.start_time is not None else t)
                t -= first
                # grid times before this frame show the previous frame (the first frame also covers earlier ones)
                while prev is not None and len(out) < n_max and start + len(out) / fps < t - 1e-6:
                    out.append(image())
                if len(out) >= n_max:
                    break
                prev = (frame, None)
                end = t + (1.0 / float(stream.average_rate) if stream.average_rate else 1.0 / fps)
        except av.error.FFmpegError:
            pass  # a damaged tail: keep what decoded
        if prev is not None:
            # the last frame covers the grid until its own end
            while len(out) < n_max and (not out or start + len(out) / fps < end - 1e-6):
                out.append(image())
    if not out:
        raise MediaError(path, "no video frame decodes")
    return np.stack(out)
