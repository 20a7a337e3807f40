"""The test API's cost per clip (issue 26): a call reads no manifest, writes no file and so costs the same whatever the
feature cache holds; its scores are the cached path's, network and parts alike (``VideoScorer``,
``features.memory.MemoryFeatures``).

The cost is checked by counting what a call does -- manifest reads and writes, files in the cache folder -- never by
timing it (``python -m ffdv_utils bench api`` prints the seconds).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from badmedia import make_corpus
from conftest import untrained_run

from ffdv_utils.core.paths import cache_dir
from ffdv_utils.data.splits import labelled_clips
from ffdv_utils.detector import Detector, scorers_from_params
from ffdv_utils.features import cache as cache_mod
from ffdv_utils.features import extract as extract_mod
from ffdv_utils.features.clips import cache_folder, clip_features
from ffdv_utils.features.memory import MemoryFeatures
from ffdv_utils.inference.score import (
    FALLBACK_SCORE,
    VideoScorer,
    predict_clips,
    score_table,
    score_video,
    score_videos,
    video_scorer,
)
from ffdv_utils.models.checkpoint import Checkpoint
from ffdv_utils.models.registry import build_model
from ffdv_utils.training.loop import TRAIN_DEFAULTS

# a fusion network (mel images and face crops) joined to both parts: every feature the API computes is exercised
PARTS = {**TRAIN_DEFAULTS, "model": "test_resnet", "model_type": "fusion", "image_size": 64, "face_frames": 2,
         "face_size": 32, "feature_workers": 1, "face_detector": "center", "real_only_weight": 0.3,
         "profile_weight": 0.2, "profile_mel_preset": "seed", "device": "cpu", "progress": False}


@pytest.fixture(scope="module")
def parts_checkpoint(sample: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained fusion network with a real-only and a profile part fitted on the sample's training clips,
    saved as one checkpoint (the parts' fit reads the cache: that is training's path)."""
    import torch

    torch.manual_seed(4)
    params = {**PARTS, "data_root": str(sample["data_root"])}
    detector = Detector(build_model(params), params, scorers_from_params(params))
    detector.fit_parts(labelled_clips(sample["data_root"], ("train",)))
    path = tmp_path_factory.mktemp("api-run") / "best.pt"
    detector.save(path, Checkpoint(network={}, params=params, epoch=1))
    return path


def _val(sample: dict) -> pd.DataFrame:
    return labelled_clips(sample["data_root"], ("val",))[["video_name", "path"]].reset_index(drop=True)


def test_in_memory_features_score_exactly_as_the_cached_path(parts_checkpoint: Path, sample: dict) -> None:
    """One scoring path, two feature sources: ``predict_clips`` with ``MemoryFeatures`` gives the cached path's network
    score, each part's score and the joined score, bit for bit; the API's per-clip calls agree with it."""
    detector = Detector.load(parts_checkpoint, "cpu")
    assert sorted(detector.weights) == ["profile", "real_only"]
    clips = _val(sample)
    cached = predict_clips(detector, detector.params, clips, device="cpu", progress=False)
    memory = predict_clips(detector, detector.params, clips, device="cpu", progress=False, source=MemoryFeatures())
    assert {"model_score", "real_only_score", "profile_score"} <= set(cached.columns)
    pd.testing.assert_frame_equal(memory, cached, check_exact=True)
    assert cached.real_only_score.nunique() == len(clips) and cached.profile_score.nunique() == len(clips)
    scorer = VideoScorer(parts_checkpoint, device="cpu")
    one_by_one = [scorer(p) for p in clips.path]  # batches of one: the network may round differently
    np.testing.assert_allclose(one_by_one, cached.score, rtol=0, atol=1e-6)
    assert scorer.score_many(clips.path) == pytest.approx(list(cached.score), abs=1e-6)


