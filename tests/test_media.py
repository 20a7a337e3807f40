"""Tests for ffdv_utils.media on tiny clips written with PyAV."""

from __future__ import annotations

import pickle
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from ffdv_utils.media.decode import MediaError, load_audio, load_frames, probe_video
from ffdv_utils.sample_data.clips import make_clip


def _index_clip(path: Path, n_frames: int, keyint: int, bframes: bool = True) -> Path:
    """A clip whose frame i is a flat grey of level 8 * (i % 30) + 8, so a decoded frame names its index."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        vs.options = {"g": str(keyint), "keyint_min": str(keyint), "bf": "3" if bframes else "0", "crf": "10",
                      "sc_threshold": "0"}
        for i in range(n_frames):
            img = np.full((48, 64, 3), 8 * (i % 30) + 8, np.uint8)
            for pkt in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in vs.encode(None):
            out.mux(pkt)
    return path


def _all_frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    out = {
        "normal": make_clip(d / "normal.mp4", seconds=2.0, width=160, height=120),
        "mono_mpeg4": make_clip(d / "mono.mp4", seconds=1.0, vcodec="mpeg4", channels=1, sample_rate=48000),
        "no_audio": make_clip(d / "noaudio.mp4", seconds=1.0, audio=False),
        "audio_only": make_clip(d / "audio.m4a", seconds=1.0, video=False),
        "short": make_clip(d / "short.mp4", seconds=0.12),
        "zero": d / "zero.mp4",
        "garbage": d / "garbage.mp4",
    }
    out["zero"].write_bytes(b"")
    out["garbage"].write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    return out


def test_probe_normal_and_no_audio(clips: dict[str, Path]) -> None:
    info = probe_video(clips["normal"])
    assert info["error"] == ""
    assert info["video_name"] == "normal.mp4"
    assert (info["width"], info["height"], info["video_codec"]) == (160, 120, "h264")
    assert info["fps"] == pytest.approx(25.0)
    assert info["n_frames"] == 50
    assert info["duration"] == pytest.approx(2.0, abs=0.05)
    assert info["has_audio"] and info["audio_codec"] == "aac"
    assert (info["sample_rate"], info["channels"]) == (44100, 2)
    assert info["audio_duration"] == pytest.approx(2.0, abs=0.05)
    assert info["size_bytes"] == clips["normal"].stat().st_size
    none = probe_video(clips["no_audio"])
    assert none["error"] == "" and not none["has_audio"] and none["audio_codec"] == "" and none["width"] == 160


@pytest.mark.parametrize("kind", ["zero", "garbage"])
def test_probe_bad_files_do_not_raise(clips: dict[str, Path], kind: str) -> None:
    info = probe_video(clips[kind])
    assert info["error"]
    assert info["width"] == 0 and not info["has_audio"]


def test_probe_missing_file() -> None:
    assert "not found" in probe_video("/nonexistent/clip.mp4")["error"]


def test_load_audio_rate_length_and_mono(clips: dict[str, Path]) -> None:
    a = load_audio(clips["normal"], 16000)
    assert a.dtype == np.float32 and a.ndim == 1
    assert a.size == 32000  # encoder padding past the declared duration is dropped
    assert 0.1 < np.abs(a).max() <= 1.0
    b = load_audio(clips["normal"], 22050, max_seconds=0.5)
    assert b.size == 11025
    c = load_audio(clips["normal"], 16000, resampler="ffmpeg")
    assert c.size == a.size
    # Two resamplers, same signal: they agree except near Nyquist.
    assert np.corrcoef(a[1000:-1000], c[1000:-1000])[0, 1] > 0.99
    m = load_audio(clips["mono_mpeg4"], 16000)
    assert m.size == 16000


def test_load_audio_stereo_is_channel_mean(tmp_path: Path) -> None:
    # Left and right differ; librosa.load averages them, and so must we (FFmpeg's own mono mix does not).
    path = tmp_path / "lr.mp4"
    sr = 16000
    t = np.arange(sr) / sr
    with av.open(str(path), "w") as out:
        s = out.add_stream("aac", rate=sr)
        s.layout = "stereo"
        data = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), np.zeros_like(t)]).astype(np.float32)
        for start in range(0, sr, 1024):
            fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, start:start + 1024]), format="fltp",
                                            layout="stereo")
            fr.sample_rate, fr.pts, fr.time_base = sr, start, Fraction(1, sr)
            for pkt in s.encode(fr):
                out.mux(pkt)
        for pkt in s.encode(None):
            out.mux(pkt)
    a = load_audio(path, sr)
    rms = float(np.sqrt(np.mean(a[2000:-2000] ** 2)))
    assert rms == pytest.approx(0.25 / np.sqrt(2), rel=0.05)


def test_load_audio_no_audio_is_empty(clips: dict[str, Path]) -> None:
    a = load_audio(clips["no_audio"], 16000)
    assert a.shape == (0,) and a.dtype == np.float32


@pytest.mark.parametrize("kind", ["zero", "garbage"])
def test_load_audio_bad_file_raises_media_error(clips: dict[str, Path], kind: str) -> None:
    with pytest.raises(MediaError) as info:
        load_audio(clips[kind], 16000)
    assert str(clips[kind]) in str(info.value)
    assert isinstance(info.value, RuntimeError)


def test_media_error_pickles() -> None:
    e = pickle.loads(pickle.dumps(MediaError("/x/y.mp4", "broken")))
    assert (e.path, e.message, str(e)) == ("/x/y.mp4", "broken", "/x/y.mp4: broken")


def test_load_audio_short_clip(clips: dict[str, Path]) -> None:
    a = load_audio(clips["short"], 16000)
    assert 0 < a.size <= 0.2 * 16000


@pytest.mark.parametrize("keyint,bframes", [(250, True), (10, True), (1, False), (7, False)])
def test_load_frames_picks_exact_frames(tmp_path: Path, keyint: int, bframes: bool) -> None:
    # Seeking plus forward decoding must return exactly the frames a full sequential decode has at the picks.
    path = _index_clip(tmp_path / "idx.mp4", 60, keyint, bframes)
    full = _all_frames(path)
    n = 8
    got = load_frames(path, n)
    picks = [int((i + 0.5) * len(full) / n) for i in range(n)]
    assert got.shape == (n, 48, 64, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, full[picks])
    levels = np.rint((got[:, 24, 32, 1].astype(float) - 8) / 8).astype(int)
    assert list(levels) == [p % 30 for p in picks]


def test_load_frames_size_short_clip_and_codecs(clips: dict[str, Path]) -> None:
    f = load_frames(clips["normal"], 4, size=60)
    assert f.shape == (4, 60, 80, 3)
    short = load_frames(clips["short"], 8)  # 3 frames: picks repeat, shape stays (n, ...)
    assert short.shape == (8, 120, 160, 3)
    assert len({a.tobytes() for a in short}) <= 3
    assert load_frames(clips["mono_mpeg4"], 5).shape == (5, 120, 160, 3)
    assert load_frames(clips["no_audio"], 2).shape[0] == 2


@pytest.mark.parametrize("kind", ["zero", "garbage", "audio_only"])
def test_load_frames_without_video_raises(clips: dict[str, Path], kind: str) -> None:
    with pytest.raises(MediaError):
        load_frames(clips[kind], 4)
