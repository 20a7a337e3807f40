"""Decoding audio and video frames: the one module that knows about containers.

Everything goes through PyAV (the FFmpeg libraries bundled with the ``av`` wheel), so no system ffmpeg, no
temporary wav files and no subprocesses are needed. Three entry points:

* :func:`probe_video` reads stream metadata and never raises (errors land in the ``error`` field).
* :func:`load_audio` decodes the first audio stream and resamples it once to mono float32.
* :func:`load_frames` returns ``n`` evenly spaced RGB frames, decoding only the groups of pictures it needs.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from functools import lru_cache
from pathlib import Path
from typing import Any

import av
import numpy as np

__all__ = ["MediaError", "probe_video", "load_audio", "load_frames", "frame_size", "audio_decoders"]


class MediaError(RuntimeError):
    """A media file could not be decoded; ``str()`` names the file.

    Args:
        path: The file that failed.
        message: What went wrong.
    """

    def __init__(self, path: str | os.PathLike, message: str) -> None:
        # Both values go to args so the exception survives pickling between worker processes.
        super().__init__(str(path), str(message))
        self.path = str(path)
        self.message = str(message)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@lru_cache(maxsize=1)
def audio_decoders() -> str:
    """Comma-separated names of every audio decoder in the bundled FFmpeg: the ``codec_whitelist`` that opens a
    container for its audio alone (no video decoder is opened, nor a first picture decoded)."""
    names = set()
    for name in av.codecs_available:
        try:
            codec = av.codec.Codec(name, "r")
        except Exception:
            continue
        if codec.type == "audio":
            names.add(codec.name)
    return ",".join(sorted(names))


def open_container(path: str | os.PathLike, audio_only: bool = False) -> av.container.InputContainer:
    """Opens a container for reading, turning every failure into a MediaError.

    ``audio_only`` lets only audio decoders open: opening a file otherwise decodes its first video frames to
    complete the stream parameters, about 40 ms for a 1080p H.264 clip, two thirds of the whole audio path.
    Stream metadata (sizes, rates, durations) still comes from the container.
    """
    p = Path(path)
    if not p.is_file():
        raise MediaError(p, "file not found")
    if p.stat().st_size == 0:
        raise MediaError(p, "empty file (0 bytes)")
    try:
        if audio_only:
            return av.open(str(p), mode="r", options={"codec_whitelist": audio_decoders()})
        return av.open(str(p), mode="r")
    except Exception as e:  # av raises a family of FFmpeg errors, OSError and ValueError
        raise MediaError(p, f"cannot open container: {type(e).__name__}: {e}") from e


def _seconds(value: Any, time_base: Any) -> float:
    """Converts a stream timestamp to seconds (0.0 when unknown)."""
    if value is None or time_base is None:
        return 0.0
    return float(value * time_base)


def probe_video(path: str | os.PathLike) -> dict:
    """Reads container and stream metadata without decoding.

    Args:
        path: Media file.

    Returns:
        Dict with video_name, duration, fps, width, height, n_frames, video_codec, has_audio, audio_codec,
        sample_rate, channels, audio_duration, size_bytes and error ('' when the file opened). Never raises:
        a missing, empty or garbage file gives zeros and a filled ``error``.
    """
    p = Path(path)
    info: dict[str, Any] = {
        "video_name": p.name, "duration": 0.0, "fps": 0.0, "width": 0, "height": 0, "n_frames": 0,
        "video_codec": "", "has_audio": False, "audio_codec": "", "sample_rate": 0, "channels": 0,
        "audio_duration": 0.0, "size_bytes": 0, "error": "",
    }
    try:
        with open_container(p, audio_only=True) as c:
            info["size_bytes"] = p.stat().st_size
            if c.duration is not None:
                info["duration"] = c.duration / av.time_base
            if c.streams.video:
                vs = c.streams.video[0]
                cc = vs.codec_context
                info["video_codec"] = cc.name or ""
                info["width"], info["height"] = int(cc.width or 0), int(cc.height or 0)
                rate = vs.average_rate or vs.guessed_rate or vs.base_rate
                info["fps"] = float(rate) if rate else 0.0
                vdur = _seconds(vs.duration, vs.time_base)
                info["n_frames"] = int(vs.frames or round(vdur * info["fps"]))
                info["duration"] = info["duration"] or vdur
            if c.streams.audio:
                a = c.streams.audio[0]
                info["has_audio"] = True
                info["audio_codec"] = a.codec_context.name or ""
                info["sample_rate"] = int(a.codec_context.sample_rate or a.rate or 0)
                info["channels"] = int(a.codec_context.channels or 0)
                info["audio_duration"] = _seconds(a.duration, a.time_base) or info["duration"]
            if not c.streams.video and not c.streams.audio:
                info["error"] = "no audio or video stream"
    except MediaError as e:
        info["error"] = e.message
        info["size_bytes"] = p.stat().st_size if p.is_file() else 0
    except Exception as e:  # probing must never take a whole scan down
        info["error"] = f"{type(e).__name__}: {e}"
    return info


class _Segments:
    """Decoded audio, copied frame by frame into growing (channels, n) float32 buffers, one per channel layout."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(4096, int(capacity))
        self.done: list[np.ndarray] = []  # finished segments, already cut to their filled length
        self.buf: np.ndarray | None = None
        self.fill = 0
        self.total = 0

    def start(self, channels: int) -> None:
        """Begins a new segment of ``channels`` channels (the current one is kept if it has samples)."""
        if self.buf is not None and self.fill:
            self.done.append(self.buf[:, :self.fill])
        self.buf = np.empty((channels, self.capacity), np.float32)
        self.fill = 0

    def add(self, planes: tuple, n: int) -> None:
        """Copies ``n`` float32 samples from each plane of one frame (a new channel count starts a new segment)."""
        if self.buf is None or self.buf.shape[0] != len(planes):
            self.start(len(planes))
        end = self.fill + n
        if end > self.buf.shape[1]:
            grown = np.empty((self.buf.shape[0], max(2 * self.buf.shape[1], end)), np.float32)
            grown[:, :self.fill] = self.buf[:, :self.fill]
            self.buf = grown
        for row, plane in zip(self.buf, planes):
            row[self.fill:end] = np.frombuffer(plane, np.float32, count=n)
        self.fill = end
        self.total += n

    def filled(self) -> list[np.ndarray]:
        """Every segment with samples, in order, each (channels, n)."""
        last = [self.buf[:, :self.fill]] if self.buf is not None and self.fill else []
        return self.done + last


