"""Bad media, bad labels, missing clips: every decodable case decodes, every scorable clip is scored by the model,
only what cannot be read gets the fallback, and training leaves the broken clips out with a warning naming them."""

import math
import shutil

import numpy as np
import pandas as pd
import pytest
from badmedia import BROKEN, DECODABLE, make_corpus
from conftest import TINY, untrained_run

from ffdv_utils.core.runner import run_pipeline
from ffdv_utils.data.labels import read_template
from ffdv_utils.features.batches import clip_datasets
from ffdv_utils.inference.score import FALLBACK_SCORE, score_table, score_videos
from ffdv_utils.media.decode import MediaError, load_audio, load_frames, probe_video

# what each decodable case holds (badmedia.make_corpus): seconds of audio, stored width x height (None: no stream)
AUDIO_SECONDS = {"video_no_audio": None, "audio_only": 1.0, "short_0_2s": 0.2, "single_frame": 0.04,
                 "frame_4k": 0.12, "portrait_360x640": 0.8, "audio_8k_mono": 1.0, "audio_48k_stereo": 1.0,
                 "audio_5_1": 1.0, "variable_frame_rate": 1.0, "spaces and ünïcödé": 0.8, "audio_much_shorter": 0.3,
                 "normal": 1.2}
VIDEO_SIZE = {**{c: (160, 120) for c in DECODABLE}, "audio_only": None, "frame_4k": (3840, 2160),
              "portrait_360x640": (360, 640)}
FACE_RGB = (210, 170, 140)  # the bright ellipse badmedia paints in the middle of every frame
# decodable, but scored by a model that listens as no_audio (from the zero mel image it was trained with for such
# clips): no audio stream, or less audio than min_seconds (0.05 s; a single frame at 25 fps carries 0.04 s)
NO_AUDIO = ("video_no_audio", "single_frame")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("bad"))


def test_the_expectations_cover_every_case():
    assert set(AUDIO_SECONDS) == set(VIDEO_SIZE) == set(DECODABLE)


