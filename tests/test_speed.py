"""Readable progress output, the runner's kernel settings, the extraction benchmark's floor, and the
audio decoder's buffers (exact output). Speed itself is measured by ``bench extraction``, never by a timed test."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

from ffdv_utils.core.progress import ENV_VAR, LogProgress, progress_bar, progress_mode
from ffdv_utils.media.decode import _Segments, load_audio
from ffdv_utils.sample_data.clips import make_clip


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def auto_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decision as a user's shell would leave it: no FFDV_PROGRESS, no Kaggle."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)


@pytest.fixture(scope="module")
def short_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("short")
    return {"stereo48k": make_clip(d / "s48.mp4", seconds=3.0, width=320, height=240, sample_rate=48000, seed=1),
            "mono16k": make_clip(d / "m16.mp4", seconds=3.5, width=320, height=240, sample_rate=16000, channels=1,
                                 seed=2),
            "noaudio": make_clip(d / "na.mp4", seconds=1.0, width=160, height=120, audio=False)}


# ------------------------------------------------------------------------------------------------------ progress


def test_progress_mode_follows_the_stream_and_the_override(auto_progress, monkeypatch) -> None:
    assert progress_mode(io.StringIO()) == "log"  # a log file, a pipe, CI
    assert progress_mode(_Terminal()) == "bar"
    monkeypatch.setenv(ENV_VAR, "bar")
    assert progress_mode(io.StringIO()) == "bar"
    monkeypatch.setenv(ENV_VAR, "off")
    assert progress_mode(_Terminal()) == "off"


def test_progress_bar_is_a_few_lines_off_a_terminal(auto_progress) -> None:
    out = io.StringIO()
    bar = progress_bar(total=160, desc="mel features", unit="clip", file=out, smoothing=0.05)
    assert isinstance(bar, LogProgress)
    for i in range(160):
        if i == 10:
            bar.set_postfix(errors=1, refresh=False)
        bar.update(1)
    bar.close()
    bar.close()  # a second close prints nothing
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and "\r" not in out.getvalue()
    assert [ln.split(" clip")[0] for ln in lines] == ["mel features: 40/160", "mel features: 80/160",
                                                      "mel features: 120/160", "mel features: 160/160"]
    assert "errors=1" in lines[-1] and " in " in lines[-1]


def test_progress_bar_iterable_transient_and_empty(auto_progress) -> None:
    out = io.StringIO()
    assert list(progress_bar(range(9), desc="probe", unit="clip", file=out)) == list(range(9))
    assert out.getvalue().splitlines()[-1].startswith("probe: 9/9 clip in ")
    out = io.StringIO()
    for _ in progress_bar(iter(range(5)), desc="stream", unit="batch", file=out):  # no len(): no total
        pass
    assert out.getvalue().splitlines() == ["stream: 5 batch in " + out.getvalue().split(" in ", 1)[1].strip()]
    out = io.StringIO()
    for _ in progress_bar(range(8), desc="predict", unit="batch", leave=False, file=out):  # transient
        pass
    assert len(out.getvalue().splitlines()) == 1 and out.getvalue().startswith("predict: 8/8 batch in ")
    out = io.StringIO()
    progress_bar(total=0, desc="nothing", file=out).close()
    progress_bar(total=50, desc="quiet", file=out, disable=True).update(50)
    assert out.getvalue() == ""


def test_progress_bar_on_a_terminal_is_tqdm(auto_progress) -> None:
    out = _Terminal()
    bar = progress_bar(total=3, desc="x", file=out, mininterval=0)
    for _ in range(3):
        bar.update(1)
    bar.close()
    assert type(bar).__module__.startswith("tqdm") and out.getvalue().count("\r") >= 3


def test_extraction_progress_is_a_few_lines_in_a_log(short_clips, tmp_path, auto_progress, capfd) -> None:
    from ffdv_utils.features.extract import extract_mels

    names = [f"c{i}.mp4" for i in range(12)]
    clips = pd.DataFrame({"video_name": names, "path": [str(short_clips["mono16k"])] * 12})
    store = extract_mels(clips, {}, tmp_path / "cache", workers=1, progress=True)
    err = capfd.readouterr().err  # pytest's captured stderr is not a terminal
    assert store.stats["ok"] == 12
    lines = [ln for ln in err.splitlines() if ln.startswith("mel features")]
    assert 1 <= len(lines) <= 4 and lines[-1].startswith("mel features: 12/12 clip in"), err
    assert "\r" not in err


# -------------------------------------------------------------------------------------------------------- runner


def _tiny_notebook(path: Path) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("n = 3", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("import os\nfrom ffdv_utils.core.progress import progress_bar\n"
                                          "print('mode', os.environ.get('FFDV_PROGRESS'))\n"
                                          "for _ in progress_bar(range(n), desc='cells', unit='step'):\n"
                                          "    pass")]
    nbformat.write(nb, str(path))
    return path


@pytest.mark.slow
def test_runner_kernel_has_no_tcp_warning_and_prints_progress_lines(tmp_path, auto_progress, capfd,
                                                                     monkeypatch) -> None:
    from ffdv_utils.core.runner import execute_notebook

    root = str(Path(__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    out = tmp_path / "out.ipynb"  # the kernel imports this tree's ffdv_utils ^
    execute_notebook(_tiny_notebook(tmp_path / "t.ipynb"), out, {"n": 40}, progress=True, cwd=tmp_path)
    err = capfd.readouterr().err  # the kernel writes its own log to the stderr it inherited from this process
    assert "without encryption" not in err, err
    assert ENV_VAR not in os.environ  # restored after the run
    nb = json.loads(out.read_text())
    text = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
    assert "mode log" in text and "\r" not in text
    assert [ln for ln in text.splitlines() if ln.startswith("cells")][-1].startswith("cells: 40/40 step in"), text
    assert len([ln for ln in text.splitlines() if ln.startswith("cells")]) == 4


# -------------------------------------------------------------------------------------------------------- decode


def test_segments_grow_and_split_on_a_channel_change() -> None:
    seg = _Segments(10)  # below the minimum: 4096 samples to start with
    a = [np.arange(3000, dtype=np.float32) + 10_000 * i for i in range(3)]
    for x in a:  # stereo frames, 9000 samples per channel: the buffer must grow twice over its start
        seg.add((x.tobytes(), (-x).tobytes()), x.size)
    seg.add((np.ones(5, np.float32).tobytes(),), 5)  # mono from here on: a new segment
    parts = seg.filled()
    assert [p.shape for p in parts] == [(2, 9000), (1, 5)] and seg.total == 9005
    np.testing.assert_array_equal(parts[0][0], np.concatenate(a))
    np.testing.assert_array_equal(parts[0][1], -np.concatenate(a))


@pytest.mark.parametrize("kind", ["stereo48k", "mono16k"])
def test_load_audio_equals_a_plain_decode(short_clips, kind) -> None:
    """At the stream's own rate (no resampling): exactly the decoded samples, channels averaged, end padding cut."""
    path = short_clips[kind]
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        rate, seconds = s.codec_context.sample_rate, float(s.duration * s.time_base)
        planes = np.concatenate([f.to_ndarray() for f in c.decode(s)], axis=1)
    ref = planes[0] if len(planes) == 1 else (planes[0] + planes[1]) / 2
    ref = ref[: int(round(seconds * rate))]
    got = load_audio(path, rate)
    assert got.dtype == np.float32 and got.size == ref.size
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(load_audio(path, rate, max_seconds=1.0), ref[:rate])