def load_audio(path: str | os.PathLike, sr: int, max_seconds: float | None = None, *,
               resampler: str = "soxr") -> np.ndarray:
    """Decodes the first audio stream to mono float32 at ``sr`` Hz.

    Decoded frames go through one ``av.AudioResampler`` to float planar (mono stays mono, more channels are
    mixed to stereo) and the channels are averaged, the same mix-down as ``librosa.load``. The rate change is
    done once: by FFmpeg's swresample in that same resampler (``resampler="ffmpeg"``), or by libsoxr at "HQ"
    quality after decoding (``"soxr"``, the default): that is what ``librosa.load`` uses, and the per-clip
    min-max image of the public baseline is sensitive enough to the anti-aliasing filter near Nyquist that
    only soxr reproduces it (swresample's default filter shifted whole images by up to 18 grey levels).

    Args:
        path: Media file.
        sr: Target sample rate in Hz.
        max_seconds: Stop after this many seconds of audio (None or 0: the whole stream).
        resampler: "soxr" or "ffmpeg".

    Returns:
        1-D float32 array; empty when the file has no audio stream (or an empty one). Corrupt packets in the
        middle of a stream are skipped, so a truncated file gives the audio up to the damage.

    Raises:
        MediaError: The file cannot be opened, or it has an audio stream of which nothing decodes.
        ValueError: Unknown resampler.
    """
    if resampler not in ("soxr", "ffmpeg"):
        raise ValueError(f"resampler must be 'soxr' or 'ffmpeg', not {resampler!r}")
    with open_container(path, audio_only=True) as c:
        if not c.streams.audio:
            return np.zeros(0, np.float32)
        stream = c.streams.audio[0]
        seconds = _seconds(stream.duration, stream.time_base)
        native = int(stream.codec_context.sample_rate or stream.rate or 0)
        rate = sr if resampler == "ffmpeg" or not native else native  # rate of what we collect
        limit = int(round(max_seconds * rate)) + 64 if max_seconds else None
        # a first guess of the length (a header's duration may be wrong, so at most 2 minutes); buffers grow
        expected = min(int(seconds * rate) + 4096, 120 * rate) if seconds else 10 * rate
        # One segment per output layout (a layout change mid-stream starts a new one), each a (channels, n) buffer
        # the frames' planes are copied into as they decode, mixed down once at the end. Copying at once (not
        # keeping views of the frames) lets FFmpeg reuse its frame buffers: 0.6-0.9 ms less per 3-6 s clip.
        segments = _Segments(min(expected, limit) if limit else expected)
        bad, last_error = 0, ""
        conv: av.AudioResampler | None = None
        direct = None  # True: frames are used as decoded (float planar, <= 2 channels, already at `rate`)

        def take(frames: list) -> None:
            for f in frames:
                segments.add(f.planes, f.samples)

        def usable(frame: av.AudioFrame) -> bool:
            return frame.format.name == "fltp" and frame.layout.nb_channels <= 2 and frame.sample_rate == rate

        def new_converter(frame: av.AudioFrame) -> av.AudioResampler:
            # Mono stays mono, anything wider is mixed to stereo by FFmpeg; the channels are then averaged by us
            # (FFmpeg's own stereo-to-mono mix sums them at -3 dB, 1.41x librosa's mean).
            channels = 1 if frame.layout.nb_channels == 1 else 2
            segments.start(channels)
            return av.AudioResampler(format="fltp", layout="mono" if channels == 1 else "stereo", rate=rate)

        try:
            for packet in c.demux(stream):
                try:
                    frames = packet.decode()
                except (av.error.FFmpegError, ValueError) as e:
                    bad, last_error = bad + 1, str(e)
                    continue
                for frame in frames:
                    if direct is None:
                        direct = usable(frame)
                        if direct:
                            segments.start(len(frame.planes))
                    if direct and usable(frame):  # AAC and most decoders: no conversion needed at all
                        segments.add(frame.planes, frame.samples)
                        continue
                    direct = False
                    if conv is None:
                        conv = new_converter(frame)
                    try:
                        take(conv.resample(frame))
                    except ValueError:  # the stream changed format mid-way: flush, then a fresh converter
                        take(conv.resample(None))
                        conv = new_converter(frame)
                        take(conv.resample(frame))
                if limit is not None and segments.total >= limit:
                    break
        except av.error.FFmpegError as e:  # demuxer gave up (truncated file): keep what decoded
            bad, last_error = bad + 1, str(e)
        if conv is not None:
            take(conv.resample(None))
    if segments.total == 0:
        if bad:
            raise MediaError(path, f"audio stream does not decode: {last_error}")
        return np.zeros(0, np.float32)
    parts = []
    for buf in segments.filled():
        planes = list(buf)
        parts.append(planes[0] if len(planes) == 1 else (sum(planes[1:], planes[0]) / len(planes)))
    audio = np.concatenate(parts).astype(np.float32, copy=False)
    if rate != sr:
        import soxr  # librosa's own resampling backend, installed with it

        audio = soxr.resample(audio, rate, sr, quality="HQ").astype(np.float32, copy=False)
    declared = int(round(seconds * sr))
    if declared and 0 < audio.size - declared <= 0.2 * sr:
        # Decoders emit the encoder's end padding (AAC: up to 2048 samples); the stream's declared duration
        # is where the real audio stops, and where ffmpeg-based readers such as moviepy stop too.
        audio = audio[:declared]
    if max_seconds:
        audio = audio[: int(round(max_seconds * sr))]
    return np.ascontiguousarray(audio)


