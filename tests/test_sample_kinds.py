"""The sample's test-only manipulation kinds and its identities (ffdv_utils.sample_data)."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from scipy import ndimage, signal

from ffdv_utils.sample_data.generate import (
    KINDS,
    SPLIT_DIRS,
    TEST_ONLY_KINDS,
    TRAIN_KINDS,
    _plan,
    _render_clip,
)

SEED = 3


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _render(index: int, kind: str, identity: str = "p001", seed: int = SEED) -> tuple[np.ndarray, np.ndarray,
                                                                                       dict[str, Any]]:
    clip = {"index": index, "name": "x", "split": "test", "kind": kind, "target": int(kind != "real"),
            "identity": identity}
    out = _render_clip(clip, seed)
    return np.stack(list(out["frames"])), out["audio"], out["params"]


def _boxes(p: dict[str, Any], shape: tuple[int, ...]) -> tuple[np.ndarray, tuple[slice, slice]]:
    """A mask of everything well outside the face, and the mouth box (frame coordinates)."""
    fx, fy, fh = p["face_x"], p["face_y"], p["face_h"]
    outside = np.ones(shape[1:3], bool)
    outside[max(0, int(fy - 0.7 * fh)):int(fy + 0.7 * fh), max(0, int(fx - 0.7 * fh)):int(fx + 0.7 * fh)] = False
    mouth = (slice(int(fy + 0.19 * fh), int(fy + 0.37 * fh)), slice(int(fx - 0.12 * fh), int(fx + 0.12 * fh)))
    return outside, mouth


def _frame_env(audio: np.ndarray, sr: int, fps: float, n: int) -> np.ndarray:
    """RMS of the (mono) sound over each video frame."""
    mono, hop = audio.mean(axis=0), sr / fps
    return np.array([np.sqrt(np.mean(mono[int(i * hop):int((i + 1) * hop)] ** 2)) for i in range(n)])


def _peak_lag(lum: np.ndarray, env: np.ndarray, max_lag: int = 12) -> int:
    """Frames by which the mouth signal lags the sound at the peak of |cross-correlation| (> 0: mouth late)."""
    a, b = (lum - lum.mean()) / (lum.std() + 1e-9), (env - env.mean()) / (env.std() + 1e-9)
    score = {lag: abs(np.mean(a[lag:] * b[:len(b) - lag]) if lag >= 0 else np.mean(a[:lag] * b[-lag:]))
             for lag in range(-max_lag, max_lag + 1)}
    return max(score, key=score.get)


def _find(kind: str, want: str, start: int = 0) -> int:
    """First clip index from ``start`` whose ``kind`` fake is in mode ``want`` (its ``detail``)."""
    for index in range(start, start + 60):
        if _render_clip({"index": index, "name": "x", "split": "test", "kind": kind, "target": 1,
                         "identity": "p001"}, SEED)["params"]["detail"] == want:
            return index
    raise AssertionError(f"no {kind} clip in mode {want}")


# ----------------------------------------------------------------------------------------------------------------
# Plan: kinds and identities per split


@pytest.mark.parametrize("n", [18, 24, 100, 600])
def test_test_only_kinds_appear_only_in_the_test_split(n: int) -> None:
    plan = _plan(n, seed=0)
    counts = {s: Counter(c["kind"] for c in plan if c["split"] == s) for s in SPLIT_DIRS}
    for split in ("train", "val"):
        assert set(counts[split]) == set(TRAIN_KINDS), (split, counts[split])
    assert set(counts["test"]) == set(KINDS), counts["test"]
    if n == 600:  # the evaluation set: enough reals for TPR at FPR 1e-2, 15 clips of every unseen kind
        assert counts["test"]["real"] >= 100
        assert all(counts["test"][k] >= 15 for k in TEST_ONLY_KINDS), counts["test"]
        assert all(counts["test"][k] >= 13 for k in TRAIN_KINDS[1:]), counts["test"]


def test_test_only_kinds_only_in_the_written_test_split(sample: dict[str, Any]) -> None:
    """The written sample: no test-only kind in the train or val folders or label files."""
    manip = _rows(sample["answers"] / "manipulations.csv")
    by_name = {m["video_name"]: m for m in manip}
    for split, labels in (("train", "train_label.txt"), ("val", "val_label.txt")):
        names = {r["video_name"] for r in _rows(sample["data_root"] / labels)}
        assert names == {p.name for p in (sample["data_root"] / SPLIT_DIRS[split]).glob("*.mp4")}
        assert {by_name[n]["kind"] for n in names} <= set(TRAIN_KINDS)
    test_kinds = {m["kind"] for m in manip if m["split"] == "test"}
    assert set(TEST_ONLY_KINDS) <= test_kinds and set(TRAIN_KINDS) <= test_kinds
    assert all(m["target"] == "1" for m in manip if m["kind"] in TEST_ONLY_KINDS)


@pytest.mark.parametrize("n", [24, 100, 600])
def test_test_identities_unseen_in_train_and_val(n: int) -> None:
    plan = _plan(n, seed=0)
    ids = {s: {c["identity"] for c in plan if c["split"] == s} for s in SPLIT_DIRS}
    assert ids["val"] <= ids["train"]  # train and val share their identities
    own = {i for i in ids["test"] if i.startswith("t")}
    assert own and own.isdisjoint(ids["train"] | ids["val"])
    assert all(i.startswith("p") for i in ids["train"] | ids["val"])
    test = [c["identity"] for c in plan if c["split"] == "test"]
    assert 0.25 <= np.mean([i in ids["train"] for i in test]) <= 0.4  # a third of the test clips: seen people
    per_identity = Counter(c["identity"] for c in plan)
    assert np.median(list(per_identity.values())) >= 3  # an identity is a person filmed several times


def test_identities_recorded_in_the_answers(sample: dict[str, Any]) -> None:
    params = _rows(sample["answers"] / "clip_params.csv")
    manip = {m["video_name"]: m for m in _rows(sample["answers"] / "manipulations.csv")}
    ids = {s: {r["identity"] for r in params if r["split"] == s} for s in SPLIT_DIRS}
    assert ids["val"] <= ids["train"]
    unseen = {r["identity"] for r in params if r["identity_pool"] == "test_only"}
    assert unseen and unseen <= ids["test"] and unseen.isdisjoint(ids["train"] | ids["val"])
    for r in params:
        assert manip[r["video_name"]]["identity"] == r["identity"]
        assert r["identity_pool"] == ("test_only" if r["identity"].startswith("t") else "train_val")
        if r["kind"] in TEST_ONLY_KINDS:
            assert r["fake_params"] and r["detail"], r
        if r["kind"] == "partial":
            start, end = float(r["seg_start"]), float(r["seg_end"])
            assert 0.5 - 1e-6 <= end - start <= 1.5 + 1e-6 and 0 < start and end < float(r["duration"])
        else:
            assert r["seg_start"] == r["seg_end"] == ""


def test_same_identity_same_face_other_identity_other_face() -> None:
    """An identity fixes the face: two clips of one identity show the same skin, other identities others."""

    def skin(index: int, identity: str) -> np.ndarray:
        frames, _, p = _render(index, "real", identity)
        fx, fy, fh = p["face_x"], p["face_y"], p["face_h"]
        # on the face's centre line between nose and mouth: no lighting gradient, no feature
        box = frames[:, int(fy + 0.15 * fh):int(fy + 0.19 * fh), int(fx - 0.04 * fh):int(fx + 0.04 * fh)]
        return np.median(box.reshape(-1, 3).astype(float), axis=0)

    same = [np.abs(skin(i, "p004") - skin(i + 10, "p004")).max() for i in range(3)]
    assert max(same) < 8.0, same
    others = np.stack([skin(20 + i, f"t{i:03d}") for i in range(6)])
    spread = np.abs(others[:, None] - others[None]).max(axis=-1)
    assert np.median(spread[np.triu_indices(6, 1)]) > 15.0, spread


def test_plan_and_rendering_deterministic_for_a_seed() -> None:
    assert _plan(100, 5) == _plan(100, 5)
    assert [c["identity"] for c in _plan(100, 5)] != [c["identity"] for c in _plan(100, 6)]
    for kind in TEST_ONLY_KINDS:
        a, b = _render(4, kind), _render(4, kind)
        assert a[2] == b[2] and np.array_equal(a[1], b[1]) and np.array_equal(a[0], b[0]), kind
        c = _render(4, kind, seed=SEED + 1)
        assert a[1].shape != c[1].shape or not np.allclose(a[1], c[1]), kind


# ----------------------------------------------------------------------------------------------------------------
# Each kind changes what it says, and nothing else


@pytest.mark.parametrize("mode", ["audio", "video", "both"])
def test_partial_fake_differs_from_its_real_clip_only_inside_its_segment(mode: str) -> None:
    index = _find("partial", mode)
    real_v, real_a, p = _render(index, "real")
    fake_v, fake_a, q = _render(index, "partial")
    start, end, sr, fps = q["seg_start"], q["seg_end"], p["sample_rate"], p["fps"]
    assert 0.5 - 1e-6 <= end - start <= 1.5 + 1e-6
    t = np.arange(real_a.shape[1]) / sr
    inside = (t >= start - 0.001) & (t <= end + 0.001 + 8 / sr)  # a stereo channel may lag by 8 samples
    assert np.array_equal(fake_a[:, ~inside], real_a[:, ~inside])
    changed_audio = np.abs(fake_a[:, inside] - real_a[:, inside]).mean() / np.abs(real_a).mean()
    ft = (np.arange(len(real_v)) + 0.5) / fps
    seg = (ft >= start) & (ft < end)
    assert np.array_equal(fake_v[~seg], real_v[~seg])
    fx, fy, fh = p["face_x"], p["face_y"], p["face_h"]
    face = (slice(int(fy - 0.3 * fh), int(fy + 0.4 * fh)), slice(int(fx - 0.3 * fh), int(fx + 0.3 * fh)))
    changed_video = np.abs(fake_v[seg][:, face[0], face[1]].astype(float) - real_v[seg][:, face[0], face[1]]).mean()
    if mode == "video":
        assert np.array_equal(fake_a, real_a) and changed_video > 1.0
    elif mode == "audio":
        assert np.array_equal(fake_v, real_v) and changed_audio > 0.3
    else:
        assert changed_audio > 0.3 and changed_video > 1.0


def test_lpc_voice_resynthesises_the_voice_and_keeps_the_words() -> None:
    for index in range(3):
        real_v, real_a, p = _render(index, "real")
        fake_v, fake_a, q = _render(index, "lpc_voice")
        assert np.array_equal(fake_v, real_v)  # the face is the real one
        assert abs(np.corrcoef(fake_a[0], real_a[0])[0, 1]) < 0.3  # a new waveform ...
        env_r, env_f = (_frame_env(a, p["sample_rate"], 100.0, int(p["duration"] * 100)) for a in (real_a, fake_a))
        assert np.corrcoef(env_r, env_f)[0, 1] > 0.7  # ... with the same words and pauses
        # the harmonic fine structure (log spectrum minus its envelope, 40 ms frames below 4 kHz) is another one
        fine = []
        for a in (real_a, fake_a):
            f, _, z = signal.stft(a[0], p["sample_rate"], nperseg=int(0.04 * p["sample_rate"]))
            fine.append(20 * np.log10(np.abs(z[f < 4000]) + 1e-6))
        speech = fine[0].max(axis=0) > fine[0].max() - 30
        fine = [x[:, speech] - ndimage.uniform_filter1d(x[:, speech], 9, axis=0) for x in fine]
        corr = np.mean([np.corrcoef(fine[0][:, j], fine[1][:, j])[0, 1] for j in range(fine[0].shape[1])])
        assert corr < 0.4, (q["fake_params"], corr)


def test_lag_sync_mouth_follows_the_sound_late() -> None:
    for index in range(4):
        real_v, real_a, p = _render(index, "real")
        fake_v, fake_a, q = _render(index, "lag_sync")
        assert np.array_equal(fake_a, real_a)
        outside, mouth = _boxes(p, real_v.shape)
        assert np.array_equal(fake_v[:, outside], real_v[:, outside])
        env = _frame_env(real_a, p["sample_rate"], p["fps"], len(real_v))
        lum = [v[:, mouth[0], mouth[1]].astype(float).mean(axis=(1, 2, 3)) for v in (real_v, fake_v)]
        assert abs(_peak_lag(lum[0], env)) <= 1, index
        assert _peak_lag(lum[1], env) >= 2, (index, q["fake_params"])


def test_lag_sync_lag_survives_encoding(sample: dict[str, Any]) -> None:
    """In the written (decoded) sample, the lag_sync clip's mouth peaks late; real clips' do not."""
    params = _rows(sample["answers"] / "clip_params.csv")
    lags: dict[str, list[int]] = {"real": [], "lag_sync": []}
    for row in params:
        if row["kind"] not in lags:
            continue
        fx, fy, fh = (float(row[k]) for k in ("face_x", "face_y", "face_h"))
        path = sample["data_root"] / SPLIT_DIRS[row["split"]] / row["video_name"]
        with av.open(str(path)) as container:
            lum = np.array([f.to_ndarray(format="gray")[int(fy + 0.19 * fh):int(fy + 0.37 * fh),
                                                        int(fx - 0.12 * fh):int(fx + 0.12 * fh)].mean()
                            for f in container.decode(video=0)])
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            sr, ch = stream.codec_context.sample_rate, stream.codec_context.channels
            chunks = [a if f.format.is_planar else a.reshape(-1, ch).T
                      for f in container.decode(stream) for a in [f.to_ndarray()]]
        audio = np.concatenate(chunks, axis=1).astype(np.float32)
        lags[row["kind"]].append(_peak_lag(lum, _frame_env(audio, sr, float(row["fps"]), len(lum))))
    assert lags["lag_sync"] and all(lag >= 2 for lag in lags["lag_sync"]), lags
    assert np.mean([abs(lag) <= 1 for lag in lags["real"]]) >= 0.75, lags


def test_reenact_opens_a_closed_mouth_by_warping() -> None:
    for index in range(3):
        real_v, real_a, p = _render(index, "real")
        fake_v, fake_a, q = _render(index, "reenact")
        assert np.array_equal(fake_a, real_a)  # the voice is the real one
        outside, mouth = _boxes(p, real_v.shape)
        assert np.array_equal(fake_v[:, outside], real_v[:, outside])
        env = _frame_env(real_a, p["sample_rate"], p["fps"], len(real_v))
        speaking = env > np.percentile(env, 70)
        darkest = [v[:, mouth[0], mouth[1]].astype(float).mean(axis=-1).reshape(len(v), -1).min(axis=1)
                   for v in (real_v, fake_v)]
        # a real open mouth shows its dark cavity; a warped closed mouth only stretches the lips
        assert np.median(darkest[1][speaking]) > np.median(darkest[0][speaking]) + 12, (index, q["fake_params"])
        # the face geometry jitters from frame to frame: the eye band moves although the real one holds still
        fx, fy, fh = p["face_x"], p["face_y"], p["face_h"]
        eyes = (slice(int(fy - 0.15 * fh), int(fy - 0.02 * fh)), slice(int(fx - 0.25 * fh), int(fx + 0.25 * fh)))
        assert np.abs(fake_v[:, eyes[0], eyes[1]].astype(float) - real_v[:, eyes[0], eyes[1]]).mean() > 1.0