# ---------------------------------------------------------------------------------------------------------- bench


def test_bench_reports_the_floor(short_clips, tmp_path) -> None:
    from ffdv_utils.bench.extraction import _Floor, bench_extraction
    from ffdv_utils.features.mel import mel_image
    from ffdv_utils.features.params import mel_params

    mp = mel_params({})
    for kind in ("stereo48k", "mono16k"):  # the floor does the same work: an image of the workspace's shape
        img = _Floor(mp)(str(short_clips[kind]))
        ref = mel_image(load_audio(short_clips[kind], mp["sr"], mp["max_seconds"]), mp)
        # (the floor keeps the AAC encoder's end padding, up to 2048 samples: a few frames more)
        assert img.dtype == np.uint8 and img.shape[0] == ref.shape[0] and 0 <= img.shape[1] - ref.shape[1] <= 9
        w = ref.shape[1]
        assert img.std() > 5 and np.corrcoef(img[:, :w].ravel().astype(float), ref.ravel().astype(float))[0, 1] > 0.8
    assert _Floor(mp)(str(short_clips["noaudio"])) is None
    vids = tmp_path / "v"
    vids.mkdir()
    for kind, p in short_clips.items():
        (vids / p.name).symlink_to(p)
    lines: list[str] = []
    r = bench_extraction(vids, workers=1, faces=False, progress=False, log=lines.append, min_mel_tasks=6)
    assert r["floor_clips_per_s"] > 0 and r["floor_cpu_s_per_clip"] > 0 and len(r["floor_runs_clips_per_s"]) == 2
    assert r["floor_distance_1w"] == pytest.approx(r["floor_clips_per_s"] / r["default_1w_clips_per_s"], rel=0.01)
    assert any(ln.startswith("    floor (bare PyAV decode") and "x the floor's time" in ln for ln in lines), lines
    t = r["targets"]["audio_floor_distance"]
    assert t["met"] == (r["floor_distance_1w"] <= 2) and t["value"] == r["floor_distance_1w"]
    assert r["clip_seconds_median"] < 6 and r["targets"]["audio_1_worker"]["target"] == ">= 12x"
    assert r["default_1w_cpu_s_per_clip"] > 0 and len(r["load_avg_start"]) in (0, 3)


