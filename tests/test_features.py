"""Tests for ffdv_utils.features: mel images, the cache (keying, resume, kill -9), errors, face crops."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ffdv_utils.core.config import params_hash
from ffdv_utils.features.cache import MelStore
from ffdv_utils.features.extract import extract_faces, extract_mels
from ffdv_utils.features.mel import (
    audio_status,
    baseline_mel_image,
    fallback_shape,
    mel_image,
    mel_power,
)
from ffdv_utils.features.params import face_params, mel_params
from ffdv_utils.media.decode import load_audio
from ffdv_utils.sample_data.clips import make_clip

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    out = {f"c{i}.mp4": make_clip(d / f"c{i}.mp4", seconds=1.0 + 0.25 * i, seed=i) for i in range(4)}
    out["noaudio.mp4"] = make_clip(d / "noaudio.mp4", seconds=1.0, audio=False)
    out["silent.mp4"] = make_clip(d / "silent.mp4", seconds=1.0, silent=True)
    out["noface.mp4"] = make_clip(d / "noface.mp4", seconds=1.0, face=False)
    out["zero.mp4"] = d / "zero.mp4"
    out["zero.mp4"].write_bytes(b"")
    return out


def _clips(media: dict[str, Path], names: list[str] | None = None) -> pd.DataFrame:
    names = names or list(media)
    return pd.DataFrame({"video_name": names, "path": [str(media[n]) for n in names]})


# ----------------------------------------------------------------------------------------------------- params


def test_mel_params_presets_overrides_and_hash() -> None:
    d = mel_params({})
    assert d["preset"] == "default" and d["sr"] == 16000 and d["height"] == 0
    s = mel_params({"mel_preset": "seed"})
    assert (s["sr"], s["n_fft"], s["hop_length"], s["n_mels"], s["height"], s["width"]) == (22050, 2048, 512, 128,
                                                                                           256, 256)
    assert mel_params({"mel_preset": "baseline"}) == s
    o = mel_params({"mel_preset": "seed", "mel_n_mels": 64, "lr": 0.1})
    assert o["n_mels"] == 64 and isinstance(o["n_mels"], int)
    assert mel_params(o) == o  # resolving twice changes nothing
    assert params_hash(o) != params_hash(s)
    assert params_hash(mel_params({"mel_preset": "seed", "mel_n_mels": 128.0})) == params_hash(s)
    with pytest.raises(ValueError):
        mel_params({"mel_preset": "nope"})
    with pytest.warns(UserWarning, match="mel_nmels"):
        mel_params({"mel_nmels": 3})
    with pytest.raises(ValueError):
        mel_params({"mel_fmax": 9000})  # above Nyquist at 16 kHz


def test_face_params() -> None:
    fp = face_params({"face_frames": 4, "face_detector": "center"})
    assert fp["frames"] == 4 and fp["size"] == 112 and fp["detector"] == "center"
    assert face_params(fp) == fp
    with pytest.raises(ValueError):
        face_params({"face_detector": "dlib"})


# ----------------------------------------------------------------------------------------------------- mels


def test_mel_power_matches_librosa() -> None:
    librosa = pytest.importorskip("librosa")
    y = np.random.default_rng(0).standard_normal(20000).astype(np.float32) * 0.1
    for preset in ("seed", "default"):
        mp = mel_params({"mel_preset": preset})
        ours = mel_power(y, mp)
        ref = librosa.feature.melspectrogram(y=y, sr=mp["sr"], n_fft=mp["n_fft"], hop_length=mp["hop_length"],
                                             win_length=mp["win_length"], n_mels=mp["n_mels"], fmin=mp["fmin"],
                                             fmax=mp["fmax"] or None)
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-5 * ref.max())


def test_seed_preset_reproduces_public_baseline(media: dict[str, Path], tmp_path: Path) -> None:
    mp = mel_params({"mel_preset": "seed"})
    for name in ("c1.mp4", "c3.mp4"):
        base = baseline_mel_image(media[name], tmp_path)
        ours = mel_image(load_audio(media[name], mp["sr"]), mp)
        assert base.shape == ours.shape == (256, 256) and ours.dtype == np.uint8
        diff = np.abs(base.astype(int) - ours.astype(int)).mean()
        assert diff < 2.0, f"{name}: mean abs difference {diff:.2f} grey levels"
        assert np.abs(base.astype(int) - np.roll(ours, 16, axis=1)).mean() > 2.0  # the comparison can fail
    assert not list(tmp_path.iterdir())  # the baseline cleans its wav and jpg


def test_mel_image_fallbacks_and_level() -> None:
    d = mel_params({})
    s = mel_params({"mel_preset": "seed"})
    for audio, reason in [(np.zeros(0, np.float32), "no audio"), (np.zeros(16000, np.float32), "silent"),
                          (np.ones(100, np.float32) * 0.1, "too short")]:
        assert audio_status(audio, d).startswith(reason)
        img = mel_image(audio, d)
        assert img.dtype == np.uint8 and img.shape == fallback_shape(d) and not img.any()
        assert mel_image(audio, s).shape == (256, 256)
    y = np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.05
    quiet, loud = mel_image(y, d), mel_image(4 * y, d)
    assert quiet.shape == (128, 63)
    assert loud.mean() > quiet.mean() + 10  # the default keeps level (fixed dB scale)...
    y22 = np.random.default_rng(1).standard_normal(22050).astype(np.float32) * 0.05
    np.testing.assert_allclose(mel_image(y22, s), mel_image(4 * y22, s), atol=1)  # ...the seed image does not
    capped = mel_image(np.tile(y, 20), d)  # 20 s clip, capped at max_seconds = 12
    assert capped.shape == (128, 1 + 12 * 16000 // 256)


# ----------------------------------------------------------------------------------------------------- cache


def test_extract_mels_statuses_errors_and_fallbacks(media: dict[str, Path], tmp_path: Path) -> None:
    errors = tmp_path / "errors.csv"
    store = extract_mels(_clips(media), {}, tmp_path / "cache", workers=1, progress=False, errors_csv=errors)
    t = store.table.set_index("video_name")
    assert t.loc["c0.mp4", "status"] == "ok" and t.loc["c0.mp4", "has_audio"]
    assert t.loc["noaudio.mp4", "status"] == "no_audio" and t.loc["silent.mp4", "status"] == "no_audio"
    assert t.loc["zero.mp4", "status"] == "error" and "empty" in t.loc["zero.mp4", "error"]
    assert store.stats["ok"] == 5 and store.stats["no_audio"] == 2 and store.stats["error"] == 1
    assert store.get("c0.mp4").shape == (128, 63) and store.get("c0.mp4").any()
    for name in ("noaudio.mp4", "zero.mp4", "never-seen.mp4"):
        img = store.get(name)
        assert img.shape == store.fallback_shape and not img.any() and not store.has_audio(name)
    assert store.has_audio("c2.mp4") and "c2.mp4" in store and "never-seen.mp4" not in store
    assert store.root == tmp_path / "cache" / f"mel-{store.key}" and store.key == params_hash(mel_params({}))
    err = pd.read_csv(errors)
    assert list(err.columns) == ["clip", "stage", "message"] and list(err["clip"]) == ["zero.mp4"]
    reopened = MelStore(store.root)  # a later session reads the same cache without recomputing
    np.testing.assert_array_equal(reopened.get("c3.mp4"), store.get("c3.mp4"))


def test_cache_is_keyed_by_params_and_resumes(media: dict[str, Path], tmp_path: Path) -> None:
    clips = _clips(media, ["c0.mp4", "c1.mp4", "c2.mp4", "noaudio.mp4"])
    a = extract_mels(clips, {"mel_preset": "default"}, tmp_path, workers=1, progress=False)
    assert a.stats["computed"] == 4
    b = extract_mels(clips, {"mel_preset": "default", "mel_n_mels": 64}, tmp_path, workers=1, progress=False)
    assert b.root != a.root and b.stats["computed"] == 4 and b.get("c0.mp4").shape[0] == 64
    again = extract_mels(clips, {}, tmp_path, workers=1, progress=False)
    assert again.root == a.root and again.stats["computed"] == 0 and again.stats["cached"] == 4
    before = a.get("c2.mp4")
    a.path("c2.mp4").unlink()
    resumed = extract_mels(clips, {}, tmp_path, workers=1, progress=False)
    assert resumed.stats["computed"] == 1 and resumed.stats["cached"] == 3
    np.testing.assert_array_equal(resumed.get("c2.mp4"), before)
    (tmp_path / f"mel-{a.key}" / "manifest.csv").unlink()  # entries alone are enough to resume
    recovered = extract_mels(clips, {}, tmp_path, workers=1, progress=False)
    assert recovered.stats["computed"] == 1  # only the no-audio clip, which has no entry file
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"mel-{a.key}", f"mel-{b.key}"])


def test_packed_is_memory_mapped_and_reused(media: dict[str, Path], tmp_path: Path) -> None:
    clips = _clips(media, ["c0.mp4", "c3.mp4", "noaudio.mp4"])
    store = extract_mels(clips, {}, tmp_path, workers=2, progress=False)
    names = ["c3.mp4", "noaudio.mp4", "c0.mp4"]
    packed = store.packed(names, 32, 48)
    assert isinstance(packed, np.memmap) and packed.shape == (3, 32, 48) and packed.dtype == np.uint8
    assert packed[0].any() and not packed[1].any()
    files = list((store.root / "packed").glob("packed-*.npy"))
    assert len(files) == 1
    inode = files[0].stat().st_ino
    np.testing.assert_array_equal(store.packed(names, 32, 48), packed)
    # second call opened the file (a rebuild renames a new file over it); its use renewed the modification time
    assert files[0].stat().st_ino == inode
    assert store.packed(names[:2], 32, 48).shape == (2, 32, 48)


def test_packed_is_rebuilt_when_an_entry_changes(media: dict[str, Path], tmp_path: Path) -> None:
    """A name that now points at another file is recomputed, and the packed stack holding it is built again (a new
    file), never read back from the old one."""
    import cv2

    clip = tmp_path / "v" / "a.mp4"
    clip.parent.mkdir()
    shutil.copyfile(media["c0.mp4"], clip)
    clips = pd.DataFrame({"video_name": ["a.mp4", "c1.mp4"], "path": [str(clip), str(media["c1.mp4"])]})
    store = extract_mels(clips, {}, tmp_path / "cache", workers=1, progress=False)
    old = np.array(store.packed(["a.mp4", "c1.mp4"], 32, 48))
    shutil.copyfile(media["c3.mp4"], clip)  # another clip under the same name
    again = extract_mels(clips, {}, tmp_path / "cache", workers=1, progress=False)
    assert again.stats["computed"] == 1 and again.stats["cached"] == 1
    new = again.packed(["a.mp4", "c1.mp4"], 32, 48)
    assert len(list((again.root / "packed").glob("packed-*.npy"))) == 2
    np.testing.assert_array_equal(new[0], cv2.resize(again.get("a.mp4"), (48, 32), interpolation=cv2.INTER_LINEAR))
    assert not np.array_equal(new[0], old[0])  # the new clip's image, not the stale row
    np.testing.assert_array_equal(new[1], old[1])


def test_kill_9_midway_then_resume(tmp_path: Path) -> None:
    """SIGKILL a 2-worker extraction while both workers are in the middle of writing an entry; the restart keeps the
    finished entries, never reads the torn ones, and loads every entry whole. The kill waits for events (six
    entries done, both workers blocked mid-write), not for a time, so a busy machine only makes it later."""
    vids = tmp_path / "v"
    names = [f"k{i:02d}.mp4" for i in range(24)]
    for i, n in enumerate(names):
        make_clip(vids / n, seconds=0.5, width=64, height=48, seed=i)
    script = textwrap.dedent(f"""
        import os, sys, time
        from pathlib import Path
        import pandas as pd
        sys.path.insert(0, {str(ROOT)!r})
        import ffdv_utils.features.extract as F
        real = F._mel_task
        def gated(path):  # clips k00-k05 finish; from k06 on a worker starts writing the entry, then stops there
            row, write = real(path)
            if int(Path(path).stem[1:]) < 6:
                return row, write
            def torn(f):
                f.write(b"\\x93NUMPY torn")
                f.flush()
                os.write(1, f"BLOCKED {{Path(path).name}}\\n".encode())  # one write: lines never interleave
                time.sleep(3600)  # until the test kills the process group
            return row, torn
        F._mel_task = gated
        names = {names!r}
        clips = pd.DataFrame({{"video_name": names, "path": [{str(vids)!r} + "/" + n for n in names]}})
        # fork, so the workers see the gated task (forkserver workers import the module afresh); chunks of one
        # clip, so no worker holds a finished clip back while it waits
        F.extract_mels(clips, {{}}, {str(tmp_path / "cache")!r}, workers=2, progress=False, start_method="fork",
                       chunksize=1)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True, stdout=subprocess.PIPE,
                            text=True)
    root = tmp_path / "cache" / f"mel-{params_hash(mel_params({}))}"
    try:
        blocked = []
        for line in proc.stdout:  # each worker takes clips in order and finishes one before it takes the next
            if line.startswith("BLOCKED"):
                blocked.append(line.split()[1])
                if len(blocked) == 2:
                    break
        assert sorted(blocked) == ["k06.mp4", "k07.mp4"], blocked
        assert proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the parent and its pool workers, like a crashed session
        proc.wait()
    entries = sorted(p.name for p in root.glob("entries/*/*.npy"))
    assert entries == [f"k{i:02d}.mp4.npy" for i in range(6)]  # exactly the clips finished before the kill
    torn = list(root.glob("entries/*/.*.tmp"))
    assert len(torn) == 2  # the two writes the kill interrupted, under temporary names only
    # a restart comes after the crashed workers are gone: wait for that (their pids are in the temporary names)
    pids = {int(p.name.rsplit(".", 2)[-2]) for p in torn}
    deadline = time.monotonic() + 120
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"killed workers {pids} still exist after 120 s"
        time.sleep(0.02)
    clips = pd.DataFrame({"video_name": names, "path": [str(vids / n) for n in names]})
    store = extract_mels(clips, {}, tmp_path / "cache", workers=1, progress=False)
    assert store.stats["cached"] == 6 and store.stats["computed"] == len(names) - 6
    assert (store.table["status"] == "ok").all() and len(store) == len(names)
    for n in names:
        img = np.load(store.path(n))  # every entry is whole
        assert img.shape == (128, 32) and img.any()
    assert not list(root.glob("entries/*/.*.tmp"))  # the killed writers' leftovers are removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_failed_clips_are_skipped_on_a_rerun_unless_retry_errors(media: dict[str, Path], tmp_path: Path) -> None:
    """A clip that failed is not decoded again by a rerun (it is reported from the manifest) until retry_errors."""
    data = media["c1.mp4"].read_bytes()
    clip = tmp_path / "v" / "flaky.mp4"
    clip.parent.mkdir()
    clip.write_bytes(bytes(len(data)))  # unreadable, the size of the real clip
    stamp = clip.stat().st_mtime_ns
    clips = pd.DataFrame({"video_name": ["flaky.mp4", "c0.mp4"], "path": [str(clip), str(media["c0.mp4"])]})
    first = extract_mels(clips, {}, tmp_path / "cache", workers=1, progress=False)
    assert first.status("flaky.mp4") == "error" and first.stats["computed"] == 2
    # the same size and time stamp, now readable: only retry_errors makes the cache look at it again
    clip.write_bytes(data)
    os.utime(clip, ns=(stamp, stamp))
    errors = tmp_path / "errors.csv"
    again = extract_mels(clips, {}, tmp_path / "cache", workers=1, progress=False, errors_csv=errors)
    assert again.stats["computed"] == 0 and again.stats["cached"] == 2 and again.status("flaky.mp4") == "error"
    err = pd.read_csv(errors)
    assert err[["clip", "stage"]].values.tolist() == [["flaky.mp4", "cached"]] and err.message[0]
    retried = extract_mels(clips, {}, tmp_path / "cache", workers=1, progress=False, retry_errors=True)
    assert retried.stats["computed"] == 1 and retried.stats["cached"] == 1
    assert retried.status("flaky.mp4") == "ok" and retried.has_audio("flaky.mp4")
    mp = mel_params({})
    np.testing.assert_array_equal(retried.get("flaky.mp4"), mel_image(load_audio(clip, mp["sr"], mp["max_seconds"]), mp))


