from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ffdv_utils.data.audit import shortcut_audit
from ffdv_utils.data.index import media_index
from ffdv_utils.data.labels import (
    DataError,
    DataWarning,
    list_test,
    load_split,
    read_labels,
    read_template,
)


def write(path: Path, text: str, bom: bool = False, crlf: bool = False) -> Path:
    raw = text.replace("\n", "\r\n") if crlf else text
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + raw.encode("utf-8"))
    return path


def test_labels_tolerate_bom_crlf_whitespace_and_blank_lines(tmp_path):
    p = write(tmp_path / "l.txt", "video_name,target\n a.mp4 , 1 \nb,0\n\n\n", bom=True, crlf=True)
    df = read_labels(p)
    assert df.video_name.tolist() == ["a.mp4", "b.mp4"]  # names without .mp4 are completed
    assert df.target.tolist() == [1, 0]


def test_labels_accept_label_header_and_extra_columns(tmp_path):
    df = read_labels(write(tmp_path / "l.txt", "video_name,label,note\na.mp4,0,x\n"))
    assert df.target.tolist() == [0]


@pytest.mark.parametrize("text, where, what", [
    ("name,target\na.mp4,1\n", ":1:", "header"),
    ("a.mp4,1\nb.mp4,0\n", ":1:", "header"),
    ("video_name,target\na.mp4,1\nb.mp4,2\n", ":3:", "0 \\(real\\) or 1"),
    ("video_name,target\na.mp4,1\nb.mp4,yes\n", ":3:", "0 \\(real\\) or 1"),
    ("video_name,target\na.mp4,1\nb.mp4,0\na.mp4,0\n", ":4:", "listed twice \\(first at line 2\\)"),
    ("video_name,target\na.mp4\n", ":2:", "2 columns"),
    ("", ":1:", "empty"),
])
def test_labels_rejections_name_file_and_line(tmp_path, text, where, what):
    p = write(tmp_path / "bad_label.txt", text)
    with pytest.raises(DataError, match=f"bad_label.txt{where}.*{what}"):
        read_labels(p)


def test_template_keeps_order_and_names(tmp_path):
    p = write(tmp_path / "t.csv", "video_name,score\nz.mp4,\na.mp4,0\nm,\n")
    df = read_template(p)
    assert df.video_name.tolist() == ["z.mp4", "a.mp4", "m.mp4"]
    assert df.template_name.tolist() == ["z.mp4", "a.mp4", "m"]  # written back as the template spells them
    with pytest.raises(DataError, match="t2.csv:3"):
        read_template(write(tmp_path / "t2.csv", "video_name\na.mp4\na.mp4\n"))


def make_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for d in ("trainset", "valset", "testset"):
        (root / d).mkdir(parents=True)
    for n in ("a.mp4", "b.mp4", "extra.mp4"):
        (root / "trainset" / n).write_bytes(b"x")
    (root / "testset" / "t1.mp4").write_bytes(b"x")
    write(root / "train_label.txt", "video_name,target\na.mp4,1\nb.mp4,0\nghost.mp4,1\n")
    write(root / "val_label.txt", "video_name,target\n")
    return root


def test_load_split_warns_about_missing_and_unlabelled(tmp_path):
    root = make_root(tmp_path)
    with pytest.warns(DataWarning) as rec:
        df = load_split(root, "train")
    text = " ".join(str(w.message) for w in rec)
    assert "ghost.mp4" in text and "extra.mp4" in text
    assert df.video_name.tolist() == ["a.mp4", "b.mp4"]
    assert all(Path(p).is_file() for p in df.path)


def test_list_test_with_and_without_template(tmp_path):
    root = make_root(tmp_path)
    assert list_test(root).video_name.tolist() == ["t1.mp4"]
    write(root / "tpl.csv", "video_name,score\nmissing.mp4,\nt1.mp4,\n")
    df = list_test(root, template="tpl.csv")
    assert df.video_name.tolist() == ["missing.mp4", "t1.mp4"]
    assert df.exists.tolist() == [False, True]


def test_media_index_probes_and_caches(sample, tmp_path, monkeypatch):
    clips = load_split(sample["data_root"], "train")
    cache = tmp_path / "index.csv"
    idx = media_index(clips, cache=cache, progress=False)
    assert len(idx) == len(clips)
    assert (idx.duration > 0).all() and (idx.width > 0).all() and (idx.fps > 0).all()
    assert set(idx.sample_rate.astype(int)) <= {8000, 16000, 22050, 24000, 32000, 44100, 48000}
    calls = []

    monkeypatch.setattr("ffdv_utils.data.index.probe_video", lambda p: calls.append(p) or {})
    again = media_index(clips, cache=cache, progress=False)
    assert calls == []  # every clip came from the cache
    pd.testing.assert_series_equal(again.duration.astype(float), idx.duration.astype(float))


def test_shortcut_audit_flags_a_leaking_field():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    df = pd.DataFrame({"target": y, "duration": rng.random(200) + 2.0 * y, "fps": 25, "width": rng.random(200)})
    audit = shortcut_audit(df).set_index("field")
    assert audit.loc["duration", "suspicious"]
    assert audit.loc["fps", "auc"] == 0.5 and not audit.loc["fps", "suspicious"]
    assert not audit.loc["width", "suspicious"]
