"""Tests of the embedded sample dataset generator (ffdv_utils.sample_data)."""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ffdv_utils.cli.main import add_sample_data_parser
from ffdv_utils.sample_data.generate import (
    FAKE_KINDS,
    KINDS,
    MAX_LEAD_S,
    MIN_CLIPS,
    SPLIT_DIRS,
    TRAIN_KINDS,
    _make_clip,
    _plan,
    _render_clip,
    make_sample_dataset,
)

SMALL_N, SMALL_SEED = 24, 1
AUDIT_N, AUDIT_SEED = 100, 0


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _clip_path(data_root: Path, split: str, name: str) -> Path:
    return data_root / SPLIT_DIRS[split] / name


def _decode_audio(path: Path) -> tuple[np.ndarray, int, int]:
    """All audio samples as (channels, n) float32, the sample rate and the channel count."""
    chunks = []
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        sr, ch = stream.codec_context.sample_rate, stream.codec_context.channels
        for frame in container.decode(stream):
            arr = frame.to_ndarray()
            chunks.append(arr if frame.format.is_planar else arr.reshape(-1, ch).T)
    return np.concatenate(chunks, axis=1).astype(np.float32), sr, ch


def _leading_silence(mono: np.ndarray, sr: int) -> float:
    """Seconds until the first 10 ms window louder than 10 % of the clip's 95th-percentile window RMS."""
    win = max(1, sr // 100)
    n = len(mono) // win
    rms = np.sqrt(np.mean(mono[: n * win].reshape(n, win) ** 2, axis=1))
    return float(np.argmax(rms > 0.1 * np.percentile(rms, 95)) * win / sr)


def _probe(path: Path, count_frames: bool = True) -> dict[str, Any]:
    with av.open(str(path)) as container:
        vs, aus = container.streams.video[0], container.streams.audio[0]
        info = {
            "video_codec": vs.codec_context.name, "audio_codec": aus.codec_context.name,
            "width": vs.codec_context.width, "height": vs.codec_context.height, "fps": float(vs.average_rate),
            "duration": float(container.duration) / 1e6,
        }
        info["n_frames"] = sum(1 for _ in container.decode(video=0)) if count_frames else vs.frames
    audio, sr, ch = _decode_audio(path)
    info.update({"sample_rate": sr, "channels": ch, "audio_duration": audio.shape[1] / sr,
                 "lead": _leading_silence(audio.mean(axis=0), sr), "size": path.stat().st_size})
    return info


@pytest.fixture(scope="session")
def small(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_sample_dataset(tmp_path_factory.mktemp("sample_small"), n=SMALL_N, seed=SMALL_SEED, progress=False)


@pytest.fixture(scope="session")
def audit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The n=100 set: drawn parameters of every clip, overwritten by what is measured in the written file."""
    res = make_sample_dataset(tmp_path_factory.mktemp("sample_audit"), n=AUDIT_N, seed=AUDIT_SEED, progress=False)
    rows = _rows(res["answers_dir"] / "clip_params.csv")
    for row in rows:
        row.update(_probe(_clip_path(res["data_root"], row["split"], row["video_name"]), count_frames=False))
    return {**res, "rows": rows}


def test_layout_and_label_files(small: dict[str, Any]) -> None:
    data, answers = small["data_root"], small["answers_dir"]
    assert small["errors"] == []
    assert data.parent == answers.parent and answers.name == "answers" and data.name == "data"
    for sub in SPLIT_DIRS.values():
        assert (data / sub).is_dir()
    assert list(data.rglob("*.part")) == [] and list(data.rglob("*.tmp")) == []
    # nothing in the data folder gives the test answers away
    assert not list(data.rglob("test_label*")) and not list(data.rglob("manipulations*"))

    manip = _rows(answers / "manipulations.csv")
    assert list(manip[0].keys()) == ["video_name", "split", "target", "kind", "identity"]
    assert len(manip) == SMALL_N
    for split, label_file in (("train", data / "train_label.txt"), ("val", data / "val_label.txt"),
                              ("test", answers / "test_label.txt")):
        rows = _rows(label_file)
        assert list(rows[0].keys()) == ["video_name", "target"]
        files = sorted(p.name for p in (data / SPLIT_DIRS[split]).glob("*.mp4"))
        assert sorted(r["video_name"] for r in rows) == files
        expected = {m["video_name"]: m["target"] for m in manip if m["split"] == split}
        assert {r["video_name"]: r["target"] for r in rows} == expected
    template = _rows(data / "test_template.csv")
    assert list(template[0].keys()) == ["video_name", "score"]
    assert all(r["score"] in ("", "0") for r in template)
    assert sorted(r["video_name"] for r in template) == sorted(p.name for p in (data / "testset").glob("*.mp4"))


def test_names_targets_and_kinds(small: dict[str, Any]) -> None:
    manip = _rows(small["answers_dir"] / "manipulations.csv")
    names = [m["video_name"] for m in manip]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[0-9a-f]{8}\.mp4", n) for n in names)
    for m in manip:
        assert m["kind"] in KINDS and m["target"] == ("0" if m["kind"] == "real" else "1")
    counts = small["counts"]
    for split in SPLIT_DIRS:
        for kind in KINDS if split == "test" else TRAIN_KINDS:  # test-only kinds: tests/test_sample_kinds.py
            assert counts[split][kind] >= 1, (split, kind)
        rows = [m for m in manip if m["split"] == split]
        assert counts[split]["total"] == len(rows)
    assert 0.45 <= counts["train"]["total"] / SMALL_N <= 0.7
    fake = sum(m["target"] == "1" for m in manip) / SMALL_N
    assert 0.4 <= fake <= 0.7


def test_files_decode_as_h264_aac(small: dict[str, Any]) -> None:
    params = {r["video_name"]: r for r in _rows(small["answers_dir"] / "clip_params.csv")}
    for name, p in params.items():
        info = _probe(_clip_path(small["data_root"], p["split"], name))
        assert info["video_codec"] == "h264" and info["audio_codec"] == "aac", name
        assert (info["width"], info["height"]) == (int(p["width"]), int(p["height"]))
        assert info["n_frames"] == int(p["n_frames"]) and info["fps"] == pytest.approx(float(p["fps"]))
        assert info["sample_rate"] == int(p["sample_rate"]) and info["channels"] == int(p["channels"])
        assert 1.9 <= info["n_frames"] / info["fps"] <= 4.1
        # AAC adds priming and pads the last frame, but the sound must cover the picture
        assert abs(info["audio_duration"] - info["n_frames"] / info["fps"]) < 0.12, name


def test_deterministic_for_a_seed(small: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> None:
    again = make_sample_dataset(tmp_path_factory.mktemp("sample_again"), n=SMALL_N, seed=SMALL_SEED, progress=False)
    for rel in ("data/train_label.txt", "data/val_label.txt", "data/test_template.csv", "answers/test_label.txt",
                "answers/manipulations.csv", "answers/clip_params.csv"):
        a = (small["data_root"].parent / rel).read_text()
        b = (again["data_root"].parent / rel).read_text()
        assert a == b, rel
    for row in _rows(small["answers_dir"] / "manipulations.csv"):
        pa = _clip_path(small["data_root"], row["split"], row["video_name"])
        pb = _clip_path(again["data_root"], row["split"], row["video_name"])
        assert np.array_equal(_decode_audio(pa)[0], _decode_audio(pb)[0]), row["video_name"]
        with av.open(str(pa)) as ca, av.open(str(pb)) as cb:
            fa = np.stack([f.to_ndarray(format="rgb24") for _, f in zip(range(12), ca.decode(video=0))])
            fb = np.stack([f.to_ndarray(format="rgb24") for _, f in zip(range(12), cb.decode(video=0))])
        # the rendered frames are identical (next test); libx264 itself is not always bit-repeatable, so the
        # decoded pictures may differ by coding noise (~0.3 grey levels), far below what another clip would give
        assert fa.shape == fb.shape and np.abs(fa.astype(np.float32) - fb).mean() < 1.0, row["video_name"]
    other = {c["name"] for c in _plan(SMALL_N, SMALL_SEED + 1)}
    assert other.isdisjoint(c["name"] for c in _plan(SMALL_N, SMALL_SEED))


def test_rendering_is_exactly_repeatable() -> None:
    clip = _plan(SMALL_N, SMALL_SEED)[3]
    first, second = _render_clip(clip, SMALL_SEED), _render_clip(clip, SMALL_SEED)
    assert first["params"] == second["params"]
    assert np.array_equal(first["audio"], second["audio"])
    assert all(np.array_equal(a, b) for a, b in zip(first["frames"], second["frames"]))
    other = _render_clip(clip, SMALL_SEED + 1)
    assert first["audio"].shape != other["audio"].shape or not np.allclose(first["audio"], other["audio"])


def _render(index: int, kind: str, n_frames: int = 40) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    clip = {"index": index, "name": "x", "split": "train", "kind": kind, "target": int(kind != "real")}
    out = _render_clip(clip, seed=123)
    frames = [f for _, f in zip(range(n_frames), out["frames"])]
    return np.stack(frames), out["audio"], out["params"]


@pytest.mark.parametrize("index", [0, 1])
def test_each_fake_kind_manipulates_what_it_claims(index: int) -> None:
    """Render one clip as real and as each fake: only the claimed modality may change."""
    real_v, real_a, p = _render(index, "real")
    fx, fy, fh = p["face_x"], p["face_y"], p["face_h"]
    # outside a generous box around the face nothing may change (the fakes touch the face or the sound only)
    outside = np.ones(real_v.shape[1:3], bool)
    outside[max(0, int(fy - 0.7 * fh)):int(fy + 0.7 * fh), max(0, int(fx - 0.7 * fh)):int(fx + 0.7 * fh)] = False
    face = (slice(int(fy - 0.3 * fh), int(fy + 0.4 * fh)), slice(int(fx - 0.3 * fh), int(fx + 0.3 * fh)))
    mouth = (slice(int(fy + 0.19 * fh), int(fy + 0.37 * fh)), slice(int(fx - 0.12 * fh), int(fx + 0.12 * fh)))

    audio_v, audio_a, _ = _render(index, "audio")
    assert audio_a.shape == real_a.shape
    assert abs(np.corrcoef(audio_a[0], real_a[0])[0, 1]) < 0.8  # the waveform is resynthesised
    assert np.array_equal(audio_v[:, outside], real_v[:, outside])

    vis_v, vis_a, _ = _render(index, "visual")
    assert np.array_equal(vis_a, real_a)
    assert np.array_equal(vis_v[:, outside], real_v[:, outside])
    diff = np.abs(vis_v[:, face[0], face[1]].astype(float) - real_v[:, face[0], face[1]]).mean()
    assert diff > 2.0

    mis_v, mis_a, _ = _render(index, "av_mismatch")
    assert np.array_equal(mis_a, real_a)  # the same natural sound ...
    assert np.array_equal(mis_v[:, outside], real_v[:, outside])
    lum_real = real_v[:, mouth[0], mouth[1]].astype(float).mean(axis=(1, 2, 3))
    lum_mis = mis_v[:, mouth[0], mouth[1]].astype(float).mean(axis=(1, 2, 3))
    assert np.abs(lum_real - lum_mis).max() > 3.0  # ... with another mouth movement


def test_lip_sync_follows_sound_except_in_mismatch(audit: dict[str, Any]) -> None:
    """Mouth-region brightness tracks the loudness of the sound in real clips, not in av_mismatch clips."""
    corr: dict[str, list[float]] = {k: [] for k in KINDS}
    for row in audit["rows"]:
        if row["kind"] not in ("real", "av_mismatch") or len(corr[row["kind"]]) >= 12:
            continue
        path = _clip_path(audit["data_root"], row["split"], row["video_name"])
        fx, fy, fh = (float(row[k]) for k in ("face_x", "face_y", "face_h"))
        lum = []
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                g = frame.to_ndarray(format="gray")
                lum.append(g[int(fy + 0.19 * fh):int(fy + 0.37 * fh), int(fx - 0.12 * fh):int(fx + 0.12 * fh)].mean())
        audio, sr, _ = _decode_audio(path)
        mono, hop = audio.mean(axis=0), sr / row["fps"]
        env = [np.sqrt(np.mean(mono[int(i * hop):int((i + 1) * hop)] ** 2)) for i in range(len(lum))]
        # open mouths are darker (cavity) or brighter (teeth on dark skin): the sign varies, the magnitude not
        corr[row["kind"]].append(abs(np.corrcoef(lum, env)[0, 1]))
    assert np.median(corr["real"]) > 0.5
    assert np.median(corr["av_mismatch"]) < 0.3


def test_faces_detectable_by_haar_cascade(small: dict[str, Any]) -> None:
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    hits: dict[str, list[bool]] = {k: [] for k in KINDS}
    for row in _rows(small["answers_dir"] / "manipulations.csv"):
        with av.open(str(_clip_path(small["data_root"], row["split"], row["video_name"]))) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i % 25 == 10:
                    gray = frame.to_ndarray(format="gray")
                    # faces are a third of the frame height or more: skip the small scales to save time
                    small_side = max(24, min(gray.shape) // 5)
                    faces = cascade.detectMultiScale(gray, 1.1, 5, minSize=(small_side, small_side))
                    hits[row["kind"]].append(len(faces) > 0)
    rates = {k: float(np.mean(v)) for k, v in hits.items()}
    assert np.mean(sum(hits.values(), [])) >= 0.85, rates
    # whether a face is found must not say much about the label either
    assert max(rates.values()) - min(rates.values()) <= 0.35, rates


SHORTCUT_FEATURES = ("duration", "size", "width", "height", "fps", "sample_rate", "channels", "lead")


@pytest.mark.parametrize("feature", SHORTCUT_FEATURES)
def test_no_metadata_shortcut(audit: dict[str, Any], feature: str) -> None:
    """No container/format property and no leading silence alone separates fakes from reals."""
    y = [int(r["target"]) for r in audit["rows"]]
    x = [float(r[feature]) for r in audit["rows"]]
    auc = roc_auc_score(y, x)
    assert max(auc, 1.0 - auc) <= 0.7, f"{feature}: AUC {auc:.3f}"


def test_every_clip_starts_with_short_silence(audit: dict[str, Any]) -> None:
    leads = np.array([r["lead"] for r in audit["rows"]])
    assert leads.max() <= MAX_LEAD_S + 0.05
    assert leads.min() < 0.05 and leads.max() > 0.2  # drawn over the whole range, for reals and fakes alike
    for target in ("0", "1"):
        sel = leads[[r["target"] == target for r in audit["rows"]]]
        assert sel.min() < 0.08 and sel.max() > 0.2


def test_template_rows_are_shuffled(audit: dict[str, Any]) -> None:
    answers = [r["video_name"] for r in _rows(audit["answers_dir"] / "test_label.txt")]
    template = [r["video_name"] for r in _rows(audit["data_root"] / "test_template.csv")]
    assert sorted(answers) == sorted(template) and len(template) == 33
    assert template != answers and template != sorted(template)
    targets = {r["video_name"]: int(r["target"]) for r in _rows(audit["answers_dir"] / "test_label.txt")}
    assert sum(targets.values()) == 17
    for kind in FAKE_KINDS:
        assert audit["counts"]["test"][kind] >= 2


def test_too_few_clips_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least"):
        make_sample_dataset(tmp_path, n=MIN_CLIPS - 1, progress=False)


def test_cli_subcommand(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    calls = []

    def fake_make(out: Path, n: int, seed: int, progress: bool, workers: int | None) -> dict[str, Any]:
        calls.append((out, n, seed, progress, workers))
        return {"data_root": out / "data", "answers_dir": out / "answers", "counts": {}, "errors": []}

    monkeypatch.setattr("ffdv_utils.sample_data.generate.make_sample_dataset", fake_make)
    parser = argparse.ArgumentParser(prog="ffdv")
    add_sample_data_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sample-data", "--out", str(tmp_path), "--n", "30", "--seed", "7"])
    assert args.func(args) == 0
    assert calls == [(tmp_path, 30, 7, True, None)]
    printed = capsys.readouterr().out
    assert str(tmp_path / "data") in printed and str(tmp_path / "answers") in printed


def test_ffmpeg_fallback_writes_h264_aac(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without an H.264 encoder in PyAV the clip goes through imageio-ffmpeg's static binary instead."""
    monkeypatch.setattr("ffdv_utils.sample_data.generate._video_codec", lambda: None)
    clip = _plan(SMALL_N, SMALL_SEED)[0]
    (tmp_path / SPLIT_DIRS[clip["split"]]).mkdir()
    row = _make_clip((clip, SMALL_SEED, str(tmp_path)))
    assert row["error"] == ""
    info = _probe(_clip_path(tmp_path, clip["split"], f"{clip['name']}.mp4"))
    assert (info["video_codec"], info["audio_codec"]) == ("h264", "aac")
    assert info["n_frames"] == row["n_frames"] and info["channels"] == row["channels"]
    assert info["sample_rate"] == row["sample_rate"]
    assert abs(info["audio_duration"] - row["duration"]) < 0.12