# ----------------------------------------------------------------------------------------------------- faces


def test_faces_shape_flags_and_fallback(media: dict[str, Path], tmp_path: Path) -> None:
    errors = tmp_path / "faces_errors.csv"
    clips = _clips(media, ["c0.mp4", "noface.mp4", "zero.mp4"])
    store = extract_faces(clips, {"face_frames": 4}, tmp_path, workers=1, progress=False, errors_csv=errors)
    crops = store.get("c0.mp4")
    assert crops.shape == (4, 112, 112, 3) and crops.dtype == np.uint8
    assert store.face_found("c0.mp4").all()
    # The synthetic face is a skin-toned ellipse centred in the frame: a good crop is mostly skin in its middle.
    centre = crops[:, 40:72, 40:72].reshape(-1, 3).mean(0)
    assert abs(centre[0] - 205) < 40 and centre[0] > centre[2] + 30
    found = store.face_found("noface.mp4")
    assert found.shape == (4,) and not found.any()
    assert store.get("noface.mp4").shape == (4, 112, 112, 3) and store.get("noface.mp4").any()
    assert store.status("zero.mp4") == "error" and not store.get("zero.mp4").any()
    assert list(pd.read_csv(errors)["clip"]) == ["zero.mp4"]
    center = extract_faces(clips[:1], {"face_frames": 4, "face_detector": "center", "face_size": 64}, tmp_path,
                             workers=1, progress=False)
    assert center.root != store.root and center.get("c0.mp4").shape == (4, 64, 64, 3)
    assert not center.face_found("c0.mp4").any()


