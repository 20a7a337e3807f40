"""Past one machine: extraction and scoring in shards (``--shard K/N``) that merge without recomputing anything.

Two extraction shards run at the same time (two processes, as on two machines sharing a folder) on a tiny generated
data root with a clip without audio and a broken one; an unsharded run afterwards computes nothing and leaves the
same cache as one unsharded extraction. Scoring parts merge into the unsharded prediction; a missing or overlapping
part is refused, naming it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ffdv_utils.cli.main import main
from ffdv_utils.core.errors import ConfigError
from ffdv_utils.core.shards import Shard, shard_of
from ffdv_utils.features.cache import FaceStore, MelStore, read_manifest

ROOT = Path(__file__).resolve().parents[1]
PRESET = {"model": "test_resnet", "model_type": "fusion", "image_size": 32, "face_frames": 2, "face_size": 32,
          "feature_workers": 1, "freeze_backbone": True, "pretrained": False, "device": "cpu"}


def tiny_root(root: Path) -> Path:
    """8 train, 4 val, 5 test clips of half a second; train_05 has no audio stream, train_06 is an empty file."""
    from ffdv_utils.sample_data.clips import make_clip

    for split, folder, n in (("train", "trainset", 8), ("val", "valset", 4)):
        names = [f"{split}_{i:02d}.mp4" for i in range(n)]
        for i, name in enumerate(names):
            path = root / folder / name
            if name == "train_06.mp4":
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"")
                continue
            make_clip(path, seconds=0.5, width=32, height=32, fps=8, seed=i + 10 * (split == "val"), face=False,
                      audio=name != "train_05.mp4")
        pd.DataFrame({"video_name": names, "target": [i % 2 for i in range(n)]}).to_csv(
            root / f"{split}_label.txt", index=False)
    for i in range(5):
        make_clip(root / "testset" / f"test_{i:02d}.mp4", seconds=0.5, width=32, height=32, fps=8, seed=50 + i,
                  face=False)
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_root(tmp_path_factory.mktemp("shard") / "data")


@pytest.fixture(scope="module")
def preset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("preset") / "tiny.yaml"
    path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in PRESET.items()))
    return path


def _env(cache: Path, outputs: Path) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "FFDV_CACHE": str(cache),
            "FFDV_OUTPUTS": str(outputs), "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)}


def _run_shards(cache: Path, outputs: Path, data: Path, preset: Path) -> list[subprocess.Popen]:
    """``python -m ffdv_utils extract --shard 1/2`` and ``2/2`` started at once; the processes."""
    return [subprocess.Popen([sys.executable, "-m", "ffdv_utils", "extract", "-f", str(preset), "--data-root",
                              str(data), "--shard", f"{k}/2", "--quiet"], env=_env(cache, outputs),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in (1, 2)]


@pytest.fixture(scope="module")
def sharded_cache(tmp_path_factory, data, preset) -> Path:
    """A cache filled by ``extract --shard 1/2`` and then ``--shard 2/2`` (this process; at the same time in two
    processes: ``test_two_shard_processes_at_once``)."""
    base = tmp_path_factory.mktemp("sharded")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FFDV_CACHE", str(base / "cache"))
        mp.setenv("FFDV_OUTPUTS", str(base / "out"))
        for k in (1, 2):
            assert main(["extract", "-f", str(preset), "--data-root", str(data), "--shard", f"{k}/2", "--quiet"]) == 0
    return base / "cache"


def _folders(cache: Path) -> dict[str, Path]:
    return {f.name.split("-")[0] + ("-" + f.name.split("-")[1] if f.name.startswith("emb") else ""): f
            for f in cache.iterdir() if f.is_dir()}


def _all_clips(data: Path) -> set[str]:
    return {p.name for d in ("trainset", "valset", "testset") for p in (data / d).iterdir()}


def _extract_here(monkeypatch, cache: Path, outputs: Path, data: Path) -> dict:
    """``python -m ffdv_utils extract`` unsharded, in this process, on ``cache``; its report."""
    from ffdv_utils.features.plan import extract_plan

    monkeypatch.setenv("FFDV_CACHE", str(cache))
    monkeypatch.setenv("FFDV_OUTPUTS", str(outputs))
    return extract_plan({**PRESET, "data_root": str(data)}, progress=False)


# ---------------------------------------------------------------------------------------------------------------
# K/N


def test_parts_are_stable_disjoint_and_cover_every_name():
    names = [f"clip_{i:05d}.mp4" for i in range(2000)]
    parts = {k: set(np.array(names)[Shard(k, 4).mask(names)]) for k in range(1, 5)}
    assert set().union(*parts.values()) == set(names)
    assert sum(len(p) for p in parts.values()) == len(names)  # disjoint
    assert all(400 < len(p) < 600 for p in parts.values())  # and about even
    # by the name alone: not by order, not by the interpreter's string hash (PYTHONHASHSEED), not by the machine
    shuffled = list(reversed(names))
    assert set(np.array(shuffled)[Shard(3, 4).mask(shuffled)]) == parts[3]
    assert [shard_of(n, 7) for n in ("a.mp4", "train_00.mp4", "ü b.mp4")] == [4, 6, 2]
    code = "from ffdv_utils.core.shards import shard_of; print(shard_of('train_00.mp4', 7))"
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed,
                                                                  "PYTHONPATH": str(ROOT)},
                             capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "6"


@pytest.mark.parametrize("spec, message", [
    ("3", "write K/N"), ("a/b", "write K/N"), ("1/2/3", "write K/N"), ("1.5/4", "write K/N"),
    ("0/4", "K must be between 1 and N"), ("5/4", "K must be between 1 and N"), ("1/0", "at least 1")])
def test_bad_shard_specs_are_refused_clearly(spec, message, preset, capsys):
    with pytest.raises(ConfigError, match=message):
        Shard.parse(spec)
    assert main(["extract", "-f", str(preset), "--shard", spec]) == 2  # one line, no traceback, nothing extracted
    assert message in capsys.readouterr().err
    assert Shard.parse(" 2 / 4 ") == Shard(2, 4) and Shard.parse(None) is None and Shard.parse("") is None


# ---------------------------------------------------------------------------------------------------------------
# extraction


def test_shards_write_their_own_manifests_disjoint_and_covering(sharded_cache, data):
    folders = _folders(sharded_cache)
    assert {"mel", "faces", "emb-mel", "emb-faces"} <= set(folders)
    for kind in ("mel", "faces"):
        folder = folders[kind]
        assert not (folder / "manifest.csv").exists()  # nobody wrote the shared manifest
        parts = {k: pd.read_csv(folder / f"manifest.shard-{k}-of-2.csv", dtype=str, keep_default_na=False)
                 for k in (1, 2)}
        names = {k: set(p.video_name) for k, p in parts.items()}
        assert not names[1] & names[2] and names[1] | names[2] == _all_clips(data)
        for k, p in parts.items():
            assert all(shard_of(n, 2) == k for n in p.video_name)
        # reading the cache unions the shard manifests: every status is there before any merge
        store = (MelStore if kind == "mel" else FaceStore)(folder)
        assert store.status("train_06.mp4") == "error" and len(store) == len(_all_clips(data))
        if kind == "mel":
            assert store.status("train_05.mp4") == "no_audio"
    # embeddings of the frozen backbones: every clip that decodes, each computed by its own shard
    for kind in ("emb-mel", "emb-faces"):
        assert len(list((folders[kind] / "entries").rglob("*.npy"))) == len(_all_clips(data)) - 1


@pytest.mark.slow  # two interpreters importing torch at once: about 25 s on a loaded 2-core machine
def test_two_shard_processes_at_once(sharded_cache, data, preset, tmp_path):
    """Two processes filling one cache folder at the same time leave what the shards run one after the other do."""
    procs = _run_shards(tmp_path / "cache", tmp_path / "out", data, preset)
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, out[-2000:] + err[-3000:]
        assert json.loads(out.strip().splitlines()[-1])["shard"] in ("1/2", "2/2")
    a, b = _folders(tmp_path / "cache"), _folders(sharded_cache)
    assert {k: f.name for k, f in a.items()} == {k: f.name for k, f in b.items()}
    for kind in ("mel", "faces"):
        assert sorted(p.name for p in a[kind].glob("manifest*")) == ["manifest.shard-1-of-2.csv",
                                                                      "manifest.shard-2-of-2.csv"]
        assert read_manifest(a[kind]) == read_manifest(b[kind])
    for kind in a:
        assert sorted(p.relative_to(a[kind]) for p in (a[kind] / "entries").rglob("*.np*")) == sorted(
            p.relative_to(b[kind]) for p in (b[kind] / "entries").rglob("*.np*"))


def test_unsharded_run_after_the_shards_computes_nothing_and_equals_one_extraction(sharded_cache, data, tmp_path,
                                                                                  monkeypatch):
    merged = tmp_path / "merged"
    shutil.copytree(sharded_cache, merged)  # folders copied together from several machines merge by file copy
    report = _extract_here(monkeypatch, merged, tmp_path / "out", data)
    assert report["features"] and all(s["computed"] == 0 for s in report["features"].values()), report
    single = _extract_here(monkeypatch, tmp_path / "single", tmp_path / "out", data)
    assert all(s["computed"] == len(_all_clips(data)) for s in single["features"].values())
    a, b = _folders(merged), _folders(tmp_path / "single")
    assert set(a) == set(b) and all(a[k].name == b[k].name for k in a)
    for kind in ("mel", "faces"):
        assert sorted(p.name for p in a[kind].glob("manifest*")) == ["manifest.csv"]  # compacted
        rows_a, rows_b = read_manifest(a[kind]), read_manifest(b[kind])
        assert rows_a == rows_b  # every row, the no_audio and error ones too, "recovered" nowhere
    for kind in ("mel", "faces", "emb-mel", "emb-faces"):
        files_a = sorted(p.relative_to(a[kind]) for p in (a[kind] / "entries").rglob("*.np*"))
        files_b = sorted(p.relative_to(b[kind]) for p in (b[kind] / "entries").rglob("*.np*"))
        assert files_a == files_b and files_a
        for rel in files_a:
            x, y = np.load(a[kind] / rel), np.load(b[kind] / rel)
            if kind == "faces":
                assert all(np.array_equal(x[k], y[k]) for k in x.files) and x.files == y.files
            else:
                assert np.array_equal(x, y)


def test_merge_command_compacts_without_computing(sharded_cache, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    shutil.copytree(sharded_cache, cache)
    folders = _folders(cache)
    before = {k: read_manifest(folders[k]) for k in ("mel", "faces")}
    entries = sorted((folders["mel"] / "entries").rglob("*"))
    monkeypatch.setenv("FFDV_CACHE", str(cache))
    assert main(["extract", "--merge"]) == 0
    assert "merged 2 shard manifest(s)" in capsys.readouterr().out
    for kind in ("mel", "faces"):
        assert sorted(p.name for p in folders[kind].glob("manifest*")) == ["manifest.csv"]
        assert read_manifest(folders[kind]) == before[kind]
    assert sorted((folders["mel"] / "entries").rglob("*")) == entries
    assert main(["extract", "--merge"]) == 0 and "no shard manifest" in capsys.readouterr().out


def test_the_newest_manifest_wins_and_a_rewritten_shard_file_is_kept(tmp_path):
    from ffdv_utils.features.cache import drop_shard_manifests, read_manifest_files, write_manifest

    row = {"video_name": "a.mp4", "has_audio": True, "status": "ok", "error": "", "note": "", "seconds": "1",
           "shape": "", "source": "1:1"}
    write_manifest(tmp_path, {"a.mp4": row})
    os.utime(tmp_path / "manifest.csv", ns=(1, 1))
    write_manifest(tmp_path, {"a.mp4": {**row, "source": "2:2"}}, Shard(1, 2))  # recomputed by a shard later
    rows, read = read_manifest_files(tmp_path)
    assert rows["a.mp4"]["source"] == "2:2" and len(read) == 2
    write_manifest(tmp_path, {"a.mp4": {**row, "source": "3:3"}}, Shard(1, 2))  # the shard wrote again meanwhile
    os.utime(tmp_path / "manifest.shard-1-of-2.csv", ns=(5, 5))
    assert drop_shard_manifests(read) == []  # not deleted: its newer rows are not in manifest.csv
    assert (tmp_path / "manifest.shard-1-of-2.csv").is_file()


def test_a_shard_manifest_merged_while_it_is_read_loses_no_row(tmp_path, monkeypatch):
    """A reader that listed manifest.csv and a shard manifest, then finds the shard file gone (a merge moved its rows
    into manifest.csv meanwhile), reads the folder again instead of missing the shard's rows."""
    from ffdv_utils.features.cache import read_manifest_files, write_manifest

    row = {"has_audio": True, "status": "ok", "error": "", "note": "", "seconds": "1", "shape": "", "source": "1:1"}
    a, b = {"video_name": "a.mp4", **row}, {"video_name": "b.mp4", **row, "status": "no_audio"}
    write_manifest(tmp_path, {"a.mp4": a})
    os.utime(tmp_path / "manifest.csv", ns=(1, 1))  # read first
    write_manifest(tmp_path, {"b.mp4": b}, Shard(1, 2))
    real, calls = pd.read_csv, []

    def read_then_merge(path, *args, **kwargs):
        out = real(path, *args, **kwargs)
        calls.append(Path(path).name)
        if len(calls) == 1:  # right after manifest.csv was read: another process merges
            write_manifest(tmp_path, {"a.mp4": a, "b.mp4": b})
            (tmp_path / "manifest.shard-1-of-2.csv").unlink()
        return out

    monkeypatch.setattr(pd, "read_csv", read_then_merge)
    rows, read = read_manifest_files(tmp_path)
    assert sorted(rows) == ["a.mp4", "b.mp4"] and rows["b.mp4"]["status"] == "no_audio"
    assert calls == ["manifest.csv", "manifest.csv"] and list(read) == [tmp_path / "manifest.csv"]


