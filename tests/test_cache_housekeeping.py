"""Cache housekeeping: packed stacks kept bounded, ``cache`` / ``cache prune``, and face crops stored encoded."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ffdv_utils.cli.main import main
from ffdv_utils.core.config import params_hash
from ffdv_utils.features.cache import (
    PACKED_KEEP,
    FaceStore,
    MelStore,
    as_stored,
    decode_crops,
    encode_crops,
    entry_file,
    write_manifest,
)
from ffdv_utils.features.extract import extract_faces
from ffdv_utils.features.housekeeping import cache_report, prune, recode_faces, report_totals, stale_folders
from ffdv_utils.features.params import face_params, mel_params
from ffdv_utils.sample_data.clips import make_clip

H, W = 8, 10


def _mel_folder(root: Path, params: dict, n: int = 30) -> MelStore:
    """A mel cache folder of ``n`` clips ``clip<i>.mp4`` whose images are all ``i`` (written directly)."""
    resolved = mel_params(params)
    folder = root / f"mel-{params_hash(resolved)}"
    (folder / "entries").mkdir(parents=True, exist_ok=True)
    (folder / "params.json").write_text(json.dumps(resolved))
    rows = {}
    for i in range(n):
        name = f"clip{i}.mp4"
        path = folder / "entries" / entry_file(name, ".npy")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.full((H, W), i, np.uint8))
        rows[name] = {"video_name": name, "has_audio": True, "status": "ok", "error": "", "note": "",
                      "seconds": "1.0", "shape": f"{H}x{W}", "source": ""}
    write_manifest(folder, rows)
    return MelStore(folder)


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------------------------- packed stacks


def test_packed_stacks_stay_bounded_and_reads_stay_correct(tmp_path: Path) -> None:
    """Many distinct name lists: the packed folder keeps at most PACKED_KEEP stacks, every read gives the right rows,
    a stack in use (reused between the others) is never rebuilt, and a map opened before its file was removed still
    reads its rows (unlinking a mapped file is safe on Linux)."""
    store = _mel_folder(tmp_path, {"mel_preset": "seed"})
    rng = np.random.default_rng(0)
    first_names = ["clip1.mp4", "clip2.mp4", "clip3.mp4"]
    first = store.packed(first_names, H, W)
    hot_names = ["clip5.mp4", "clip0.mp4"]
    hot = store.packed(hot_names, H, W)
    hot_file = Path(hot.filename)
    hot_inode = hot_file.stat().st_ino
    for _ in range(4 * PACKED_KEEP):
        idx = rng.choice(30, size=int(rng.integers(1, 12)), replace=False)
        arr = store.packed([f"clip{i}.mp4" for i in idx], H, W)
        np.testing.assert_array_equal(arr[:, 0, 0], idx)
        assert (arr == idx[:, None, None]).all()
        np.testing.assert_array_equal(store.packed(hot_names, H, W)[:, 0, 0], [5, 0])  # in use: touched
        stacks = list((store.root / "packed").glob("packed-*.npy"))
        assert len(stacks) <= PACKED_KEEP
        assert len(list((store.root / "packed").glob("packed-*.json"))) == len(stacks)
    assert hot_file.stat().st_ino == hot_inode  # reused all along, never rebuilt
    assert not Path(first.filename).exists()  # the first stack went long ago ...
    np.testing.assert_array_equal(first[:, 0, 0], [1, 2, 3])  # ... and its open map still reads it
    again = store.packed(first_names, H, W)  # asked for again: rebuilt
    np.testing.assert_array_equal(again[:, 0, 0], [1, 2, 3])


# ---------------------------------------------------------------------------------------------- report, prune


def _emb_folder(root: Path, source: str, kind: str = "mel", n: int = 3) -> Path:
    key = {"kind": kind, "source": source, "image_size": 64, "backbone": "Net", "weights_sha1": "0" * 40,
           "input_norm": "null"}
    folder = root / f"emb-{kind}-{params_hash(key)}"
    (folder / "entries" / "ab").mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps(key))
    for i in range(n):
        np.save(folder / "entries" / "ab" / f"c{i}.npy", np.zeros(16, np.float16))
    return folder


@pytest.fixture()
def workspace(tmp_path: Path) -> dict:
    """A cache with a mel folder a run uses, a faces folder a preset uses, a stale mel folder, and embeddings of
    the used and of the stale mel folder; each mel folder has packed stacks."""
    cache, outputs, presets = tmp_path / "cache", tmp_path / "outputs", tmp_path / "params"
    run_params = {"mel_preset": "seed", "image_size": 64, "face_detector": "center"}
    used_mel = _mel_folder(cache, run_params, n=5)
    stale_mel = _mel_folder(cache, {"mel_preset": "wide"}, n=4)
    for store in (used_mel, stale_mel):
        store.packed(store.names[:2], H, W)
        store.packed(store.names[1:], H, W)
    preset_faces = {"face_detector": "mtcnn", "face_frames": 4, "face_codec": "jpeg", "face_quality": 80}
    faces = cache / f"faces-{params_hash(face_params(preset_faces))}"
    (faces / "entries").mkdir(parents=True)
    (faces / "params.json").write_text(json.dumps(face_params(preset_faces)))
    write_manifest(faces, {"a.mp4": {"video_name": "a.mp4", "status": "ok", "has_audio": False},
                           "b.mp4": {"video_name": "b.mp4", "status": "error", "has_audio": False}})
    (outputs / "run1").mkdir(parents=True)
    (outputs / "run1" / "params.yaml").write_text(yaml.safe_dump(run_params))
    presets.mkdir()
    (presets / "best.yaml").write_text(yaml.safe_dump({"mel_preset": "seed", "candidates": [
        {"name": "x", **preset_faces}]}))
    used_emb = _emb_folder(cache, used_mel.root.name)
    stale_emb = _emb_folder(cache, stale_mel.root.name)
    return {"cache": cache, "outputs": outputs, "presets": presets, "used_mel": used_mel.root,
            "stale_mel": stale_mel.root, "faces": faces, "used_emb": used_emb, "stale_emb": stale_emb}


def test_report_sizes_add_up(workspace: dict) -> None:
    report = cache_report(workspace["cache"]).set_index("folder")
    assert set(report.kind) == {"mel", "faces", "emb-mel"}
    for folder in report.index:
        row = report.loc[folder]
        assert row.entry_bytes + row.packed_bytes == _folder_bytes(workspace["cache"] / folder)
    mel = report.loc[workspace["used_mel"].name]
    assert (mel.clips, mel.ok, mel.packed_stacks) == (5, 5, 2) and mel.params.startswith("seed")
    assert mel.packed_bytes == _folder_bytes(workspace["used_mel"] / "packed")
    faces = report.loc[workspace["faces"].name]
    assert (faces.clips, faces.ok, faces.error) == (2, 1, 1) and "jpeg q80" in faces.params
    totals = report_totals(report.reset_index()).set_index("kind")
    assert totals.loc["mel", "folders"] == 2 and totals.loc["all", "folders"] == len(report)
    assert totals.loc["all", "entry_bytes"] + totals.loc["all", "packed_bytes"] == _folder_bytes(workspace["cache"])


def test_stale_folders_are_listed_and_removed_only_with_yes(workspace: dict) -> None:
    ws = workspace
    kw = {"outputs": ws["outputs"], "presets": ws["presets"]}
    stale = stale_folders(ws["cache"], **kw)
    assert set(stale.folder) == {ws["stale_mel"].name, ws["stale_emb"].name}
    dry = prune(ws["cache"], **kw)
    folders = dry[dry.what == "stale folder"]
    assert set(map(Path, folders.path)) == {ws["stale_mel"], ws["stale_emb"]}
    assert folders.bytes.sum() == _folder_bytes(ws["stale_mel"]) + _folder_bytes(ws["stale_emb"])
    stacks = dry[dry.what == "packed stack"]
    assert len(stacks) == 2 and all(Path(p).parent.parent == ws["used_mel"] for p in stacks.path)
    assert not dry.removed.any()
    assert ws["stale_mel"].is_dir() and ws["stale_emb"].is_dir() and len(list(ws["used_mel"].glob("packed/*"))) == 4
    # nothing is older than a day: --older-than 1 removes nothing; a stale folder last used 3 days ago goes
    assert prune(ws["cache"], yes=True, older_than_days=1, **kw).empty and ws["stale_mel"].is_dir()
    three_days = time.time() - 3 * 86400
    for path in [ws["stale_mel"], *ws["stale_mel"].rglob("*")]:
        os.utime(path, (three_days, three_days))
    aged = prune(ws["cache"], yes=True, older_than_days=2, **kw)
    assert list(map(Path, aged.path)) == [ws["stale_mel"]] and aged.removed.all()
    assert not ws["stale_mel"].exists() and ws["stale_emb"].is_dir()
    done = prune(ws["cache"], yes=True, **kw)
    assert done.removed.all() and len(done) == len(dry) - 1
    assert not ws["stale_mel"].exists() and not ws["stale_emb"].exists()
    for kept in ("used_mel", "faces", "used_emb"):  # used by a run, by a preset, made from a used folder
        assert ws[kept].is_dir()
    assert not list(ws["used_mel"].glob("packed/*")) and MelStore(ws["used_mel"]).get("clip3.mp4")[0, 0] == 3


def test_cache_command(workspace: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """``cache`` reports, ``cache prune`` is a dry run, ``cache prune --yes`` deletes (runs: $FFDV_OUTPUTS, presets:
    the project's params/)."""
    ws = workspace
    project = ws["presets"].parent
    (project / "pyproject.toml").write_text("")
    monkeypatch.setenv("FFDV_PROJECT_ROOT", str(project))
    monkeypatch.setenv("FFDV_OUTPUTS", str(ws["outputs"]))
    monkeypatch.setenv("FFDV_CACHE", str(ws["cache"]))
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert ws["used_mel"].name in out and "emb-mel" in out and "all" in out
    assert main(["cache", "prune"]) == 0
    out = capsys.readouterr().out
    assert ws["stale_mel"].name in out and "dry run" in out and ws["stale_mel"].is_dir()
    assert main(["cache", "prune", "--yes"]) == 0
    assert not ws["stale_mel"].exists() and ws["used_mel"].is_dir() and ws["faces"].is_dir()


# -------------------------------------------------------------------------------------------------- face codec


def _crops(seed: int = 0, t: int = 3, s: int = 32) -> np.ndarray:
    """Smooth RGB crops (compressible like faces are), distinct per frame."""
    y, x = np.mgrid[0:s, 0:s]
    base = np.stack([x * 4, y * 4, (x + y) * 2], -1).astype(np.float64)
    rng = np.random.default_rng(seed)
    return np.stack([np.clip(base + rng.normal(0, 2, base.shape) + 30 * k, 0, 255) for k in range(t)]).astype(
        np.uint8)


def test_codec_round_trip_and_sizes() -> None:
    entry = {"faces": _crops(0), "mouths": _crops(1, s=16), "found": np.array([True, False, True]),
             "landmarks": np.random.default_rng(2).random((3, 5, 2)).astype(np.float32)}
    sizes = {}
    for codec, quality in (("raw", 90), ("png", 90), ("jpeg", 90), ("jpeg", 50)):
        stored = encode_crops(entry, codec, quality)
        buf = io.BytesIO()
        np.savez(buf, **stored)
        sizes[(codec, quality)] = buf.tell()
        buf.seek(0)
        with np.load(buf) as z:
            back = decode_crops({k: z[k] for k in z.files})
        assert set(back) == set(entry)
        for k in ("found", "landmarks"):
            np.testing.assert_array_equal(back[k], entry[k])
        for k in ("faces", "mouths"):
            assert back[k].shape == entry[k].shape and back[k].dtype == np.uint8
            err = np.abs(back[k].astype(int) - entry[k]).mean()
            assert err == 0 if codec in ("raw", "png") else 0 < err < 4
        if codec != "raw":
            assert "faces" not in stored and stored["faces_encoded"].dtype == np.uint8
    assert sizes[("jpeg", 50)] < sizes[("jpeg", 90)] < sizes[("png", 90)] < sizes[("raw", 90)]
    # the red channel stays red: encoding and decoding swap RGB <-> BGR both ways
    red = np.zeros((1, 16, 16, 3), np.uint8)
    red[..., 0] = 200
    got = decode_crops(encode_crops({"faces": red}, "jpeg", 95))["faces"]
    assert got[..., 0].mean() > 190 and got[..., 2].mean() < 10


def test_codec_is_part_of_the_faces_key_and_raw_keeps_the_old_key() -> None:
    old = face_params({"face_detector": "mtcnn"})
    assert "codec" not in old and "quality" not in old  # raw: the key it had before these fields
    assert face_params({"face_detector": "mtcnn", "face_codec": "raw", "face_quality": 50}) == old
    keys = {params_hash(face_params({"face_detector": "mtcnn", **p})) for p in (
        {}, {"face_codec": "png"}, {"face_codec": "png", "face_quality": 50}, {"face_codec": "jpeg"},
        {"face_codec": "jpeg", "face_quality": 75})}
    assert len(keys) == 4  # png ignores the quality; each jpeg quality is its own cache
    with pytest.raises(ValueError, match="face_codec"):
        face_params({"face_codec": "webp"})
    with pytest.raises(ValueError, match="face_quality"):
        face_params({"face_codec": "jpeg", "face_quality": 0})


def test_extraction_stores_encoded_crops_and_recode_matches(tmp_path: Path) -> None:
    """A png cache reads back exactly what a raw cache holds, a jpeg cache close to it; ``recode_faces`` from the
    raw cache writes the folder (and the bytes) that extracting with that codec writes."""
    clip = make_clip(tmp_path / "c.mp4", seconds=1.0, seed=0)
    clips = pd.DataFrame({"video_name": ["c.mp4"], "path": [str(clip)]})
    base = {"face_frames": 3, "face_detector": "center", "face_size": 48}
    stores = {codec: extract_faces(clips, {**base, "face_codec": codec}, tmp_path / "cache", workers=1,
                                   progress=False) for codec in ("raw", "png", "jpeg")}
    raw = stores["raw"].get("c.mp4")
    assert raw.any() and raw.shape == (3, 48, 48, 3)
    np.testing.assert_array_equal(stores["png"].get("c.mp4"), raw)
    assert 0 < np.abs(stores["jpeg"].get("c.mp4").astype(int) - raw).mean() < 4
    with np.load(stores["jpeg"].path("c.mp4")) as z:
        assert "faces_encoded" in z.files and "faces" not in z.files
        # a path that crops without the cache gets the same crops through as_stored
        fresh = {"faces": raw, "found": stores["raw"].face_found("c.mp4")}
        np.testing.assert_array_equal(as_stored(fresh, stores["jpeg"].params)["faces"], stores["jpeg"].get("c.mp4"))
    sizes = {c: s.path("c.mp4").stat().st_size for c, s in stores.items()}
    assert sizes["jpeg"] < sizes["png"] < sizes["raw"]
    for codec in ("png", "jpeg"):
        other = tmp_path / "recoded"
        folder = recode_faces(stores["raw"].root, codec, 90, cache_root=other)
        key = params_hash(face_params({**base, "face_codec": codec}))
        assert folder.name == stores[codec].root.name == f"faces-{key}"
        recoded = FaceStore(folder)
        assert recoded.status("c.mp4") == "ok"
        np.testing.assert_array_equal(recoded.get("c.mp4"), stores[codec].get("c.mp4"))
        assert recoded.path("c.mp4").read_bytes() == stores[codec].path("c.mp4").read_bytes()


def test_mel_entries_stored_as_png_read_back_exactly_and_keep_raw_keys(tmp_path: Path) -> None:
    """``mel_codec: png``: the same images (lossless) in fewer bytes, under a key of its own; a raw cache keeps the
    key it had before the field existed (no ``codec`` in its resolved parameters)."""
    from ffdv_utils.features.extract import extract_mels

    assert "codec" not in mel_params({"mel_preset": "seed"}) and "codec" not in mel_params({"mel_codec": "raw"})
    assert params_hash(mel_params({"mel_preset": "seed", "mel_codec": "png"})) != params_hash(
        mel_params({"mel_preset": "seed"}))
    with pytest.raises(ValueError, match="mel_codec"):
        mel_params({"mel_codec": "jpeg"})
    clips = pd.DataFrame({"video_name": [f"c{i}.mp4" for i in range(2)],
                          "path": [str(make_clip(tmp_path / f"c{i}.mp4", seconds=1.5, seed=i)) for i in range(2)]})
    stores = {codec: extract_mels(clips, {"mel_preset": "seed", "mel_codec": codec}, tmp_path / "cache", workers=1,
                                  progress=False) for codec in ("raw", "png")}
    for name in clips.video_name:
        raw = stores["raw"].get(name)
        assert raw.shape == (256, 256) and raw.any()
        np.testing.assert_array_equal(stores["png"].get(name), raw)
        assert stores["png"].path(name).stat().st_size < stores["raw"].path(name).stat().st_size
        assert np.load(stores["png"].path(name)).ndim == 1  # PNG bytes inside the .npy
    np.testing.assert_array_equal(stores["png"].packed(clips.video_name, 64, 64),
                                  stores["raw"].packed(clips.video_name, 64, 64))


def test_embedding_stacks_count_as_stacks_rebuilt_on_demand(tmp_path: Path) -> None:
    """An embedding folder's ``stacks/`` (streamed embeddings, features.embeddings) is reported with the packed
    stacks, not as entries, so ``cache`` shows what ``prune`` can take back."""
    folder = tmp_path / "emb-faces-0123456789ab"
    (folder / "entries" / "aa").mkdir(parents=True)
    (folder / "stacks").mkdir()
    (folder / "params.json").write_text(json.dumps({"kind": "faces", "source": "faces-x"}))
    np.save(folder / "entries" / "aa" / "c.npy", np.zeros((8, 16), np.float16))
    np.save(folder / "stacks" / "stack-00.npy", np.zeros((100, 8, 16), np.float16))
    [row] = cache_report(tmp_path).to_dict("records")
    assert row["packed_stacks"] == 1
    assert row["packed_bytes"] == (folder / "stacks" / "stack-00.npy").stat().st_size
    assert row["entry_bytes"] < row["packed_bytes"]