# ----------------------------------------------------------------------------------------------------- bench


def test_extraction_targets_judged_on_figures() -> None:
    from ffdv_utils.bench.extraction import extraction_targets

    t = extraction_targets({"ratio_1w": 16.5, "ratio_par": 19.9, "faces_clips_per_s_per_core": 2.0,
                            "peak_rss_total_mib": 1600.0})
    assert {k: v["met"] for k, v in t.items()} == {"audio_1_worker": True, "audio_default_workers": False,
                                                   "faces_per_core": True, "peak_rss": False}
    assert set(extraction_targets({"ratio_1w": 3.0})) == {"audio_1_worker"}  # only what the run measured


def test_bench_extraction_small(media: dict[str, Path], tmp_path: Path) -> None:
    import argparse

    from ffdv_utils.bench.extraction import bench_extraction
    from ffdv_utils.cli.main import add_bench_parser

    vids = tmp_path / "v"
    vids.mkdir()
    for name in ("c0.mp4", "c2.mp4", "noaudio.mp4"):
        (vids / name).symlink_to(media[name])
    lines: list[str] = []
    result = bench_extraction(vids, workers=2, limit=None, progress=False, log=lines.append, min_mel_tasks=6,
                              min_face_tasks=3)
    assert result["clips"] == 3 and result["baseline_errors"] == 1  # the baseline cannot handle a silent video
    assert result["mel_tasks"] == 6 and result["face_tasks"] == 3
    assert result["mel_errors"] == 0 and result["faces_errors"] == 0 and result["faces_mtcnn_errors"] == 0
    assert result["faces_found_fraction"] > 0.5 and result["workers"] == 2
    assert result["audio_seconds"] == pytest.approx(1.0 + 1.5, abs=0.1)  # c0 and c2 (1 s, 1.5 s); noaudio has none
    # the figures are what was measured: the ratios, projections and printed lines follow from the rates
    base, one, par = (result[k] for k in ("baseline_clips_per_s", "default_1w_clips_per_s", "default_par_clips_per_s"))
    assert min(base, one, par, result["faces_clips_per_s_per_core"]) > 0
    assert result["ratio_1w"] == pytest.approx(one / base, rel=0.01, abs=0.01)
    assert result["ratio_par"] == pytest.approx(par / base, rel=0.01, abs=0.01)
    assert result["projection_250k"]["baseline_1_process_h"] == pytest.approx(250_000 / base / 3600, rel=0.01,
                                                                              abs=0.01)
    assert result["projection_250k"]["mels_4_cores_h"] == pytest.approx(250_000 / (4 * one) / 3600, rel=0.01,
                                                                        abs=0.01)
    assert result["peak_rss_total_mib"] == pytest.approx(result["peak_rss_self_mib"] + result["peak_rss_children_mib"],
                                                         abs=0.2)
    assert f"(b) workspace default preset, 1 worker: {one:.2f} clips/s" in "\n".join(lines)
    assert any(line.startswith("(a) baseline") for line in lines) and "projection_250k" in result
    assert set(result["targets"]) == {"audio_1_worker", "audio_default_workers", "faces_per_core", "peak_rss",
                                      "faces_mtcnn_per_core", "audio_floor_distance", "faces_mtcnn_rss"}
    assert result["faces_mtcnn_clips_per_s_per_core"] > 0 and 0 <= result["faces_mtcnn_found_fraction"] <= 1
    assert result["targets"]["audio_1_worker"]["met"] == (result["ratio_1w"] >= 12)  # 1-1.5 s clips: short
    assert any(line.startswith("target peak_rss") for line in lines)
    ap = argparse.ArgumentParser()
    add_bench_parser(ap.add_subparsers(dest="command"))
    args = ap.parse_args(["bench", "extraction", "--limit", "2", "--workers", "1"])
    assert (args.bench, args.limit, args.workers, args.videos) == ("extraction", 2, 1, None)
