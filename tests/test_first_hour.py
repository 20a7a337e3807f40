"""A competitor's first hour: the trap of resuming on other data, silent drops, failures that do not explain
themselves, the Kaggle round trip and what a person sees."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from ffdv_utils.core.runs import Run
from ffdv_utils.training.loop import TRAIN_DEFAULTS, fit

from test_train import TINY, tiny_datasets


# ---------------------------------------------------------------------------------------------------------------
# the trap: the same run name on other data


@pytest.mark.slow
def test_same_run_name_on_other_data_trains_afresh(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A finished run asked to train again on other data (other clips, labels or data root) must train, not resume
    at an epoch past the end and report the new data's metrics as if it had trained on them."""
    p = {**TRAIN_DEFAULTS, **TINY, "epochs": 1, "run_name": "trap", "data_root": None}
    run = Run(name="trap", dir=tmp_path / "trap", params=p)
    first = fit(p, run, *tiny_datasets(24, 12, seed=0))
    assert first["resumed_from_epoch"] == 0
    capsys.readouterr()
    again = fit(p, run, *tiny_datasets(24, 12, seed=0))  # the same data: resumed, nothing left to train
    assert again["resumed_from_epoch"] == 1
    capsys.readouterr()
    other = fit({**p, "data_root": str(tmp_path / "sample")}, run, *tiny_datasets(24, 12, seed=1))  # other labels
    out = capsys.readouterr().out
    assert other["resumed_from_epoch"] == 0, out
    assert "trained on other data" in out and "starting from scratch" in out
    assert pd.read_csv(run.path("history.csv")).epoch.tolist() == [1]
    saved = torch.load(run.dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert saved["data"]["n_train"] == 24
    moved = fit({**p, "data_root": str(tmp_path / "FFDV")}, run, *tiny_datasets(24, 12, seed=1))  # same clips, new root
    assert moved["resumed_from_epoch"] == 0 and "data root" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------------
# silent drops and wrong records


def test_label_file_not_utf8_is_refused_naming_line_and_byte(tmp_path: Path) -> None:
    from ffdv_utils.data.labels import DataError, read_labels

    path = tmp_path / "train_label.txt"
    path.write_bytes("video_name,target\nplain.mp4,0\ncafé_élan.mp4,1\n".encode("latin-1"))
    with pytest.raises(DataError) as err:
        read_labels(path)
    msg = str(err.value)
    assert f"{path}:3:" in msg and "0xe9" in msg and "UTF-8" in msg and "iconv" in msg and "café_élan" in msg


def test_label_file_utf16_with_bom_is_read_and_without_is_named(tmp_path: Path) -> None:
    from ffdv_utils.data.labels import DataError, read_labels

    text = "video_name,target\r\ncafé_élan.mp4,1\r\nplain,0\r\n"
    for enc in ("utf-16", "utf-32", "utf-8-sig"):
        path = tmp_path / f"{enc}.txt"
        path.write_bytes(text.encode(enc))
        df = read_labels(path)
        assert df.video_name.tolist() == ["café_élan.mp4", "plain.mp4"] and df.target.tolist() == [1, 0]
    bare = tmp_path / "bare.txt"
    bare.write_bytes(text.encode("utf-16-le"))
    with pytest.raises(DataError, match=r"bare\.txt:1: .*UTF-16 without a byte-order mark"):
        read_labels(bare)


@pytest.mark.slow  # runs the pipeline runner (each notebook's execution replaced by a stub)
def test_pipeline_console_shows_the_notebooks_warnings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    """A clip left out is said on the pipeline's console, not only inside the executed notebook."""
    import nbformat

    from ffdv_utils.core import runner

    def fake_execute(src, dst, parameters=None, **kw) -> None:
        nb = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell("x = 1")
        cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text=(
            "/x/ffdv_utils/data/labels.py:170: DataWarning: /d/train_label.txt: 1 labelled clip(s) have no file\n"
            "  warnings.warn(\n"
            "/x/site-packages/lib.py:3: FutureWarning: something deprecated\n"))]
        nb.cells.append(cell)
        nbformat.write(nb, str(dst))

    data = tmp_path / "data"
    data.mkdir()
    (data / "train_label.txt").write_text("video_name,target\n")
    monkeypatch.setattr(runner, "execute_notebook", fake_execute)
    monkeypatch.setenv("FFDV_OUTPUTS", str(tmp_path / "outputs"))
    runner.run_pipeline("warned", data_root=data, only="02")
    err = capsys.readouterr().err
    assert "[warned] 02_features warning: DataWarning: /d/train_label.txt: 1 labelled clip(s) have no file" in err
    assert "FutureWarning" not in err