def test_the_features_in_memory_are_the_cached_entries(sample: dict, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Mel images, face crops and flags from ``MemoryFeatures`` equal what extraction stored (the same functions)."""
    monkeypatch.setenv("FFDV_CACHE", str(tmp_path / "cache"))
    clips = _val(sample).iloc[:3]
    params = {**PARTS, "face_detector": "center"}
    cached = clip_features(params, clips, ("mel", "faces"), progress=False)
    memory = clip_features(params, clips, ("mel", "faces"), source=MemoryFeatures())
    assert np.array_equal(np.asarray(cached["mels"]), memory["mels"])
    assert np.array_equal(cached["has_audio"], memory["has_audio"])
    for name in clips.video_name:
        assert np.array_equal(cached["faces"].get(name), memory["faces"].get(name))
        assert np.array_equal(cached["faces"].face_found(name), memory["faces"].face_found(name))


class _CacheSpy:
    """Counts manifest reads and writes wherever the cache code calls them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.reads, self.writes = 0, 0
        # every manifest read goes through read_manifest_files (read_manifest and extraction's own read)
        read, write = cache_mod.read_manifest_files, cache_mod.write_manifest

        def counted_read(root: Path) -> tuple:
            self.reads += 1
            return read(root)

        def counted_write(root: Path, rows: dict, *args: object) -> None:
            self.writes += 1
            write(root, rows, *args)

        for mod in (cache_mod, extract_mod):
            monkeypatch.setattr(mod, "read_manifest_files", counted_read)
            monkeypatch.setattr(mod, "write_manifest", counted_write)


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            st = os.stat(os.path.join(dirpath, f))
            out[os.path.relpath(os.path.join(dirpath, f), folder)] = (st.st_size, st.st_mtime_ns)
    return out


def _fill_manifests(params: dict, n: int) -> None:
    """``n`` manifest rows (fabricated, no entries) in the mel and face caches of ``params``, as a cache that has
    seen ``n`` clips holds them."""
    rows = {f"cached_{i:06d}.mp4": {"video_name": f"cached_{i:06d}.mp4", "has_audio": True, "status": "ok",
                                    "error": "", "note": "", "seconds": "2.0", "shape": "128x188",
                                    "source": f"{1000 + i}:{i}"} for i in range(n)}
    mel_params = {**params, "mel_preset": params["profile_mel_preset"]}
    for folder in (cache_folder(params, "mel"), cache_folder(mel_params, "mel"), cache_folder(params, "faces")):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "params.json").write_text(json.dumps({"fabricated": True}))
        cache_mod.write_manifest(folder, rows)


