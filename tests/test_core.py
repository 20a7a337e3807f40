"""The plumbing every stage shares, each in one place: atomic writes, file stamps, the Kaggle input search,
per-kind metrics, data-root resolution."""

from __future__ import annotations

import os

import numpy as np
import pytest

from ffdv_utils.core.files import atomic_path, atomic_write, file_stamp, sha256_file
from ffdv_utils.core.metrics import auc, per_kind, summarize
from ffdv_utils.core.paths import data_root_path, find_kaggle_data_root, find_kaggle_file


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    atomic_write(target, "first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "first"  # the old content survives a failed write
    assert [p.name for p in target.parent.iterdir()] == ["a.txt"]  # and no temporary file is left
    atomic_write(target, lambda fh: fh.write(b"\x00\x01"))
    assert target.read_bytes() == b"\x00\x01"


def test_file_stamp_and_sha256(tmp_path):
    f = tmp_path / "x.bin"
    assert file_stamp(f) == ""
    f.write_bytes(b"abc")
    first = file_stamp(f)
    assert first.startswith("3:")
    os.utime(f, ns=(1, 2))
    assert file_stamp(f) == "3:2" != first
    assert sha256_file(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_kaggle_search_is_bounded_and_skips_media_folders(tmp_path):
    base = tmp_path / "input"
    (base / "ds" / "weights").mkdir(parents=True)
    (base / "ds" / "weights" / "w.pt").write_bytes(b"w")
    assert find_kaggle_file("w.pt", base=base) == (base / "ds" / "weights" / "w.pt").resolve()
    # a file inside a clip folder is never found: the search does not list media folders
    data = base / "comp" / "data"
    (data / "testset").mkdir(parents=True)
    (data / "testset" / "hidden.pt").write_bytes(b"x")
    (data / "train_label.txt").write_text("video_name,target\n")
    assert find_kaggle_file("hidden.pt", base=base) is None
    assert find_kaggle_data_root(base) == data
    # nor anything deeper than `depth` folders below the mount
    deep = base / "a" / "b" / "c" / "d"
    deep.mkdir(parents=True)
    (deep / "deep.pt").write_bytes(b"d")
    assert find_kaggle_file("deep.pt", base=base) is None
    assert find_kaggle_file("deep.pt", base=base, depth=4) == (deep / "deep.pt").resolve()


def test_per_kind_scores_each_kind_against_the_real_clips():
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.9, 0.8, 0.15, 0.25])
    kinds = ["real", "real", "real", "swap", "swap", "voice", "voice"]
    got = per_kind(y, s, kinds)
    assert got == {"swap": pytest.approx(1.0), "voice": pytest.approx(auc([0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.15, 0.25]))}
    assert per_kind(y, s, ["real"] * 3 + ["fake"] * 4) == {}  # an unknown kind is no kind
    table = per_kind(y, s, kinds, metric=summarize)
    assert table["swap"]["n"] == 5 and table["voice"]["n_fake"] == 2


def test_data_root_path_takes_a_resolved_path_as_given(tmp_path, monkeypatch):
    monkeypatch.delenv("FFDV_DATA_ROOT", raising=False)
    assert data_root_path(tmp_path) == tmp_path
    monkeypatch.setenv("FFDV_DATA_ROOT", str(tmp_path))
    assert data_root_path(None) == tmp_path.resolve()