def video_stream(c: av.container.InputContainer, path: str | os.PathLike, threads: int = 0) -> Any:
    """The container's first video stream, decoding with ``threads`` threads (0: FFmpeg's choice); MediaError when
    there is none."""
    if not c.streams.video:
        raise MediaError(path, "no video stream")
    stream = c.streams.video[0]
    if threads:
        stream.codec_context.thread_count = threads
    return stream


def frame_size(width: int, height: int, size: int | None) -> tuple[int, int]:
    """Output (width, height) for :func:`load_frames`: shorter side scaled to ``size``, aspect kept."""
    if not size or min(width, height) <= 0:
        return width, height
    scale = size / min(width, height)
    return max(1, int(round(width * scale))), max(1, int(round(height * scale)))


def _frame_index(c: av.container.InputContainer, stream: av.video.stream.VideoStream) -> tuple[list, list]:
    """Demuxes (without decoding) the video stream: sorted frame timestamps and keyframe timestamps."""
    pts_all, keys = [], []
    for packet in c.demux(stream):
        if packet.size == 0:
            continue
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is None:
            continue
        pts_all.append(ts)
        if packet.is_keyframe:
            keys.append(ts)
    return sorted(set(pts_all)), sorted(set(keys))


def load_frames(path: str | os.PathLike, n: int, size: int | None = None, *, threads: int = 0) -> np.ndarray:
    """Decodes ``n`` evenly spaced frames as RGB.

    A cheap demux pass (no decoding) lists every frame's timestamp and the keyframes; the picks are the
    frames at the middle of ``n`` equal slices of the clip. The decoder then seeks to the keyframe before each
    pick and decodes forward to it, continuing without a seek when the next pick lies in the same group of
    pictures. A clip with fewer than ``n`` frames repeats frames so the shape is always ``(n, H, W, 3)``.

    Args:
        path: Media file.
        n: Number of frames.
        size: Shorter side of the returned frames (aspect kept, scaled by FFmpeg while converting to RGB);
            None keeps the stored size.
        threads: Decoder threads (0: FFmpeg's choice; worker processes pass 1).

    Returns:
        uint8 array ``(n, H, W, 3)``.

    Raises:
        MediaError: No video stream, or no frame decodes.
    """
    if n <= 0:
        raise ValueError("n must be positive")
    with open_container(path) as c:
        stream = video_stream(c, path, threads)
        cc = stream.codec_context
        try:
            pts, keys = _frame_index(c, stream)
        except av.error.FFmpegError as e:
            raise MediaError(path, f"cannot demux video: {e}") from e
        if not pts:
            raise MediaError(path, "video stream has no frames")
        width, height = frame_size(int(cc.width or 0), int(cc.height or 0), size)
        picks = [pts[min(len(pts) - 1, int((i + 0.5) * len(pts) / n))] for i in range(n)]
        keys = keys or [pts[0]]
        got: dict[int, np.ndarray] = {}
        wanted = sorted(set(picks))

        def convert(frame: av.VideoFrame) -> np.ndarray:
            nonlocal width, height
            if not width or not height:  # size unknown from the header: take it from the first frame
                width, height = frame_size(frame.width, frame.height, size)
            return frame.reformat(width=width, height=height, format="rgb24").to_ndarray()

        # Frames nothing refers to (most B-frames) are not decoded unless picked: exact, and often 30-50% less
        # work. The per-packet switch is only reliable without frame threading (whose threads copy the setting
        # late), so it is used with slice threading (PyAV's default) or a single thread.
        frame_threads = "FRAME" in str(cc.thread_type) and cc.thread_count != 1
        skip_set = None if frame_threads else set(wanted)
        last_pts: int | None = None  # timestamp of the newest decoded frame
        frames_iter = None
        i = 0
        while i < len(wanted):
            target = wanted[i]
            key = keys[max(0, bisect_right(keys, target) - 1)]
            if frames_iter is None or last_pts is None or key > last_pts:
                # Jumping ahead to the keyframe skips decoding everything in between.
                try:
                    c.seek(int(key), stream=stream, backward=True)
                except av.error.FFmpegError:
                    c.seek(0, stream=stream, backward=True)
                cc.flush_buffers()
                frames_iter = _decode(c, stream, skip_set)
            frame = None
            for frame in frames_iter:
                if frame.pts is None:
                    continue
                last_pts = frame.pts
                if frame.pts >= target:
                    break
            else:
                frame = None
                frames_iter = None  # stream ended; a later pick (if any) will re-seek
            if frame is None:
                break  # the stream ended before this pick (damaged tail): later picks reuse the nearest frame
            img = convert(frame)
            # One decoded frame can satisfy several picks (B-frame reordering, duplicates in short clips).
            while i < len(wanted) and wanted[i] <= frame.pts:
                got[wanted[i]] = img
                i += 1
        if not got:
            raise MediaError(path, "no video frame decodes")
        have = sorted(got)
        out = []
        for p in picks:
            if p in got:
                out.append(got[p])
            else:  # a pick that never decoded (damaged tail): use the nearest one that did
                out.append(got[min(have, key=lambda h: abs(h - p))])
    shapes = {a.shape for a in out}
    if len(shapes) > 1:  # resolution changed mid-stream: unify on the first pick's size
        h0, w0 = out[0].shape[:2]
        import cv2  # local import: only this rare path needs OpenCV

        out = [a if a.shape[:2] == (h0, w0) else cv2.resize(a, (w0, h0), interpolation=cv2.INTER_AREA) for a in out]
    return np.stack(out)


def _decode(c: av.container.InputContainer, stream: av.video.stream.VideoStream, keep: set | None = None):
    """Yields decoded frames from the current demux position, skipping packets that fail to decode.

    With ``keep`` (timestamps), non-reference frames whose timestamp is not in it are discarded by the decoder.
    """
    cc = stream.codec_context
    try:
        for packet in c.demux(stream):
            if keep is not None:
                ts = packet.pts if packet.pts is not None else packet.dts
                cc.skip_frame = "DEFAULT" if ts is None or ts in keep else "NONREF"
            try:
                yield from cc.decode(packet)
            except (av.error.FFmpegError, ValueError):
                continue
    except av.error.FFmpegError:
        return
    finally:
        if keep is not None:
            cc.skip_frame = "DEFAULT"