def test_a_call_reads_no_manifest_and_writes_nothing_whatever_the_cache_holds(
        parts_checkpoint: Path, sample: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With an empty cache and with one of 5,000 clips, each call reads no manifest, writes none and leaves the cache
    folder as it was: its cost cannot grow with the cache or with the calls before it (the old API read the whole
    manifest twice per call, rewrote it and left a packed stack)."""
    monkeypatch.setenv("FFDV_CACHE", str(tmp_path / "cache"))
    root = cache_dir()
    clips = list(_val(sample).path)[:3]
    spy = _CacheSpy(monkeypatch)
    empty = [score_video(p, parts_checkpoint, device="cpu") for p in clips]
    assert (spy.reads, spy.writes) == (0, 0)
    assert _listing(root) == {}

    _fill_manifests(Detector.load(parts_checkpoint, "cpu").params, 5000)
    before = _listing(root)
    spy.reads = spy.writes = 0
    full = [score_video(p, parts_checkpoint, device="cpu") for p in clips * 2]
    assert (spy.reads, spy.writes) == (0, 0)
    assert _listing(root) == before  # no entry, no packed stack, no manifest rewrite, no statistics
    assert full == empty * 2  # and the fabricated rows are never read

    assert score_videos(clips, parts_checkpoint, device="cpu") == pytest.approx(empty, abs=1e-6)
    score_table(clips, parts_checkpoint, device="cpu")  # the command on a few files: the same path
    assert (spy.reads, spy.writes) == (0, 0) and _listing(root) == before
    score_table(clips[:1], parts_checkpoint, device="cpu", in_memory=False)  # the control: the spy sees the cache path
    assert spy.reads > 0 and spy.writes > 0


def test_the_scorer_is_kept_per_checkpoint(parts_checkpoint: Path) -> None:
    """The model and its parts are loaded once: later calls get the same object (until the file changes,
    tests/test_predict.py)."""
    first = video_scorer(parts_checkpoint, "cpu")
    assert video_scorer(parts_checkpoint, "cpu") is first and first.detector.parts


def test_statuses_in_memory_match_the_cached_path(corpus_dir: dict, session_outputs: Path) -> None:
    """Every bad-media case gets the same score and status from the test API as from the cache path: fallback for
    what cannot be read, no_audio, no_video (a sound file named .mp4), ok."""
    run = untrained_run("api-statuses", model_type="fusion")
    paths = list(corpus_dir.values()) + [Path(str(next(iter(corpus_dir.values()))) + ".missing")]
    cached = score_table(paths, run, in_memory=False)
    scorer = VideoScorer(run)
    scorer.chunk = 5  # several chunks, each with its own features
    memory = scorer.table(paths)
    pd.testing.assert_frame_equal(memory.drop(columns="score"), cached.drop(columns="score"))
    np.testing.assert_allclose(memory.score, cached.score, rtol=0, atol=1e-6)
    status = dict(zip(memory.video_name, memory.status))
    assert status["audio_only.mp4"] == "no_video" and status["video_no_audio.mp4"] == "no_audio"
    assert status["normal.mp4"] == "ok" and status["random_bytes.mp4"].startswith("fallback: ")
    assert status[paths[-1].name] == "fallback: file not found"
    assert memory.score[memory.status.str.startswith("fallback")].eq(FALLBACK_SCORE).all()


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_corpus(tmp_path_factory.mktemp("api-bad"))


def test_bench_api_counts_what_each_path_does(sample: dict, session_outputs: Path) -> None:
    """``bench api`` on two clips, one call per setting: the in-memory path reads and writes nothing at either cache
    size, the cached path it replaced reads and rewrites manifests on every call; the command line reaches it."""
    import argparse

    from ffdv_utils.bench.api import api_targets, bench_api
    from ffdv_utils.cli.main import add_bench_parser

    run = untrained_run("api-bench", model_type="audio")
    videos = sample["data_root"] / "valset"
    lines: list[str] = []
    result = bench_api(videos, run, calls=1, cached=(0, 50), log=lines.append)
    rows = {(r["path"], r["cached_clips"]): r for r in result["settings"]}
    assert set(rows) == {("memory", 0), ("memory", 50), ("cache", 0), ("cache", 50)}
    for n in (0, 50):
        memory, cache = rows[("memory", n)], rows[("cache", n)]
        assert (memory["manifest_reads_per_call"], memory["manifest_writes_per_call"]) == (0, 0)
        assert memory["files_written_per_call"] == 0
        assert cache["manifest_reads_per_call"] > 0 and cache["manifest_writes_per_call"] > 0
        assert memory["work_s"] > 0 and memory["decode_s"] > 0 and memory["model_s"] > 0
    assert set(result["targets"]) == {"bookkeeping_100k_calls_h", "flat_0_to_50"}
    assert any(line.startswith("target flat_0_to_50: ") for line in lines)
    slow = [{**rows[("memory", 0)], "bookkeeping_100k_h": 2.0}, {**rows[("memory", 50)], "bookkeeping_s": 1.0}]
    judged = api_targets(slow)
    assert not judged["bookkeeping_100k_calls_h"]["met"] and not judged["flat_0_to_50"]["met"]
    ap = argparse.ArgumentParser()
    add_bench_parser(ap.add_subparsers(dest="command"))
    args = ap.parse_args(["bench", "api", "--calls", "3", "--cached", "0", "100"])
    assert (args.bench, args.calls, args.cached, args.run) == ("api", 3, [0, 100], None)


def test_in_memory_crops_are_those_the_cache_returns_under_a_lossy_codec(sample: dict, tmp_path: Path) -> None:
    """A run whose faces are stored as JPEG was trained on decoded JPEG crops: the test API's in-memory crops must be
    the same decoded crops, not the raw ones (``features.cache.as_stored``)."""
    from ffdv_utils.features.params import face_params

    fp = face_params({"face_detector": "haar", "face_frames": 4, "face_codec": "jpeg", "face_quality": 60})
    clips = _val(sample).head(2)
    store = extract_mod.extract_faces(clips[["video_name", "path"]], fp, tmp_path / "cache", workers=1,
                                      progress=False)
    raw_entry = extract_mod.compute_faces(str(clips.path.iloc[0]), fp)[1]
    for name, path in zip(clips.video_name, clips.path):
        row, arrays = extract_mod.compute_entry("faces", name, str(path), fp)
        cached = store.entry(name)
        assert row["status"] == "ok" and set(cached) <= set(arrays)
        for key, value in cached.items():
            assert np.array_equal(arrays[key], value), key
    assert not np.array_equal(raw_entry["faces"], store.entry(clips.video_name.iloc[0])["faces"])  # JPEG is lossy