def test_a_run_without_data_fails_at_start_and_keeps_the_record(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """No data root: the error comes from start_run (the notebook's setup cell) and says how to give one; the run
    folder's params.yaml still describes the results beside it."""
    from ffdv_utils.core.config import read_yaml
    from ffdv_utils.core.errors import ConfigError
    from ffdv_utils.core.runs import start_run

    monkeypatch.setenv("FFDV_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.delenv("FFDV_DATA_ROOT", raising=False)
    monkeypatch.setattr("ffdv_utils.core.paths.find_kaggle_data_root", lambda *a, **k: None)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train_label.txt").write_text("video_name,target\n")
    run = start_run({"run_name": "kept", "data_root": str(tmp_path / "data"), "lr": 0.5}, "03_train")
    before = (run.dir / "params.yaml").read_bytes()
    with pytest.raises(ConfigError, match=r"no data root: set data_root .*sample-data"):
        start_run({"run_name": "kept", "data_root": None, "lr": 0.1}, "03_train")
    assert (run.dir / "params.yaml").read_bytes() == before
    assert read_yaml(run.dir / "params" / "03_train.yaml")["lr"] == 0.5


def _fake_results(folder: Path, epoch: int) -> None:
    """What a finished training leaves (contents do not matter to the record keeping)."""
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    (folder / "checkpoints" / "best.pt").write_text(f"best of epoch {epoch}")
    (folder / "checkpoints" / "last.pt").write_text(f"last of epoch {epoch}")
    (folder / "metrics.json").write_text(json.dumps({"val_auc": 0.9, "best_epoch": epoch}))
    (folder / "history.csv").write_text("epoch\n1\n")


def test_a_run_that_fails_after_start_never_shows_old_results_beside_new_parameters(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point 3: a training started under the same run name with other parameters, failing later (in fit), must not
    leave the new params.yaml beside the earlier results: they move with their own parameters to superseded/."""
    from ffdv_utils.core.config import read_yaml
    from ffdv_utils.core.runs import start_run

    monkeypatch.setenv("FFDV_OUTPUTS", str(tmp_path / "outputs"))
    (tmp_path / "data").mkdir()
    base = {"run_name": "rec", "data_root": str(tmp_path / "data"), "model": "resnet18", "lr": 0.5}
    run = start_run(base, "03_train")
    _fake_results(run.dir, 3)
    start_run({**base, "lr": 0.1}, "03_train")  # ... and the training dies here (nothing written by it)
    assert read_yaml(run.dir / "params.yaml")["lr"] == 0.1
    assert not (run.dir / "metrics.json").exists() and not (run.dir / "checkpoints" / "best.pt").exists()
    [old] = list((run.dir / "superseded").iterdir())
    assert read_yaml(old / "params.yaml")["lr"] == 0.5 and json.loads((old / "metrics.json").read_text())["best_epoch"] == 3
    assert (old / "checkpoints" / "best.pt").read_text() == "best of epoch 3"
    assert "lr 0.5 -> 0.1" in (old / "why.txt").read_text()
    # last.pt stays: it records its own parameters, and the training decides from them (here: start afresh)
    assert (run.dir / "checkpoints" / "last.pt").read_text() == "last of epoch 3"


def test_more_epochs_or_a_default_written_out_keeps_the_results_for_resume(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Resuming with more epochs (or other workers, progress, a joined part's weight, or a default value written out)
    continues the same training: its results stay where resume and finish read them."""
    from ffdv_utils.core.runs import start_run
    from ffdv_utils.core.schema import TRAINING

    monkeypatch.setenv("FFDV_OUTPUTS", str(tmp_path / "outputs"))
    (tmp_path / "data").mkdir()
    base = {"run_name": "more", "data_root": str(tmp_path / "data"), "epochs": 2}
    run = start_run(base, "03_train")
    _fake_results(run.dir, 2)
    start_run({**base, "epochs": 6, "num_workers": 3, "progress": False, "profile_weight": 0.3,
               "lr": TRAINING["lr"]}, "03_train")
    assert (run.dir / "checkpoints" / "best.pt").is_file() and (run.dir / "metrics.json").is_file()
    assert not (run.dir / "superseded").exists()
    start_run({**base, "resume": False}, "03_train")  # told to start from scratch: the results go
    assert not (run.dir / "metrics.json").exists() and (run.dir / "superseded").is_dir()


@pytest.mark.slow
def test_training_from_scratch_moves_the_earlier_results_aside(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The training's own fresh start (other data under the same parameters) moves the earlier training's results
    aside too, instead of leaving its metrics.json until the new one is written."""
    p = {**TRAIN_DEFAULTS, **TINY, "epochs": 1, "run_name": "fresh", "data_root": None}
    run = Run(name="fresh", dir=tmp_path / "fresh", params=p)
    fit(p, run, *tiny_datasets(24, 12, seed=0))
    first = json.loads((run.dir / "metrics.json").read_text())
    fit(p, run, *tiny_datasets(24, 12, seed=1))  # other labels: from scratch
    [old] = list((run.dir / "superseded").iterdir())
    assert json.loads((old / "metrics.json").read_text()) == first
    assert "other data" in (old / "why.txt").read_text()
    assert (run.dir / "metrics.json").is_file()  # the new training's own


@pytest.mark.slow  # two papermill runs of a one-cell notebook
def test_papermill_by_hand_with_the_ffdv_kernel_starts_no_unencrypted_kernel(tmp_path: Path) -> None:
    """Point 12: papermill started by hand with ``-k ffdv`` (the spec ``make install`` writes) gets an encrypted
    kernel, so ipykernel's "running over TCP without encryption" notice does not come; the python3 spec shows it
    (the control: without CURVE in libzmq there is nothing to show)."""
    import os
    import subprocess
    import sys

    import nbformat

    from ffdv_utils.core.kernel import curve_available, install_kernel

    if not curve_available():
        pytest.skip("this pyzmq has no CURVE: no encrypted transport to start")
    install_kernel(tmp_path / "prefix")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 6 * 7\nx")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "in.ipynb")
    env = {**os.environ, "JUPYTER_PATH": str(tmp_path / "prefix" / "share" / "jupyter")}
    papermill = [sys.executable, "-m", "papermill", str(tmp_path / "in.ipynb")]
    runs = {k: subprocess.run([*papermill, str(tmp_path / f"{k}.ipynb"), "-k", k], env=env, capture_output=True,
                              text=True, timeout=300) for k in ("ffdv", "python3")}
    assert runs["ffdv"].returncode == 0, runs["ffdv"].stderr[-2000:]
    assert "without encryption" not in runs["ffdv"].stdout + runs["ffdv"].stderr
    assert "Executing notebook with kernel: ffdv" in runs["ffdv"].stderr
    assert nbformat.read(tmp_path / "ffdv.ipynb", 4).cells[0].outputs[0]["data"]["text/plain"] == "42"
    assert "without encryption" in runs["python3"].stdout + runs["python3"].stderr  # the notice the spec avoids


@pytest.mark.parametrize("name", ["01_eda", "02_features", "03_train", "04_augment", "05_compare", "06_submission"])
def test_notebook_opening_says_how_to_point_it_at_data(name: str) -> None:
    import nbformat

    nb = nbformat.read(str(Path(__file__).resolve().parents[1] / "notebooks" / f"{name}.ipynb"), as_version=4)
    intro = nb.cells[0].source
    assert nb.cells[0].cell_type == "markdown"
    assert "data_root" in intro and "FFDV_DATA_ROOT" in intro and "sample-data" in intro


# ---------------------------------------------------------------------------------------------------------------
# scoring many paths


def _stub_scoring(monkeypatch: pytest.MonkeyPatch) -> None:
    """score_table without a model: every present clip scores 0.25 (the naming and the rows are under test)."""
    import numpy as np

    from ffdv_utils.inference import score as score_mod

    def predict(model, params, clips, **kw) -> pd.DataFrame:
        exists = clips["exists"] if "exists" in clips else [Path(x).is_file() for x in clips.path]
        return pd.DataFrame({"video_name": clips.video_name, "score": np.where(exists, 0.25, 0.5),
                             "status": ["ok" if e else "fallback: file not found" for e in exists]})

    monkeypatch.setattr(score_mod, "checkpoint_path", lambda run: Path(str(run)))
    monkeypatch.setattr(score_mod, "_cached_detector", lambda *a: SimpleNamespace(params={}))
    monkeypatch.setattr(score_mod, "predict_clips", predict)


def test_score_table_names_clips_in_linear_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Making 40,000 names unique is one pass: with a count per name it is 1.6e9 string comparisons (about a minute
    on a busy 2-core machine, against a few seconds for the whole call, paths resolved and all)."""
    import time

    from ffdv_utils.inference.score import score_table

    _stub_scoring(monkeypatch)
    paths = [tmp_path / "test" / f"clip_{i:06d}.mp4" for i in range(40_000)] + [tmp_path / "b" / "clip_000007.mp4"]
    t0 = time.perf_counter()
    table = score_table(paths, "run")
    elapsed = time.perf_counter() - t0
    assert len(table) == len(paths) and table.video_name.iloc[-1] == "clip_000007.mp4"
    assert elapsed < 20.0, f"{elapsed:.1f} s for {len(paths)} paths"


def _wav(path: Path, seconds: float = 1.0, sr: int = 16000) -> Path:
    import wave

    import numpy as np

    t = np.arange(int(seconds * sr)) / sr
    pcm = (0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    return path


def test_every_path_gets_a_row_whatever_is_wrong_with_it(tmp_path: Path, session_outputs: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    """A symlink loop, a directory, a missing file and a sound file named .mp4 among the paths: one row each, each
    saying what it is, and the batch goes on (the CLI prints a warning for every row that is not plain ok)."""
    from conftest import untrained_run

    from ffdv_utils.cli.main import main as cli_main
    from ffdv_utils.inference.score import FALLBACK_SCORE, score_table

    run = untrained_run("first-hour-score", model_type="audio")
    (tmp_path / "loop_a.mp4").symlink_to(tmp_path / "loop_b.mp4")
    (tmp_path / "loop_b.mp4").symlink_to(tmp_path / "loop_a.mp4")
    (tmp_path / "folder.mp4").mkdir()
    wav = _wav(tmp_path / "sound.mp4")
    paths = [tmp_path / "loop_a.mp4", tmp_path / "folder.mp4", tmp_path / "missing.mp4", wav]
    table = score_table(paths, run).set_index("video_name")
    assert table.status.to_dict() == {"loop_a.mp4": "fallback: symlink loop",
                                      "folder.mp4": "fallback: a directory, not a video file",
                                      "missing.mp4": "fallback: file not found", "sound.mp4": "no_video"}
    assert (table.score[:3] == FALLBACK_SCORE).all() and 0 < table.score["sound.mp4"] < 1
    capsys.readouterr()
    assert cli_main(["score", "--run", run, *map(str, paths)]) == 0
    out = capsys.readouterr()
    assert out.out.count("\n") == 5 and f"warning: {wav}: no_video" in out.err and "symlink loop" in out.err


def test_a_sound_file_named_mp4_is_listed_in_the_submissions_issues(tmp_path: Path, session_outputs: Path) -> None:
    """06 scores through predict_runs: a WAV renamed .mp4 is scored on its sound and listed in prediction_issues.csv as
    no_video, like the score command says, instead of passing as ok."""
    from conftest import untrained_run

    from ffdv_utils.core.runs import Run
    from ffdv_utils.inference.score import predict_runs
    from ffdv_utils.inference.submission import write_prediction_record

    run = untrained_run("first-hour-06", model_type="audio")
    wav = _wav(tmp_path / "sound.mp4")
    clips = pd.DataFrame({"video_name": ["sound.mp4"], "path": [str(wav)]})
    scores, sources = predict_runs([run], clips, device="cpu", progress=False)
    assert scores.status.tolist() == ["no_video"] and 0 < scores.score[0] < 1
    issues = write_prediction_record(Run(name="p06", dir=tmp_path / "p06", params={}), scores, sources, {})
    assert issues.status.tolist() == ["no_video"]
    assert pd.read_csv(tmp_path / "p06" / "prediction_issues.csv").status.tolist() == ["no_video"]


# ---------------------------------------------------------------------------------------------------------------
# failures that explain themselves


def test_a_full_disk_while_saving_a_checkpoint_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's zip writer on a full disk raises 'unexpected pos' with no errno: the error must say the disk is full
    and what to do, and the previous checkpoint stays whole (no temporary file left)."""
    from ffdv_utils.features.extract import DiskFullError
    from ffdv_utils.training import loop

    path = tmp_path / "checkpoints" / "last.pt"
    loop.save_checkpoint({"epoch": 0}, path)
    before = path.read_bytes()

    def full_disk_save(obj, f) -> None:
        Path(f).write_bytes(b"PK partial")
        raise RuntimeError("[enforce fail at inline_container.cc:671] . unexpected pos 64 vs 48")

    monkeypatch.setattr(loop.torch, "save", full_disk_save)
    with pytest.raises(DiskFullError, match=r"last\.pt: the disk is full while saving the checkpoint .*free.*resume"):
        loop.save_checkpoint({"epoch": 1}, path)
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]


def test_numpy_short_write_during_extraction_is_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """numpy's short write (OSError without errno) stops the extraction as a full disk, not as a clip error."""
    from ffdv_utils.core.files import atomic_write
    from ffdv_utils.features.extract import DiskFullError, extract_mels
    from ffdv_utils.features.params import mel_params

    wav = _wav(tmp_path / "a.mp4", seconds=0.5)

    real_write = atomic_write

    def short_write(path, data):
        if "entries" in str(path):  # a clip's entry (numpy writes it): the disk fills there
            raise OSError("65536 requested and 4096 written")
        return real_write(path, data)

    monkeypatch.setattr("ffdv_utils.features.extract.atomic_write", short_write)
    clips = pd.DataFrame({"video_name": ["a.mp4"], "path": [str(wav)]})
    with pytest.raises(DiskFullError, match="the disk is full"):
        extract_mels(clips, mel_params({}), tmp_path / "cache", workers=1, progress=False)


def test_score_under_a_small_address_space_says_what_the_import_error_means(tmp_path: Path) -> None:
    """Under ``ulimit -v`` torch's libraries cannot be mapped: the command says what that means and how to fix it,
    not a raw ImportError traceback."""
    import os
    import resource
    import subprocess
    import sys

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2**30, resource.getrlimit(resource.RLIMIT_AS)[1]))

    env = {**os.environ, "FFDV_OUTPUTS": str(tmp_path / "out"), "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.run([sys.executable, "-m", "ffdv_utils", "score", "--run", "nothing", "clip.mp4"],
                          preexec_fn=limit, env=env, capture_output=True, text=True, timeout=120)
    if "Traceback" not in proc.stderr and "segment" not in proc.stderr:
        pytest.skip(f"torch loads within 1 GiB of address space here: {proc.stderr[-300:]}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "failed to map segment" in proc.stderr
    assert "address-space limit (ulimit -v) is 1.0 GiB" in proc.stderr and "CPU build of torch" in proc.stderr


# ---------------------------------------------------------------------------------------------------------------
# the Kaggle round trip


def _stage_cheaply(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """stage() with the wheels stubbed: returns the names of the distributions it re-packs."""
    from ffdv_utils.packaging import kaggle

    packed: list[str] = []

    def fake_repack(name: str, dest) -> Path:
        packed.append(name)
        path = Path(dest) / f"{kaggle.wheel_name(name)}-0.0.0-py3-none-any.whl"
        path.write_bytes(b"")
        return path

    def fake_build(dest) -> Path:
        path = Path(dest) / "ffdv_utils-0.0.0-py3-none-any.whl"
        path.write_bytes(b"")
        return path

    monkeypatch.setattr(kaggle, "repack_wheel", fake_repack)
    monkeypatch.setattr(kaggle, "build_wheel", fake_build)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-config"))
    return packed


def test_stage_ships_pyav_for_the_kernel_or_refuses_with_the_command(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """media/decode.py imports av and Kaggle's image lacks it: staging ships a wheel of it that the kernel's Python
    and platform can install, or refuses naming the pip command that fetches one."""
    from ffdv_utils.packaging import kaggle

    packed = _stage_cheaply(monkeypatch, tmp_path)
    res = kaggle.stage(tmp_path / "out", owner="someone", parameters={"runs": ["/kaggle/input/x/best.pt"]})
    assert "av" in packed and res["problems"] == []
    assert kaggle.wheel_fits_kernel("cp311-abi3-manylinux_2_28_x86_64")
    assert kaggle.wheel_fits_kernel("py2.py3-none-any") and kaggle.wheel_fits_kernel("cp38-abi3-manylinux2014_x86_64")
    assert not kaggle.wheel_fits_kernel("cp312-cp312-macosx_11_0_arm64")
    assert not kaggle.wheel_fits_kernel("cp310-cp310-manylinux_2_17_x86_64")
    monkeypatch.setattr(kaggle, "installed_wheel_tag", lambda name: "cp312-cp312-macosx_11_0_arm64")
    with pytest.raises(kaggle.KaggleError, match=r"av .*macosx.*pip download 'av==.*--python-version 3\.11"):
        kaggle.stage(tmp_path / "out2", owner="someone", distributions=["av"])
    wheel = tmp_path / "av-99.0.0-cp311-abi3-manylinux_2_28_x86_64.whl"  # the user's own wheel for the kernel
    wheel.write_bytes(b"")
    packed.clear()
    res = kaggle.stage(tmp_path / "out3", owner="someone", distributions=["av"], extra_wheels=[wheel],
                       parameters={"runs": ["/kaggle/input/x/best.pt"]})
    assert packed == [] and res["problems"] == []
    (tmp_path / "out3" / "dataset" / wheel.name).unlink()
    assert any("no av wheel" in p for p in kaggle.check_staged(tmp_path / "out3"))


def test_kernel_metadata_attaches_only_what_staging_makes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ffdv_utils.packaging import kaggle

    _stage_cheaply(monkeypatch, tmp_path)
    res = kaggle.stage(tmp_path / "out", owner="someone", parameters={"runs": ["/kaggle/input/x/best.pt"]})
    meta = json.loads((res["folder"] / "kernel-metadata.json").read_text())
    assert meta["dataset_sources"] == ["someone/ffdv-utils"]


# ---------------------------------------------------------------------------------------------------------------
# what a person sees


def test_pyproject_reads_without_setuptools_deprecation_warnings() -> None:
    """`pip install -e .` printed "project.license as a TOML table is deprecated" three times."""
    import warnings

    from setuptools.config.pyprojecttoml import read_configuration

    root = Path(__file__).resolve().parents[1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = read_configuration(root / "pyproject.toml", expand=True)
    assert config["project"]["license"] == "MIT"
    assert [str(w.message) for w in caught if "license" in str(w.message).lower()] == []


def test_progress_bar_with_nothing_to_do_shows_nothing_and_rates_keep_their_unit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With features cached, 'mel features: 0clip [00:00, ?clip/s]' was a bar for nothing; a slow bar turned
    'clip/s' into 's/clip' (the bar and the log lines alike)."""
    import io

    from ffdv_utils.core.progress import LogProgress, progress_bar

    monkeypatch.setenv("FFDV_PROGRESS", "bar")
    out = io.StringIO()
    with progress_bar(total=0, desc="mel features", unit="clip", file=out) as bar:
        bar.update(0)
    for _ in progress_bar([], desc="mel features", unit="clip", file=out):
        pass
    assert out.getvalue() == ""
    out = io.StringIO()
    bar = progress_bar(total=10, desc="mel features", unit="clip", file=out, smoothing=0, mininterval=0)
    bar.start_t -= 200  # 200 s for the first clip
    bar.update(1)
    bar.close()
    assert "clip/s" in out.getvalue() and "s/clip" not in out.getvalue(), out.getvalue()
    out = io.StringIO()
    slow = LogProgress(total=4, desc="mel features", unit="clip", file=out)
    slow.start_t -= 200
    slow.update(4)
    slow.close()
    assert "0.02 clip/s" in out.getvalue() and "s/clip" not in out.getvalue(), out.getvalue()


def test_ipywidgets_is_a_dependency_so_notebook_bars_are_widgets() -> None:
    import importlib.util
    import re

    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    deps = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    assert '"ipywidgets' in deps
    assert importlib.util.find_spec("ipywidgets") is not None


def test_saving_a_tracked_notebook_in_jupyterlab_keeps_the_repository_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    """`make lab` points Jupyter at .jupyter/: its server config installs a pre-save hook that drops the outputs of
    notebooks/NN_*.ipynb (and only of those)."""
    import copy

    import nbformat
    from jupyter_server.serverapp import ServerApp
    from traitlets.utils.importstring import import_item

    root = Path(__file__).resolve().parents[1]
    assert "JUPYTER_CONFIG_PATH=$(CURDIR)/.jupyter" in (root / "Makefile").read_text()
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", str(root / ".jupyter"))
    app = ServerApp()
    app.load_config_file()
    hook = import_item(app.config.ContentsManager.pre_save_hook)

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(1)", execution_count=3)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), cell]
    tracked = {"type": "notebook", "content": copy.deepcopy(nb)}
    hook(model=tracked, path="notebooks/03_train.ipynb", contents_manager=None)
    assert tracked["content"]["cells"][1]["outputs"] == [] and tracked["content"]["cells"][1]["execution_count"] is None
    copy_in_run = {"type": "notebook", "content": copy.deepcopy(nb)}
    hook(model=copy_in_run, path="outputs/demo/notebooks/03_train.ipynb", contents_manager=None)
    assert copy_in_run["content"]["cells"][1]["outputs"]


def test_figures_say_what_they_show_and_no_curve_hides_another() -> None:
    import numpy as np

    from ffdv_utils.core import plots
    from ffdv_utils.training.gradcam import plot_explanations

    history = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [0.7, 0.6, 0.5], "val_log_loss": [0.7, 0.65, 0.6],
                            "val_auc": [0.6, 0.7, 0.8], "val_tpr@fpr=1e-2": [0.1, 0.2, 0.3],
                            "val_tpr@fpr=1e-3": [0.1, 0.2, 0.3]})  # identical TPRs: few validation clips
    loss, val = plots.training_curves(history).axes
    assert loss.get_title() and loss.get_ylabel() and val.get_ylabel()
    tpr = [ln for ln in val.get_lines() if ln.get_label().startswith("tpr")]
    assert len(tpr) == 2 and len({(ln.get_linestyle(), ln.get_marker()) for ln in tpr}) == 2

    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    fig = plots.roc({"plain": (y, s), "held_out_kind": (y, s)})  # the same curve twice
    lines = [ln for ln in fig.axes[0].get_lines() if "AUC" in ln.get_label()]
    assert len({ln.get_linestyle() for ln in lines}) == 2

    item = {"video_name": "a.mp4", "target": 0, "kind": "real", "score": 0.91, "mel": np.zeros((8, 8)),
            "mel_cam": np.zeros((8, 8))}
    fig = plot_explanations([item])
    assert "network p(fake) 0.91" in fig.axes[0].get_title() and "network's own score" in fig._suptitle.get_text()


def test_the_demo_summary_says_n_a_which_epoch_and_what_lies_beside(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    from ffdv_utils.core.files import write_json
    from ffdv_utils.core.runner import summary

    folder = tmp_path / "demo"
    folder.mkdir()
    write_json(folder / "metrics.json", {"val_auc": 0.93, "val_tpr@fpr=1e-3": 0.375, "val_tpr@fpr=1e-3 n/a": True,
                                         "val_n_real": 9, "val_n": 17, "best_epoch": 1, "test_auc": 0.85})
    pd.DataFrame({"epoch": range(1, 16)}).to_csv(folder / "history.csv", index=False)
    for name in ("demo-none", "demo-tiny_fusion-plain"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "best.pt").write_bytes(b"x" * 2**20)
    summary(folder)
    out = capsys.readouterr().out
    assert "TPR@FPR=1e-3: n/a (n_real 9 < 1000)" in out and "0.375" not in out
    assert "epoch 1 of 15" in out and "17 validation clips" in out
    assert "2 run folder(s)" in out and "demo-none" in out and f"rm -r {folder}-*" in out


def test_params_command_gives_papermill_only_the_notebooks_own_keys(tmp_path: Path) -> None:
    """A preset passed to papermill as it is: 'Passed unknown parameter' for each key of other notebooks.
    `python -m ffdv_utils params 03 -f PRESET` writes only what 03 declares, merged as the runner merges."""
    import yaml
    from papermill.inspection import _infer_parameters, _open_notebook

    from ffdv_utils.cli.main import main as cli_main

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "p03.yaml"
    assert cli_main(["params", "03", "-f", str(root / "params" / "demo.yaml"), "-p", "epochs", "2", "-o",
                     str(out)]) == 0
    params = yaml.safe_load(out.read_text())
    declared = {p.name for p in _infer_parameters(_open_notebook(str(root / "notebooks" / "03_train.ipynb"), {}))}
    assert set(params) <= declared and params["epochs"] == 2 and params["model"] == "tf_efficientnet_lite0"
    preset = yaml.safe_load((root / "params" / "demo.yaml").read_text())
    assert set(preset) - declared  # the preset itself holds other notebooks' keys: what papermill warned about
