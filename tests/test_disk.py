"""Extraction and a full disk: checked up front, and a disk that fills midway stops cleanly, keeping finished work."""

import errno
from collections import namedtuple

import pytest

from ffdv_utils.core.files import atomic_write
from ffdv_utils.data.labels import load_split
from ffdv_utils.features.extract import DiskFullError, extract_mels
from ffdv_utils.features.params import mel_params


@pytest.fixture(scope="module")
def clips(sample):
    return load_split(sample["data_root"], "train").head(6)[["video_name", "path"]]


def test_refuses_to_start_without_room(clips, tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("ffdv_utils.features.extract.shutil.disk_usage", lambda p: usage(10**9, 10**9 - 10**6, 10**6))
    with pytest.raises(DiskFullError, match="GiB free"):
        extract_mels(clips, mel_params({}), tmp_path, workers=1, progress=False)
    assert not list(tmp_path.rglob("*.npy"))


def test_disk_filling_midway_stops_cleanly_and_resumes(clips, tmp_path, monkeypatch):
    real_save = atomic_write
    calls = {"n": 0}

    def filling(path, data):
        calls["n"] += "entries" in str(path)
        if calls["n"] > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(path, data)

    # entries are written by the extraction engine, the manifest by the cache: the disk fills for both
    monkeypatch.setattr("ffdv_utils.features.extract.atomic_write", filling)
    monkeypatch.setattr("ffdv_utils.features.cache.atomic_write", filling)
    with pytest.raises(DiskFullError, match="clip\\(s\\) finished in this run are kept"):
        with pytest.warns(UserWarning, match="manifest"):  # the manifest cannot be written either
            extract_mels(clips, mel_params({}), tmp_path, workers=1, progress=False)
    kept = list(tmp_path.glob("mel-*/entries/*/*.npy"))
    assert len(kept) == 2  # whole entries only: no temporary file left behind
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and ".tmp" in p.name]
    monkeypatch.setattr("ffdv_utils.features.extract.atomic_write", real_save)
    monkeypatch.setattr("ffdv_utils.features.cache.atomic_write", real_save)
    store = extract_mels(clips, mel_params({}), tmp_path, workers=1, progress=False)
    assert store.stats["cached"] == 2 and store.stats["computed"] == len(clips) - 2
    assert len(store.table) == len(clips)
    assert all(store.status(n) == "ok" for n in clips.video_name)
