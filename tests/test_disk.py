"""Extraction and a full disk: checked up front, and a disk that fills midway stops cleanly, keeping finished work."""

import errno
from collections import namedtuple

import pytest

from ffdv_utils import features


@pytest.fixture(scope="module")
def clips(sample):
    from ffdv_utils import data

    return data.load_split(sample["data_root"], "train").head(6)[["video_name", "path"]]


def test_refuses_to_start_without_room(clips, tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(features.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 10**6, 10**6))
    with pytest.raises(features.DiskFullError, match="GiB free"):
        features.extract_mels(clips, features.mel_params({}), tmp_path, workers=1, progress=False)
    assert not list(tmp_path.rglob("*.npy"))


def test_disk_filling_midway_stops_cleanly_and_resumes(clips, tmp_path, monkeypatch):
    real_save = features._atomic_save
    calls = {"n": 0}

    def filling(path, write):
        calls["n"] += "entries" in str(path)
        if calls["n"] > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(path, write)

    monkeypatch.setattr(features, "_atomic_save", filling)
    with pytest.raises(features.DiskFullError, match="clip\\(s\\) finished in this run are kept"):
        with pytest.warns(UserWarning, match="manifest"):  # the manifest cannot be written either
            features.extract_mels(clips, features.mel_params({}), tmp_path, workers=1, progress=False)
    kept = list(tmp_path.glob("mel-*/entries/*/*.npy"))
    assert len(kept) == 2  # whole entries only: no temporary file left behind
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and ".tmp" in p.name]
    monkeypatch.setattr(features, "_atomic_save", real_save)
    store = features.extract_mels(clips, features.mel_params({}), tmp_path, workers=1, progress=False)
    assert store.stats["cached"] == 2 and store.stats["computed"] == len(clips) - 2
    assert len(store.table) == len(clips)
    assert all(store.status(n) == "ok" for n in clips.video_name)