# ---------------------------------------------------------------------------------------------------------------
# scoring


@pytest.fixture(scope="module")
def scoring(tmp_path_factory, data, session_outputs):
    """An untrained mel+faces run and the unsharded prediction of the test clips (notebook 06's path)."""
    from conftest import untrained_run

    from ffdv_utils.data.labels import list_test
    from ffdv_utils.inference import predict_runs, write_submission

    run = untrained_run("shard-score", model_type="fusion")
    clips = list_test(data, "testset", None)
    scores, _ = predict_runs([run], clips, device="cpu", progress=False)
    reference = tmp_path_factory.mktemp("reference") / "prediction.csv"
    write_submission(clips, scores, reference)
    return {"run": run, "clips": clips, "reference": reference}


def test_merged_parts_equal_the_unsharded_prediction(scoring, data, tmp_path, capsys):
    from ffdv_utils.core.paths import run_dir

    parts = []
    for k in (1, 2, 3):
        out = tmp_path / f"part{k}.csv" if k > 1 else run_dir(scoring["run"]) / "parts" / "prediction.part-1-of-3.csv"
        assert main(["submission", "score", "--run", scoring["run"], "--shard", f"{k}/3", "--data-root", str(data),
                     "--device", "cpu", "--quiet", *(["-o", str(out)] if k > 1 else [])]) == 0  # 1/3: default path
        part = pd.read_csv(out, dtype=str)
        assert (part.shard == f"{k}/3").all() and all(shard_of(n, 3) == k for n in part.video_name)
        parts.append(out)
    pred = tmp_path / "prediction.csv"
    assert main(["submission", "merge", *map(str, reversed(parts)), "--data-root", str(data), "-o", str(pred)]) == 0
    assert pred.read_bytes() == scoring["reference"].read_bytes()  # same rows, order, scores, format
    capsys.readouterr()


