"""Bad media, bad labels, missing clips: nothing crashes, every template row gets a finite score."""

import math
import shutil

import numpy as np
import pandas as pd
import pytest
from badmedia import BROKEN, DECODABLE, make_corpus
from conftest import TINY

from ffdv_utils.core.paths import run_dir
from ffdv_utils.core.runner import run_pipeline
from ffdv_utils.data.labels import read_template
from ffdv_utils.inference.score import score_videos
from ffdv_utils.media.decode import MediaError, load_audio, load_frames, probe_video


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("case", DECODABLE + BROKEN)
def test_probe_and_decode_never_crash(corpus, case):
    path = corpus[case]
    info = probe_video(path)  # never raises
    assert info["error"] == "" if case in DECODABLE else info["error"]
    for load in (lambda: load_audio(path, 16000), lambda: load_frames(path, 3, 64)):
        try:
            out = load()
        except MediaError as exc:
            assert str(path.name) in str(exc)  # the message names the file
            continue
        assert np.all(np.isfinite(out.astype(float)))
    if case in BROKEN:
        with pytest.raises(MediaError, match=path.name):
            load_audio(path, 16000)


def test_decoders_on_odd_streams(corpus):
    assert len(load_audio(corpus["video_no_audio"], 16000)) == 0
    assert len(load_audio(corpus["audio_5_1"], 16000)) == pytest.approx(16000, abs=400)  # downmixed, resampled
    assert len(load_audio(corpus["audio_8k_mono"], 16000)) == pytest.approx(16000, abs=400)
    assert load_frames(corpus["frame_4k"], 2, 112).shape[1] == 112  # decoded small, not at 4K
    assert load_frames(corpus["single_frame"], 4).shape[0] == 4  # the one frame repeated
    with pytest.raises(MediaError, match="no video"):
        load_frames(corpus["audio_only"], 2)


@pytest.fixture(scope="module")
def messy_root(sample, corpus, tmp_path_factory):
    """The sample dataset plus bad clips in train and test, and a template naming a clip that does not exist."""
    root = tmp_path_factory.mktemp("messy") / "data"
    shutil.copytree(sample["data_root"], root)
    labels = pd.read_csv(root / "train_label.txt")
    extra = []
    for i, case in enumerate(("zero_byte", "truncated", "video_no_audio", "audio_only", "short_0_2s")):
        name = f"bad_{case}.mp4"
        shutil.copy(corpus[case], root / "trainset" / name)
        extra.append({"video_name": name, "target": i % 2})
    pd.concat([labels, pd.DataFrame(extra)]).to_csv(root / "train_label.txt", index=False)
    template = pd.read_csv(root / "test_template.csv")
    names = list(template.video_name)
    for case, path in corpus.items():
        shutil.copy(path, root / "testset" / path.name)
        names.append(path.name)
    names.append("not_in_testset.mp4")
    pd.DataFrame({"video_name": names, "score": ""}).to_csv(root / "test_template.csv", index=False)
    return root


@pytest.mark.notebooks
def test_pipeline_survives_bad_clips(messy_root, session_outputs):
    folder = run_pipeline("messy", messy_root, overrides={**TINY, "test_template": "test_template.csv"},
                                   only=["02", "03", "06"], progress=False)
    template = read_template(messy_root / "test_template.csv")
    pred = pd.read_csv(folder / "prediction.csv")
    assert pred.video_name.tolist() == template.template_name.tolist()
    assert np.isfinite(pred.score).all() and pred.score.between(0, 1).all()
    issues = pd.read_csv(folder / "prediction_issues.csv").set_index("video_name")
    for case in BROKEN:
        assert issues.loc[f"{case}.mp4", "status"].startswith("fallback")
        assert float(pred.set_index("video_name").loc[f"{case}.mp4", "score"]) == pytest.approx(0.5)
    assert issues.loc["not_in_testset.mp4", "status"] == "fallback: file not found"
    assert issues.loc["video_no_audio.mp4", "status"] == "no_audio"
    errors = pd.read_csv(folder / "extraction_errors.csv")
    assert {"bad_zero_byte.mp4", "bad_truncated.mp4"} <= set(errors["clip"])


@pytest.mark.notebooks
def test_score_api_on_every_case(messy_root, corpus, session_outputs):
    if not (run_dir("messy", create=False) / "checkpoints" / "best.pt").is_file():
        pytest.skip("needs the run of test_pipeline_survives_bad_clips")
    scores = score_videos(list(corpus.values()), "messy")
    assert len(scores) == len(corpus)
    assert all(math.isfinite(s) and 0 <= s <= 1 for s in scores)