def test_extraction_targets_short_and_long_clips() -> None:
    from ffdv_utils.bench.extraction import extraction_targets

    short = extraction_targets({"ratio_1w": 11.0, "ratio_par": 21.0, "floor_distance_1w": 2.1,
                                "clip_seconds_median": 4.2})
    assert {k: v["met"] for k, v in short.items()} == {"audio_1_worker": False, "audio_default_workers": True,
                                                       "audio_floor_distance": False}
    long = extraction_targets({"ratio_1w": 11.0, "floor_distance_1w": 1.9, "clip_seconds_median": 7.5,
                               "faces_mtcnn_peak_rss_mib": 1600.0})
    assert {k: v["met"] for k, v in long.items()} == {"audio_1_worker": True, "audio_floor_distance": True,
                                                      "faces_mtcnn_rss": False}


def test_bench_cli_has_short_clips_flag() -> None:
    import argparse

    from ffdv_utils.cli.main import add_bench_parser

    ap = argparse.ArgumentParser()
    add_bench_parser(ap.add_subparsers(dest="command"))
    assert ap.parse_args(["bench", "extraction", "--short"]).short
    assert not ap.parse_args(["bench", "extraction"]).short


def test_short_bench_shapes_are_short(tmp_path) -> None:
    from ffdv_utils.media.decode import probe_video
    from ffdv_utils.sample_data.clips import SHORT_SHAPES, make_clips

    assert all(3 <= s[2] <= 6 and 16000 <= s[3] <= 48000 for s in SHORT_SHAPES)
    paths = make_clips(tmp_path, 2, progress=False, shapes=SHORT_SHAPES)
    info = [probe_video(p) for p in paths]
    assert [(i["width"], i["height"], i["sample_rate"], i["channels"]) for i in info] == \
        [s[:2] + s[3:] for s in SHORT_SHAPES[:2]]
    assert all(3 <= i["duration"] <= 6.2 for i in info)
    assert make_clips(tmp_path, 2, progress=False, shapes=SHORT_SHAPES) == paths  # reused, not rewritten