@pytest.mark.parametrize("case", DECODABLE)
def test_every_decodable_case_decodes(corpus, case):
    """A decodable case must decode: its audio at 16 kHz, as long as it is, and its frames with the picture in them."""
    path = corpus[case]
    info = probe_video(path)
    assert info["error"] == ""
    audio = load_audio(path, 16000)
    seconds = AUDIO_SECONDS[case]
    assert audio.dtype == np.float32 and audio.ndim == 1 and np.isfinite(audio).all()
    if seconds is None:
        assert audio.size == 0 and not info["has_audio"]
    else:
        assert info["has_audio"]
        assert audio.size == pytest.approx(seconds * 16000, abs=max(400, 0.05 * seconds * 16000))
        assert 0.1 < np.abs(audio).max() < 1.0  # the tone, not silence or clipping
    size = VIDEO_SIZE[case]
    if size is None:
        with pytest.raises(MediaError, match=f"{path.name}.*no video"):
            load_frames(path, 3, 64)
        return
    frames = load_frames(path, 3, 64)
    w, h = size
    assert frames.dtype == np.uint8 and frames.shape[0] == 3 and frames.shape[3] == 3
    assert min(frames.shape[1:3]) == 64  # the shorter side, whatever the stored size
    assert frames.shape[2] / frames.shape[1] == pytest.approx(w / h, rel=0.05)  # aspect kept: portrait stays upright
    centre = frames[:, frames.shape[1] // 2, frames.shape[2] // 2].astype(int)
    assert np.abs(centre - FACE_RGB).max() < 15, centre  # the picture itself, in the right colours


@pytest.mark.parametrize("case", BROKEN)
def test_broken_cases_are_reported_not_raised_by_probe(corpus, case):
    path = corpus[case]
    info = probe_video(path)  # never raises
    assert info["error"] and not info["has_audio"]
    for load in (lambda: load_audio(path, 16000), lambda: load_frames(path, 3, 64)):
        with pytest.raises(MediaError, match=path.name):  # the message names the file
            load()


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


# ---------------------------------------------------------------------------------------------------------------
# training: undecodable clips are left out, with a warning naming them


@pytest.mark.parametrize("inputs, left_out", [
    (("mel",), {"bad_zero_byte.mp4", "bad_truncated.mp4"}),
    (("faces",), {"bad_zero_byte.mp4", "bad_truncated.mp4", "bad_audio_only.mp4"}),  # no video: nothing to see
    (("mel", "faces"), {"bad_zero_byte.mp4", "bad_truncated.mp4"}),  # the audio of an audio-only clip is used
], ids=["audio", "visual", "fusion"])
def test_training_leaves_undecodable_clips_out_with_a_warning_naming_them(messy_root, session_outputs, inputs,
                                                                           left_out):
    params = {**TINY, "data_root": str(messy_root)}
    with pytest.warns(UserWarning, match="left out of training") as caught:
        train, val = clip_datasets(params, inputs, progress=False)
    (warning,) = [w for w in caught if "left out of training" in str(w.message)]
    named = {n for n in str(warning.message).split(": ")[-1].split(", ")}
    assert named == left_out
    bad = {f"bad_{c}.mp4" for c in ("zero_byte", "truncated", "video_no_audio", "audio_only", "short_0_2s")}
    assert set(train.names) & bad == bad - left_out  # the odd but readable ones are used
    assert len(train.names) == len(pd.read_csv(messy_root / "train_label.txt")) - len(left_out)
    if "mel" in inputs:
        assert len(train.mels) == len(train.names)  # the packed arrays follow the kept clips, row for row
        assert not train.has_audio[train.names.index("bad_video_no_audio.mp4")]
        assert train.has_audio[train.names.index("bad_short_0_2s.mp4")]


# ---------------------------------------------------------------------------------------------------------------
# prediction: 02, 03 and 06 on the messy data root


@pytest.fixture(scope="module")
def messy_run(messy_root, session_outputs):
    folder = run_pipeline("messy", messy_root, overrides={**TINY, "test_template": "test_template.csv"},
                          only=["02", "03", "06"], progress=False)
    return folder


@pytest.mark.slow
def test_pipeline_scores_every_readable_clip_and_falls_back_only_on_the_rest(messy_root, messy_run):
    template = read_template(messy_root / "test_template.csv")
    pred = pd.read_csv(messy_run / "prediction.csv")
    assert pred.video_name.tolist() == template.template_name.tolist()  # spelled as the template spells them
    assert np.isfinite(pred.score).all() and pred.score.between(0, 1).all()
    scores = pred.set_index("video_name").score
    issues = pd.read_csv(messy_run / "prediction_issues.csv").set_index("video_name")
    for case in BROKEN:
        assert issues.loc[f"{case}.mp4", "status"].startswith("fallback")
        assert scores[f"{case}.mp4"] == FALLBACK_SCORE
    assert issues.loc["not_in_testset.mp4", "status"] == "fallback: file not found"
    for case in NO_AUDIO:
        assert issues.loc[f"{case}.mp4", "status"] == "no_audio"
    # an audio-only file is scored on its sound and listed as no_video
    assert issues.loc["audio_only.mp4", "status"] == "no_video"
    # 4K, portrait, VFR, 0.2 s, single frame, odd sample rates, the non-ASCII name: scored, status ok
    # (prediction_issues.csv lists every clip whose status is not ok), with the model's score, not the fallback
    scored = [f"{c}.mp4" for c in DECODABLE if c not in NO_AUDIO and c != "audio_only"]
    assert not set(scored) & set(issues.index), issues.loc[issues.index.isin(scored)]
    assert all(scores[f"{c}.mp4"] != FALLBACK_SCORE for c in DECODABLE)  # no_audio clips are scored too
    assert scores[scored].nunique() > len(scored) // 2  # the model's scores, clip by clip
    errors = pd.read_csv(messy_run / "extraction_errors.csv")
    assert {"bad_zero_byte.mp4", "bad_truncated.mp4"} <= set(errors["clip"])


@pytest.mark.slow
def test_score_api_on_every_case_agrees_with_the_notebook(messy_run, corpus):
    names = [p.name for p in corpus.values()]
    scores = score_videos(list(corpus.values()), "messy")
    assert len(scores) == len(corpus) and all(math.isfinite(s) and 0 <= s <= 1 for s in scores)
    notebook = pd.read_csv(messy_run / "prediction.csv").set_index("video_name").score
    np.testing.assert_allclose(scores, notebook[names].to_numpy(), rtol=0, atol=2e-6)  # the CSV keeps 6 decimals
    for case, s in zip(corpus, scores):
        assert (s == FALLBACK_SCORE) == (case in BROKEN), case


# ---------------------------------------------------------------------------------------------------------------
# visual and fusion models on the same corpus (untrained checkpoints: the fallback rules, not the model, are tested)


@pytest.mark.parametrize("model_type, fallback, no_audio", [
    ("visual", set(BROKEN) | {"audio_only"}, set()),  # nothing to see in an audio-only clip: like a broken one
    ("fusion", set(BROKEN), set(NO_AUDIO)),  # the audio of an audio-only clip is scored, faces are zeros
])
def test_visual_and_fusion_models_on_every_case(corpus, session_outputs, model_type, fallback, no_audio):
    run = untrained_run(f"bad-{model_type}", model_type=model_type)
    table = score_table(list(corpus.values()), run).assign(case=list(corpus)).set_index("case")
    for case, row in table.iterrows():
        if case in fallback:
            assert row.status.startswith("fallback: ") and row.score == FALLBACK_SCORE, (case, row.status)
        else:
            expected = "no_audio" if case in no_audio else "no_video" if case == "audio_only" else "ok"
            assert row.status == expected, (case, row.status)
            assert row.score != FALLBACK_SCORE and 0 < row.score < 1, case
    if model_type == "visual":
        assert "no video" in table.loc["audio_only", "status"]
