"""Submission writing and validation, ensembles, fallback rows, and the test API against 06_submission.

One tiny run (timm ``test_resnet``, 64 px, one epoch on the session's sample data) is trained once for the module
for the notebook comparison (slow); the test API's own rules (reloading, run folders, TTA, ensembles, corrupt files)
are checked with untrained checkpoints, which score clips as distinctly as trained ones.
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
import torch
from conftest import untrained_run

from ffdv_utils.cli.main import main
from ffdv_utils.core.device import amp_dtype
from ffdv_utils.core.errors import ConfigError
from ffdv_utils.core.paths import run_dir
from ffdv_utils.core.runs import start_run
from ffdv_utils.features.batches import ClipDataset, batch_loader
from ffdv_utils.features.clips import clip_features
from ffdv_utils.inference.score import (
    FALLBACK_SCORE,
    ensemble,
    predict_clips,
    predict_runs,
    score_video,
    score_videos,
)
from ffdv_utils.inference.submission import (
    SubmissionError,
    validate_submission,
    write_submission,
)
from ffdv_utils.models.checkpoint import load_model
from ffdv_utils.training.evaluate import predict_loader
from ffdv_utils.training.loop import TRAIN_DEFAULTS, fit

RUN = "subm-tiny"
NAMES = ["a.mp4", "b.mp4", "c.mp4"]


# ----------------------------------------------------------------------------------------------------------------
# validation and writing (no model)


def _pred(names, scores, columns=("video_name", "score")) -> pd.DataFrame:
    return pd.DataFrame(dict(zip(columns, [list(names), list(scores)])))


def test_validator_accepts_a_correct_file():
    validate_submission(_pred(NAMES, [0.0, 0.5, 1.0]), NAMES)


@pytest.mark.parametrize("pred, match", [
    (_pred(["a.mp4", "c.mp4"], [0.1, 0.2]), "missing.*b.mp4"),
    (_pred(NAMES + ["d.mp4"], [0.1, 0.2, 0.3, 0.4]), "not in the template.*d.mp4"),
    (_pred(["b.mp4", "a.mp4", "c.mp4"], [0.1, 0.2, 0.3]), "order"),
    (_pred(["a.mp4", "b.mp4", "b.mp4", "c.mp4"], [0.1, 0.2, 0.2, 0.3]), "duplicate.*b.mp4"),
    (_pred(["a.mp4", "a.mp4", "c.mp4"], [0.1, 0.2, 0.3]), "duplicate"),
    (_pred(NAMES, [0.1, float("nan"), 0.3]), "row 3 .*b.mp4"),
    (_pred(NAMES, [0.1, float("inf"), 0.3]), "finite"),
    (_pred(NAMES, [0.1, 1.2, 0.3]), "in \\[0, 1\\]"),
    (_pred(NAMES, [-0.01, 0.2, 0.3]), "row 2"),
    (_pred(NAMES, [0.1, "abc", 0.3]), "abc"),
    (_pred(NAMES, [0.1, 0.2, 0.3], columns=("video_name", "label")), "columns"),
    (_pred(NAMES, [0.1, 0.2, 0.3], columns=("name", "score")), "columns"),
    (_pred(NAMES, [0.1, 0.2, 0.3]).assign(extra=1), "columns"),
], ids=["missing", "extra", "order", "duplicate", "duplicate-same-length", "nan", "inf", "above-1", "below-0",
        "text", "header-label", "header-name", "extra-column"])
def test_validator_rejects(pred, match):
    with pytest.raises(SubmissionError, match=match):
        validate_submission(pred, NAMES)


def test_write_submission_keeps_template_order_and_spelling(tmp_path):
    # the template may spell names without ".mp4"; the file must use the template's spelling and order
    template = pd.DataFrame({"video_name": ["c.mp4", "a.mp4", "b.mp4"], "template_name": ["c", "a.mp4", "b"]})
    scores = pd.DataFrame({"video_name": ["a.mp4", "b.mp4", "c.mp4"], "score": [0.25, 0.5, 0.75]})
    out = tmp_path / "prediction.csv"
    write_submission(template, scores, out)
    back = pd.read_csv(out, dtype={"video_name": str})
    assert list(back.columns) == ["video_name", "score"]
    assert list(back.video_name) == ["c", "a.mp4", "b"]
    assert list(back.score) == [0.75, 0.25, 0.5]

    out2 = tmp_path / "refused.csv"
    with pytest.raises(SubmissionError, match="no score.*c.mp4"):
        write_submission(template, scores[scores.video_name != "c.mp4"], out2)
    with pytest.raises(SubmissionError, match="finite"):
        write_submission(template, scores.assign(score=[0.1, 2.0, 0.3]), out2)
    assert not out2.exists() and not list(tmp_path.glob(".*.tmp"))


def test_ensemble_mean_and_rank():
    a = pd.DataFrame({"score": [0.1, 0.9, 0.5]})
    b = pd.DataFrame({"score": [0.3, 0.2, 0.8]})
    assert np.allclose(ensemble([a, b], "mean"), [0.2, 0.55, 0.65])
    # ranks a: 1 3 2, b: 2 1 3 -> mean 1.5 2 2.5 -> scaled (r - 1) / (n - 1)
    assert np.allclose(ensemble([a, b], "rank"), [0.25, 0.5, 0.75])
    # ties share their average rank
    c = pd.DataFrame({"score": [0.5, 0.5, 0.9]})
    assert np.allclose(ensemble([c], "rank"), [0.25, 0.25, 1.0])
    with pytest.raises(ValueError, match="mean or rank"):
        ensemble([a, b], "median")


# ----------------------------------------------------------------------------------------------------------------
# with a trained tiny run


@pytest.fixture(scope="module")
def tiny_run(sample, session_outputs) -> str:
    p = {**TRAIN_DEFAULTS, "run_name": RUN, "data_root": str(sample["data_root"]), "model": "test_resnet",
         "image_size": 64, "batch_size": 8, "epochs": 1, "feature_workers": 1, "progress": False}
    run = start_run(p, "03_train")
    fit(p, run)
    assert (run.dir / "checkpoints" / "best.pt").is_file()
    return RUN


@pytest.fixture(scope="module")
def sub_root(sample, tmp_path_factory) -> dict:
    """A data root whose template holds real test clips, a clip with no file and a file that is not a video."""
    root = tmp_path_factory.mktemp("subroot")
    src = sample["data_root"] / "testset"
    (root / "testset").mkdir()
    real = sorted(p.name for p in src.glob("*.mp4"))[:3]
    for name in real:
        os.symlink(src / name, root / "testset" / name)
    (root / "testset" / "corrupt.mp4").write_bytes(b"this is not an mp4 file" * 50)
    # template order differs from the folder's; one name without its suffix, as some templates write them
    spelled = [real[2], "missing.mp4", real[0][:-4], "corrupt.mp4", real[1]]
    (root / "template.csv").write_text("video_name,score\n" + "".join(f"{n},\n" for n in spelled))
    return {"root": root, "real": real, "spelled": spelled, "paths": [str(root / "testset" / n) for n in real]}


@pytest.mark.slow
def test_notebook_prediction_matches_score_api_and_cli(tiny_run, sub_root, capsys, monkeypatch, tmp_path):
    from ffdv_utils.core.runner import run_pipeline

    folder = run_pipeline(tiny_run, sub_root["root"], overrides={"test_template": "template.csv", "tta": 1},
                          only=["06_submission"], progress=False)
    pred = pd.read_csv(folder / "prediction.csv", dtype={"video_name": str})
    assert list(pred.video_name) == sub_root["spelled"]  # every template row, in order, as spelled
    by_name = dict(zip(pred.video_name, pred.score))
    assert by_name["missing.mp4"] == FALLBACK_SCORE
    assert by_name["corrupt.mp4"] == FALLBACK_SCORE
    issues = pd.read_csv(folder / "prediction_issues.csv")
    flagged = dict(zip(issues.video_name, issues.status))
    assert flagged["missing.mp4"].startswith("fallback: file not found")
    assert flagged["corrupt.mp4"].startswith("fallback")
    sources = json.loads((folder / "prediction_sources.json").read_text())
    assert sources["n_fallback"] == 2 and sources["n_rows"] == 5
    (src,) = sources["runs"]
    assert src["run"] == tiny_run and src["checkpoint"].endswith("best.pt") and len(src["checkpoint_sha256"]) == 64
    assert src["train_params"]["model"] == "test_resnet" and src["epoch"] == 1

    real = sub_root["real"]
    expected = [by_name[real[0][:-4]], by_name[real[1]], by_name[real[2]]]
    assert len(set(np.round(expected, 6))) == 3, "the tiny model gives the clips distinct scores"
    # a fresh feature cache: the API computes the features itself, in memory, writes nothing and still agrees
    monkeypatch.setenv("FFDV_CACHE", str(tmp_path / "fresh-cache"))
    api = score_videos(sub_root["paths"], tiny_run)
    assert not list((tmp_path / "fresh-cache").glob("**/*"))
    assert np.allclose(api, expected, atol=2e-6)  # the CSV keeps six decimals
    assert score_video(sub_root["paths"][1], tiny_run) == pytest.approx(api[1], abs=1e-7)

    # the command line (`python -m ffdv_utils score` runs main), in this process to save an interpreter start
    missing = str(sub_root["root"] / "testset" / "missing.mp4")
    capsys.readouterr()
    assert main(["score", "--run", tiny_run, *sub_root["paths"], missing]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert lines[0] == "video_name,score"
    rows = [line.split(",") for line in lines[1:]]
    assert [r[0] for r in rows] == real + ["missing.mp4"]
    assert np.allclose([float(r[1]) for r in rows], expected + [FALLBACK_SCORE], atol=2e-6)
    assert "missing.mp4: fallback: file not found" in err


@pytest.fixture(scope="module")
def api_run(session_outputs) -> str:
    """An untrained audio checkpoint in a run folder (the API's plumbing, not the model, is under test)."""
    return untrained_run("api-audio", seed=1)


def test_predict_runs_rank_ensemble_and_all_fallback_rows(api_run, sub_root):
    clips = pd.DataFrame({"video_name": sub_root["real"] + ["missing.mp4"],
                          "path": sub_root["paths"] + [str(sub_root["root"] / "missing.mp4")]})
    single, _ = predict_runs([api_run], clips, progress=False)
    both, record = predict_runs([api_run, api_run], clips, method="rank", progress=False,
                                        fallback_score=0.25)
    assert len(record) == 2 and record[0]["checkpoint_sha256"] == record[1]["checkpoint_sha256"]
    ranks = single.score[:3].rank().to_numpy()
    # the three real clips keep their order; the clip every run fell back on keeps the fallback value
    assert np.array_equal(both.score[:3].rank().to_numpy(), ranks)
    assert both.score.iloc[3] == 0.25 and both.status.iloc[3] == "fallback: file not found"
    assert single.score.iloc[3] == FALLBACK_SCORE
    with pytest.raises(ConfigError, match="mean or rank"):
        predict_runs([api_run], clips, method="vote", progress=False)


def test_same_name_in_another_folder_is_not_read_from_the_cache(api_run, sample, tmp_path):
    clips = sorted((sample["data_root"] / "valset").glob("*.mp4"))
    a, b = clips[0], clips[1]
    score_a = score_video(a, api_run)
    score_b = score_video(b, api_run)
    assert abs(score_a - score_b) > 1e-5, "precondition: two different clips score differently"
    impostor = tmp_path / a.name  # b's content under a's name, in another folder
    shutil.copyfile(b, impostor)
    assert score_video(impostor, api_run) == pytest.approx(score_b, abs=1e-6)
    assert score_video(a, api_run) == pytest.approx(score_a, abs=1e-6)  # and back again


def _one(path) -> pd.DataFrame:
    return pd.DataFrame({"video_name": [Path(path).name], "path": [str(path)]})


def test_score_api_takes_a_run_folder_and_reloads_a_changed_checkpoint(sample, session_outputs):
    run = untrained_run("api-reload", seed=1)
    clip = sorted((sample["data_root"] / "valset").glob("*.mp4"))[0]
    folder = run_dir(run, create=False)
    ckpt = folder / "checkpoints" / "best.pt"
    first = score_video(clip, run)
    assert score_video(clip, folder) == first == score_video(clip, ckpt)  # run name, run folder or the .pt file
    before = ckpt.stat().st_mtime_ns
    untrained_run(run, seed=2)  # retrained: other weights under the same path
    if ckpt.stat().st_mtime_ns == before:  # a coarse file-system clock: a retrain comes later than this
        os.utime(ckpt, ns=(before + 10**9, before + 10**9))
    model, params = load_model(ckpt, device="cpu")
    expected = float(predict_clips(model, params, _one(clip), device="cpu", progress=False).score[0])
    again = score_video(clip, folder)
    assert again != first and again == pytest.approx(expected, abs=1e-7)  # the new weights, not the kept model
    assert score_video(clip, run) == again


def test_tta_averages_the_plain_and_time_reversed_passes(api_run, sample):
    clips = sorted((sample["data_root"] / "valset").glob("*.mp4"))[:3]
    plain = np.array(score_videos(clips, api_run, device="cpu"))
    two = np.array(score_videos(clips, api_run, device="cpu", tta=2))
    # the reversed pass by hand: the same cached mel images, flipped in time, through the same model
    model, params = load_model(api_run, device="cpu")
    table = pd.DataFrame({"video_name": [c.name for c in clips], "path": [str(c) for c in clips]})
    feats = clip_features(params, table, ("mel",), progress=False)
    flipped = ClipDataset(table.video_name, np.zeros(len(clips)), mels=np.ascontiguousarray(feats["mels"][:, :, ::-1]),
                          has_audio=feats["has_audio"])
    cpu = torch.device("cpu")
    _, reversed_ = predict_loader(model, batch_loader(flipped, 8), cpu, amp_dtype(params["amp"], cpu))
    np.testing.assert_allclose(two, (plain + reversed_) / 2, rtol=0, atol=1e-6)
    assert np.abs(two - plain).max() > 1e-5  # the second pass changes the scores
    three = np.array(score_videos(clips, api_run, device="cpu", tta=3))
    assert np.abs(three - two).max() > 1e-5  # a third, time-shifted pass


def test_an_ensemble_where_only_some_runs_fall_back_is_partial(api_run, sample, tmp_path):
    from badmedia import write_clip

    visual = untrained_run("api-visual", seed=3, model_type="visual")
    sound = write_clip(tmp_path / "sound_only.mp4", 1.0, video=False)  # nothing for the visual run to see
    clip = sorted((sample["data_root"] / "valset").glob("*.mp4"))[0]
    clips = pd.DataFrame({"video_name": [clip.name, sound.name], "path": [str(clip), str(sound)]})
    audio_only, _ = predict_runs([api_run], clips, progress=False)
    visual_only, _ = predict_runs([visual], clips, progress=False)
    assert visual_only.status[1].startswith("fallback: ") and visual_only.score[1] == FALLBACK_SCORE
    both, record = predict_runs([api_run, visual], clips, progress=False)
    assert [r["run"] for r in record] == [api_run, visual]
    assert both.status[0] == "ok" and both.status[1] == f"partial: {visual}: {visual_only.status[1]}"
    # the mean of what each run gave: the audio run's score and the visual run's fallback
    np.testing.assert_allclose(both.score, (audio_only.score + visual_only.score) / 2, rtol=0, atol=1e-7)
    assert both.score[1] != FALLBACK_SCORE


def test_score_command_on_a_corrupt_file(api_run, sample, tmp_path):
    """`python -m ffdv_utils score` on a file that exists but is not a video: its row gets the fallback score, a
    warning names it, the other clips are scored and the command succeeds."""
    good = sorted((sample["data_root"] / "valset").glob("*.mp4"))[0]
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(good.read_bytes()[: 2000])  # the start of a real mp4, cut off: no index, no frames
    res = subprocess.run([sys.executable, "-m", "ffdv_utils", "score", "--run", api_run, "--device", "cpu", str(good),
                          str(corrupt)], capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines() == ["video_name,score", f"{good.name},{score_video(good, api_run):.6f}",
                                               f"corrupt.mp4,{FALLBACK_SCORE:.6f}"]
    (warning,) = [line for line in res.stderr.splitlines() if "corrupt.mp4" in line]
    assert warning.startswith(f"warning: {corrupt}: fallback: ") and len(warning) > len(str(corrupt)) + 30