def test_missing_or_overlapping_parts_are_refused_naming_them(scoring, data, tmp_path, capsys):
    from ffdv_utils.inference.shards import merge_parts, score_part
    from ffdv_utils.inference.submission import SubmissionError

    clips = scoring["clips"]
    paths = {}
    for k in (1, 2):
        paths[k] = tmp_path / f"p{k}.csv"
        score_part([scoring["run"]], clips, f"{k}/2", paths[k], device="cpu", progress=False)
    assert len(pd.read_csv(paths[1])) and len(pd.read_csv(paths[2]))
    out = tmp_path / "prediction.csv"
    with pytest.raises(SubmissionError, match="part 2/2 missing"):
        merge_parts([paths[1]], clips, out)
    copy = tmp_path / "copy.csv"
    shutil.copy(paths[1], copy)
    with pytest.raises(SubmissionError, match=f"{copy}.*{paths[1]}|{paths[1]}.*{copy}"):
        merge_parts([paths[1], paths[2], copy], clips, out)  # the same part twice
    other = tmp_path / "other.csv"  # the same clips split another way: rows overlap
    score_part([scoring["run"]], clips, "1/3", other, device="cpu", progress=False)
    with pytest.raises(SubmissionError, match="different numbers of shards"):
        merge_parts([paths[1], paths[2], other], clips, out)
    short = tmp_path / "short.csv"
    pd.read_csv(paths[2], dtype=str).iloc[1:].to_csv(short, index=False)
    with pytest.raises(SubmissionError, match=f"{short} \\(part 2/2\\) lacks 1"):
        merge_parts([paths[1], short], clips, out)
    plain = tmp_path / "plain.csv"  # `score` output (no shard column) scoring a clip that part 1 scores too
    pd.read_csv(paths[1], dtype=str)[["video_name", "score"]].head(1).to_csv(plain, index=False)
    with pytest.raises(SubmissionError, match=f"more than one part, first .* in .*{plain}|{plain}.*more than"):
        merge_parts([paths[1], paths[2], plain], clips, out)
    assert not out.exists()
    # from the command line: one line naming the problem
    assert main(["submission", "merge", str(paths[1]), "--data-root", str(data), "-o", str(out)]) == 2
    assert "part 2/2 missing" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="rank ensemble"):
        score_part([scoring["run"]], clips, "1/2", tmp_path / "r.csv", method="rank", device="cpu")


def test_score_command_shard_prints_only_its_files(scoring, data, capsys):
    videos = sorted(str(p) for p in (data / "testset").iterdir())
    got = {}
    for k in (1, 2):
        assert main(["score", "--run", scoring["run"], "--device", "cpu", "--shard", f"{k}/2", *videos]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert lines[0] == "video_name,score"
        got[k] = {line.split(",")[0] for line in lines[1:]}
        assert all(shard_of(n, 2) == k for n in got[k])
    assert not got[1] & got[2] and got[1] | got[2] == {Path(v).name for v in videos}
