"""Face detectors: MTCNN on the sample's synthetic faces, eye-aligned and mouth crops, landmarks in the cache, the
haar / center entries and cache keys as before, and no download or extra torch thread at run time."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from ffdv_utils.core.config import params_hash
from ffdv_utils.features import faces as F
from ffdv_utils.features.cache import FaceStore
from ffdv_utils.features.extract import extract_faces
from ffdv_utils.features.params import MTCNN_FIELDS, face_params
from ffdv_utils.media.decode import load_frames
from ffdv_utils.sample_data.clips import make_clip

MTCNN = {"face_detector": "mtcnn"}


@pytest.fixture(scope="module")
def sample_clips(sample: dict) -> pd.DataFrame:
    """Every clip of the session's sample dataset (24 synthetic talking faces, 360p to 720p)."""
    paths = sorted(Path(sample["data_root"]).glob("*/*.mp4"))
    return pd.DataFrame({"video_name": [p.name for p in paths], "path": [str(p) for p in paths]})


@pytest.fixture(scope="module")
def noface(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("noface") / "noface.mp4", seconds=1.0, width=320, height=240,
                     face=False)


@pytest.fixture()
def one_torch_thread():
    """MTCNN on one torch thread, as extraction workers run it (2 threads on a busy 2-core machine: 15x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------------------- params


def test_haar_and_center_cache_keys_unchanged_and_mtcnn_fields() -> None:
    # the keys of the default haar / center caches before the MTCNN fields existed: old caches stay valid
    assert params_hash(face_params({})) == "64c17d80aa21"
    assert params_hash(face_params({"face_detector": "center"})) == "58158b94ddf6"
    assert params_hash(face_params({"face_frames": 2, "face_size": 32})) == "21c9f7f5b59f"
    assert not set(MTCNN_FIELDS) & set(face_params({}))
    fp = face_params({**MTCNN, "face_mouth_size": 40})
    assert fp["mouth_size"] == 40 and fp["detect_frames"] == 4 and fp["device"] == "cpu"
    assert face_params(fp) == fp and params_hash(fp) != params_hash(face_params(MTCNN))
    with pytest.warns(UserWarning, match="only apply to face_detector 'mtcnn'"):
        face_params({"face_mouth_size": 40})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        face_params({"face_mouth_size": 48})  # the default: nothing to warn about
    for bad in ({"face_device": "tpu"}, {"face_smooth": 0}, {"face_detect_frames": -1}, {"face_mouth_scale": 0}):
        with pytest.raises(ValueError):
            face_params({**MTCNN, **bad})
    with pytest.raises(ValueError, match="haar, center, mtcnn"):
        face_params({"face_detector": "dlib"})


# ----------------------------------------------------------------------------------------------------- geometry


def _dots(h: int, w: int, pts: np.ndarray) -> np.ndarray:
    """A grey frame with a coloured dot at each landmark (eyes red / green, nose blue, mouth corners yellow / cyan)."""
    frame = np.full((h, w, 3), 90, np.uint8)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    for (x, y), c in zip(pts, colours):
        cv2.circle(frame, (int(round(x * 16)), int(round(y * 16))), 3 * 16, c, -1, cv2.LINE_AA, shift=4)
    return frame


def _centroid(img: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    mask = (np.abs(img.astype(int) - colour).sum(-1) < 120).astype(float)
    assert mask.sum() > 0, f"no {colour} dot in the crop"
    ys, xs = np.indices(mask.shape)
    return np.array([(xs * mask).sum(), (ys * mask).sum()]) / mask.sum()


def test_aligned_crop_levels_the_eyes_and_mouth_crop_is_centred() -> None:
    # a face tilted by 20 degrees, eyes 60 px apart, at a known place in a 480x360 frame
    a = np.deg2rad(20)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    shape = np.array([[-30, 0], [30, 0], [0, 34], [-24, 69], [24, 69]], float)
    pts = shape @ rot.T + [230, 150]
    frames = np.stack([_dots(360, 480, pts)] * 3)
    fp = face_params(MTCNN)
    out = F.aligned_crops(frames, np.repeat(pts[None], 3, 0), fp)
    s, m = fp["size"], fp["mouth_size"]
    assert out["faces"].shape == (3, s, s, 3) and out["mouths"].shape == (3, m, m, 3)
    assert out["landmarks"].shape == (3, 5, 2) and out["landmarks"].dtype == np.float32
    tx, ty, span = F._face_template(fp)
    lm = out["landmarks"][0]
    np.testing.assert_allclose(lm[:2], [[tx - span / 2, ty], [tx + span / 2, ty]], atol=1e-3)  # level, in place
    # the pixels agree with the landmarks: the dots are where the landmarks say, the eyes level within a pixel
    left, right = _centroid(out["faces"][0], (255, 0, 0)), _centroid(out["faces"][0], (0, 255, 0))
    assert abs(left[1] - right[1]) < 1.0 and np.abs(left - lm[0]).max() < 1.0 and np.abs(right - lm[1]).max() < 1.0
    # mouth crop: the corners lie symmetric about its centre, level, 1 / mouth_scale of its side apart
    ml, mr = _centroid(out["mouths"][0], (255, 255, 0)), _centroid(out["mouths"][0], (0, 255, 255))
    centre = (m - 1) / 2
    np.testing.assert_allclose((ml + mr) / 2, [centre, centre], atol=1.0)
    assert abs(ml[1] - mr[1]) < 1.0
    assert abs((mr[0] - ml[0]) - m / fp["mouth_scale"]) < 1.5


def test_smoothing_and_box_interpolation() -> None:
    x = np.array([[0.0], [3.0], [0.0], [3.0]])
    np.testing.assert_allclose(F._smooth(x, 3)[:, 0], [1.5, 1.0, 2.0, 1.5])
    np.testing.assert_array_equal(F._smooth(x, 1), x)
    boxes = F._interpolate_boxes({1: np.array([10.0, 20, 30]), 3: np.array([14.0, 20, 34])}, 5)
    np.testing.assert_allclose(boxes[:, 0], [10, 10, 12, 14, 14])  # carried before the first, after the last
    assert F._key_frames(16, 4) == [0, 5, 10, 15] and F._key_frames(3, 4) == [0, 1, 2] and F._key_frames(5, 0) == [
        0, 1, 2, 3, 4]


# ----------------------------------------------------------------------------------------------------- MTCNN on clips


def test_mtcnn_finds_the_sample_faces_with_level_eyes(sample_clips: pd.DataFrame, one_torch_thread: None
                                                      ) -> None:
    # the target: a face in >= 98 % of the sample's frames (measured: every frame of the 24 clips)
    fp = face_params(MTCNN)
    found, dy, eyes = [], [], []
    for path in sample_clips.path:
        entry = F.face_entry(load_frames(path, fp["frames"], fp["work_size"], threads=1), fp)
        found.append(entry["found"])
        lm = entry["landmarks"][entry["found"]]
        dy.append(np.abs(lm[:, 0, 1] - lm[:, 1, 1]))
        eyes.append(lm[:, :2])
    share = float(np.concatenate(found).mean())
    assert share >= 0.98, f"MTCNN found a face in {share:.1%} of the sample's frames"
    # eyes level after alignment (the smoothing leaves a residual tilt of a pixel or two at most)
    assert np.percentile(np.concatenate(dy), 95) < 1.5 and np.concatenate(dy).max() < 3.0
    tx, ty, span = F._face_template(fp)
    np.testing.assert_allclose(np.concatenate(eyes).mean(0), [[tx - span / 2, ty], [tx + span / 2, ty]], atol=1.5)


def test_mtcnn_cache_round_trip_haar_entries_and_centre_fallback(sample_clips: pd.DataFrame, noface: Path,
                                                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    import torch

    zero = tmp_path / "zero.mp4"
    zero.write_bytes(b"")
    clips = pd.concat([sample_clips[:2], pd.DataFrame({"video_name": ["noface.mp4", "zero.mp4"],
                                                       "path": [str(noface), str(zero)]})], ignore_index=True)
    # one worker runs in this process: MTCNN must run on one torch thread there, and the count come back after
    threads_seen = []
    real = F.mtcnn_landmarks

    def spy(frames: np.ndarray, fp: dict) -> tuple[np.ndarray, np.ndarray]:
        threads_seen.append(torch.get_num_threads())
        return real(frames, fp)

    monkeypatch.setattr(F, "mtcnn_landmarks", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    params = {**MTCNN, "face_frames": 6}
    store = extract_faces(clips, params, tmp_path, workers=1, progress=False)
    assert threads_seen == [1, 1, 1] and torch.get_num_threads() == 2
    fp = face_params(params)
    assert isinstance(store, FaceStore) and store.has_landmarks and store.params == fp
    name, path = clips.video_name[0], clips.path[0]
    torch.set_num_threads(1)  # as in extraction: another thread count changes float sums in the last bits
    expected = F.face_entry(load_frames(path, 6, fp["work_size"], threads=1), fp)
    torch.set_num_threads(2)
    entry = store.entry(name)
    assert set(entry) == {"faces", "found", "mouths", "landmarks", "landmarks_frame"}
    for key, value in expected.items():
        np.testing.assert_array_equal(entry[key], value, err_msg=key)
    assert store.get(name).shape == (6, 112, 112, 3) and store.face_found(name).all()
    assert store.mouths(name).shape == (6, 48, 48, 3) and store.mouths(name).dtype == np.uint8
    assert store.landmarks(name).shape == (6, 5, 2) and store.landmarks(name).dtype == np.float32
    np.testing.assert_array_equal(store.landmarks(name, frame=True), expected["landmarks_frame"])
    # no face anywhere: the centre crop (as detector center gives it), flags False, the mean face's landmarks
    frames = load_frames(str(noface), 6, fp["work_size"], threads=1)
    assert not store.face_found("noface.mp4").any()
    np.testing.assert_array_equal(store.get("noface.mp4"), F.face_crops(frames, face_params(
        {"face_detector": "center", "face_frames": 6}))[0])
    lm = store.landmarks("noface.mp4")
    assert np.isfinite(lm).all() and np.ptp(lm, axis=0).max() < 1e-3 and abs(lm[0, 0, 1] - lm[0, 1, 1]) < 1e-3
    assert store.mouths("noface.mp4").any()
    # a failed clip: zeros of the right shapes, like get()
    assert store.status("zero.mp4") == "error" and store.entry("zero.mp4") is None
    assert not store.mouths("zero.mp4").any() and store.mouths("zero.mp4").shape == (6, 48, 48, 3)
    assert not store.landmarks("zero.mp4").any() and store.landmarks("zero.mp4").shape == (6, 5, 2)
    # haar and center entries: faces and found only, as before; the new readers say there is nothing
    for det in ("haar", "center"):
        other = extract_faces(clips[:1], {"face_detector": det, "face_frames": 6}, tmp_path, workers=1,
                              progress=False)
        assert set(other.entry(name)) == {"faces", "found"} and not other.has_landmarks
        assert other.mouths(name) is None and other.landmarks(name) is None
        frames = load_frames(path, 6, fp["work_size"], threads=1)
        np.testing.assert_array_equal(other.get(name), F.face_crops(frames, other.params)[0])
    torch.set_num_threads(before)


def test_mtcnn_worker_offline_and_on_one_thread(sample_clips: pd.DataFrame) -> None:
    # A fresh interpreter with every socket connection refused: building MTCNN and detecting must not need the
    # network (weights come from the wheel), and a pool worker's torch runs on one thread.
    code = textwrap.dedent(f"""
        import socket, sys
        def refuse(*a, **k):
            raise OSError("network use at run time")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        import ffdv_utils.features.extract as E
        assert "torch" not in sys.modules
        from ffdv_utils.features.params import face_params
        from ffdv_utils.media.decode import load_frames
        fp = face_params({{"face_detector": "mtcnn"}})
        E._init_worker("faces", fp, ".")
        import torch
        frames = load_frames({sample_clips.path[0]!r}, 4, 360, threads=1)
        entry = E.face_entry(frames, fp)
        print(torch.get_num_threads(), int(entry["found"].sum()))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "4"]
