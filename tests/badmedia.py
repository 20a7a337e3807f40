"""A corpus of awkward and broken inputs, generated at test time with PyAV (nothing binary is committed).

``make_corpus(folder)`` returns {case: path}. Decodable cases are small (a fraction of a second to 2 s) so the
whole corpus is written in a few seconds.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# cases that hold at least one decodable stream
DECODABLE = ("video_no_audio", "audio_only", "short_0_2s", "single_frame", "frame_4k", "portrait_360x640",
             "audio_8k_mono", "audio_48k_stereo", "audio_5_1", "variable_frame_rate", "spaces and ünïcödé",
             "audio_much_shorter", "normal")
# cases with nothing decodable: they need the documented fallback
BROKEN = ("zero_byte", "random_bytes", "truncated")


def _frames(n: int, w: int, h: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 0] = (xx * 255 // max(1, w - 1) + 7 * i) % 256
        img[..., 1] = (yy * 255 // max(1, h - 1)) % 256
        img[..., 2] = rng.integers(0, 40)
        # a bright "face" ellipse in the middle so detectors have something to look at
        cy, cx = h // 2, w // 2
        mask = ((yy - cy) / (0.3 * h)) ** 2 + ((xx - cx) / (0.2 * w + 1)) ** 2 < 1
        img[mask] = (210, 170, 140)
        yield img


def _tone(seconds: float, sr: int, channels: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    mono = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return np.repeat(mono[None].astype(np.float32), channels, axis=0)


def write_clip(path: Path, seconds: float = 1.0, w: int = 160, h: int = 120, fps: int = 25, sr: int | None = 16000,
               layout: str = "mono", n_frames: int | None = None, audio_seconds: float | None = None,
               video: bool = True, vfr: bool = False) -> Path:
    """An mp4 with H.264 video and/or AAC audio (``sr=None``: no audio; ``video=False``: audio only)."""
    with av.open(str(path), mode="w", format="mp4") as c:
        vs = None
        if video:
            vs = c.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
            vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
            if vfr:
                vs.codec_context.time_base = Fraction(1, 1000)
        aus = None
        if sr:
            aus = c.add_stream("aac", rate=sr, layout=layout)
        if vs is not None:
            n = n_frames if n_frames is not None else max(1, int(round(seconds * fps)))
            t_ms = 0
            rng = np.random.default_rng(1)
            for i, img in enumerate(_frames(n, w, h)):
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                if vfr:  # irregular frame durations: 20-80 ms
                    frame.pts, frame.time_base = t_ms, Fraction(1, 1000)
                    t_ms += int(rng.integers(20, 80))
                for pkt in vs.encode(frame):
                    c.mux(pkt)
            for pkt in vs.encode():
                c.mux(pkt)
        if aus is not None:
            channels = len(av.AudioLayout(layout).channels)
            data = _tone(audio_seconds if audio_seconds is not None else seconds, sr, channels)
            step = 1024
            for start in range(0, data.shape[1], step):
                chunk = np.ascontiguousarray(data[:, start:start + step])
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
                frame.sample_rate, frame.pts = sr, start
                for pkt in aus.encode(frame):
                    c.mux(pkt)
            for pkt in aus.encode():
                c.mux(pkt)
    return path


def make_corpus(folder: Path) -> dict[str, Path]:
    """Write every case into ``folder`` (created); returns {case: path}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    p = {name: folder / f"{name}.mp4" for name in DECODABLE + BROKEN}
    write_clip(p["normal"], 1.2)
    write_clip(p["video_no_audio"], 1.0, sr=None)
    write_clip(p["audio_only"], 1.0, video=False)
    write_clip(p["short_0_2s"], 0.2)
    write_clip(p["single_frame"], 0.04, n_frames=1)
    write_clip(p["frame_4k"], 0.12, w=3840, h=2160, n_frames=3)
    write_clip(p["portrait_360x640"], 0.8, w=360, h=640)
    write_clip(p["audio_8k_mono"], 1.0, sr=8000, layout="mono")
    write_clip(p["audio_48k_stereo"], 1.0, sr=48000, layout="stereo")
    write_clip(p["audio_5_1"], 1.0, sr=48000, layout="5.1")
    write_clip(p["variable_frame_rate"], 1.0, vfr=True)
    write_clip(p["spaces and ünïcödé"], 0.8)
    write_clip(p["audio_much_shorter"], 2.0, audio_seconds=0.3)
    p["zero_byte"].write_bytes(b"")
    p["random_bytes"].write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    full = p["normal"].read_bytes()
    p["truncated"].write_bytes(full[: len(full) // 3])
    return p
