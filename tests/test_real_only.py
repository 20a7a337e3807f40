"""The real-only score (``features.statistics``, ``detector.real_only``): fitted on real clips only, joined to a run's
scores everywhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ffdv_utils.core.schema import TRAIN_DEFAULTS
from ffdv_utils.data.splits import labelled_clips
from ffdv_utils.detector.real_only import RealOnlyModel, combine
from ffdv_utils.features.statistics import STAT_NAMES, clip_statistics

FEAT = {"image_size": 64, "face_size": 64, "face_frames": 4, "face_detector": "center", "feature_workers": 1}


def _table(n_real: int = 40, n_fake: int = 10, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0, 1, (n_real, len(STAT_NAMES))), rng.normal(50, 1, (n_fake, len(STAT_NAMES)))])
    t = pd.DataFrame(x, columns=STAT_NAMES)
    t.insert(0, "video_name", [f"r{i}" for i in range(n_real)] + [f"f{i}" for i in range(n_fake)])
    t["target"] = [0] * n_real + [1] * n_fake
    return t


def test_no_fake_clip_reaches_the_fit() -> None:
    table = _table()
    model = RealOnlyModel().fit(table)
    assert model.fitted_names == [f"r{i}" for i in range(40)]
    alone = RealOnlyModel().fit(table[table.target == 0])
    assert np.allclose(model.mean, alone.mean) and np.allclose(model.precision, alone.precision)
    # the fakes (far away) score high, the reals low; scores are probability-like
    s = model.score(table)
    assert s[table.target == 1].min() > s[table.target == 0].max()
    assert ((s >= 0) & (s < 1)).all()


def test_missing_statistics_add_no_evidence_and_too_few_reals_are_refused() -> None:
    table = _table()
    model = RealOnlyModel().fit(table)
    row = table.iloc[[0]].copy()
    at_mean = row.copy()
    at_mean[model.columns] = model.mean
    gap = row.copy()
    gap[model.columns] = np.nan
    assert model.distance(gap)[0] == pytest.approx(model.distance(at_mean)[0]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="too few"):
        RealOnlyModel().fit(_table(n_real=2))
    again = RealOnlyModel.from_state(model.state())
    assert np.allclose(again.score(table), model.score(table))


def test_statistics_of_real_sample_clips(sample: dict) -> None:
    clips = labelled_clips(sample["data_root"])
    table = clip_statistics({**TRAIN_DEFAULTS, **FEAT, "data_root": str(sample["data_root"])}, clips)
    assert list(table.video_name) == list(clips.video_name) and set(STAT_NAMES) <= set(table.columns)
    ok = table[["sync_lag0", "spectral_flatness", "frame_change", "inner_sharpness"]]
    assert np.isfinite(ok.to_numpy()).all()  # every sample clip has sound and a face
    assert table[["landmark_jerk"]].isna().all().all()  # a center cache has no landmarks
    assert (table.levels > 1).all() and table.sync_lag0.between(-1, 1).all()


def test_statistics_are_computed_once_per_clip_and_read_back(sample: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from ffdv_utils.features import statistics as real_only

    params = {**TRAIN_DEFAULTS, **FEAT, "data_root": str(sample["data_root"])}
    clips = labelled_clips(sample["data_root"])
    first = clip_statistics(params, clips)  # (another test may have filled the cache already)
    calls = []
    compute = real_only._statistics_rows
    monkeypatch.setattr(real_only, "_statistics_rows", lambda ds, store, rows, batch: calls.append(list(rows))
                        or compute(ds, store, rows, batch))
    again = clip_statistics(params, clips.iloc[::-1].reset_index(drop=True))
    assert calls == []  # every row read from the cache
    pd.testing.assert_frame_equal(again.iloc[::-1].reset_index(drop=True), first, check_exact=True)
    other = clip_statistics({**params, "face_frames": 3}, clips.iloc[:2])  # other features: other entries
    assert calls == [[0, 1]] and len(other) == 2


@pytest.mark.slow
def test_a_run_with_real_only_weight_scores_the_test_api_with_it(sample: dict, tmp_path: Path) -> None:
    from ffdv_utils.core.runs import Run
    from ffdv_utils.detector import load_detector
    from ffdv_utils.inference.score import predict_clips, score_table
    from ffdv_utils.models.checkpoint import load_model
    from ffdv_utils.training.loop import fit

    p = {**TRAIN_DEFAULTS, **FEAT, "data_root": str(sample["data_root"]), "model_type": "audio",
         "model": "test_resnet", "epochs": 1, "batch_size": 8, "progress": False, "device": "cpu",
         "real_only_weight": 0.4, "run_name": "ro"}
    result = fit(p, Run(name="ro", dir=tmp_path / "ro", params=p))
    assert {"val_auc_model", "val_auc_real_only"} <= set(result) and result["real_only_n_real"] > 0
    ckpt = tmp_path / "ro" / "checkpoints" / "best.pt"
    saved = load_detector(ckpt, "cpu")
    assert saved.weights["real_only"] == 0.4 and (tmp_path / "ro" / "real_only.json").is_file()
    clips = labelled_clips(sample["data_root"], ("val",))[["video_name", "path"]]
    api = score_table(list(clips.path), ckpt, device="cpu")
    model, params = load_model(ckpt, "cpu")
    model.real_only_state = None
    alone = predict_clips(model, params, clips, device="cpu", progress=False)
    ro = RealOnlyModel.from_state(saved.parts[0].scorer.state()).score(clip_statistics(params, clips))
    assert np.allclose(api.score, combine(alone.score, ro, 0.4), atol=1e-6)
    assert not np.allclose(api.score, alone.score)


def _comb_image(spacings: np.ndarray, width_noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """A uint8 log-mel-like image whose column j has harmonics every ``spacings[j]`` bands in the low bands."""
    rng = np.random.default_rng(seed)
    bands = np.arange(128)[:, None]
    phase = (bands % spacings[None, :]) / spacings[None, :]
    x = 120 + 60 * np.cos(2 * np.pi * phase) + rng.normal(0, width_noise, (128, len(spacings)))
    return np.clip(x, 0, 255).astype(np.uint8)


def test_pitch_track_finds_the_harmonic_spacing_and_prosody_tells_a_flat_voice() -> None:
    from ffdv_utils.features.statistics import _pitch_track, _prosody_stats

    spacings = np.array([5, 6, 8, 10, 12] * 4, dtype=float)
    lag, peak = _pitch_track(_comb_image(spacings))
    assert np.allclose(lag, spacings, atol=0.35) and (peak > 0.5).all()
    flat = _prosody_stats(_comb_image(np.full(40, 7.0), 4.0), True)
    moving = _prosody_stats(_comb_image(np.linspace(5, 12, 40), 4.0), True)
    assert flat[0] < 0.02 < 0.1 < moving[0]  # spread of log2 F0: a flattened pitch has almost none
    assert np.isnan(_prosody_stats(_comb_image(spacings), False)).all()  # no audio: no evidence


def test_window_spread_sees_one_replaced_stretch() -> None:
    from ffdv_utils.features.statistics import _window_spread

    rng = np.random.default_rng(0)
    steady = rng.normal(0, 1, 64)
    replaced = steady.copy()
    replaced[16:32] += 4.0  # one window unlike the rest
    assert _window_spread(replaced) > 1.2 > 0.6 > _window_spread(steady)
    assert np.isnan(_window_spread(np.ones(5)))


def test_local_correlation_finds_the_window_where_the_mouth_stops_following_the_sound() -> None:
    import torch

    from ffdv_utils.features.statistics import _local_correlation, local_window

    t = 16
    rng = np.random.default_rng(0)
    energy = rng.normal(0, 1, t)
    mouth = energy + rng.normal(0, 0.2, t)  # in sync everywhere
    partial = mouth.copy()
    partial[5:11] = -energy[5:11] + rng.normal(0, 0.2, 6)  # 6 frames where the lips go against the sound
    a = torch.tensor(np.stack([energy, energy]), dtype=torch.float32)
    b = torch.tensor(np.stack([mouth, partial]), dtype=torch.float32)
    whole = [np.corrcoef(energy, x)[0, 1] for x in (mouth, partial)]
    local = _local_correlation(a, b, local_window(t)).numpy()
    assert local_window(16) == 6 and local_window(3) == 3
    assert local[0] > 0.8 and local[1] < -0.3  # the broken window stands out, not an average over windows
    assert whole[1] - local[1] > 0.3  # where the clip's own correlation stays much higher


def test_local_face_statistics_see_a_stretch_of_softened_face() -> None:
    import cv2

    from ffdv_utils.features.statistics import _FaceMaps, _local_face_stats

    rng = np.random.default_rng(0)
    faces = np.clip(rng.normal(120, 30, (16, 64, 64, 3)), 0, 255).astype(np.uint8)
    inner = _FaceMaps.of(faces).inner
    soft = faces.copy()
    for f in range(6, 10):  # four frames whose face interior was decoded (blurred)
        soft[f][inner] = cv2.GaussianBlur(faces[f], (0, 0), 2.0)[inner]
    steady, partial = _local_face_stats(_FaceMaps.of(faces)), _local_face_stats(_FaceMaps.of(soft))
    assert partial[0] > steady[0] + 0.5  # sharpness: log units
    longer = soft.copy()
    for f in (4, 5):
        longer[f][inner] = cv2.GaussianBlur(faces[f], (0, 0), 2.0)[inner]
    # a peak over short windows: 6 softened frames read like 4 (a clip-wide average would grow by half)
    assert abs(_local_face_stats(_FaceMaps.of(longer))[0] - partial[0]) < 0.15 * partial[0]
    whole = faces.copy()
    for f in range(16):
        whole[f][inner] = cv2.GaussianBlur(faces[f], (0, 0), 2.0)[inner]
    assert _local_face_stats(_FaceMaps.of(whole))[0] < steady[0] + 0.2  # a whole-clip change is not a local one


def test_the_edge_gradient_sees_a_blending_boundary() -> None:
    """A face interior pasted with another brightness leaves a step on the inner face's edge: the edge gradient
    (``inner_edge_gradient``) rises; the same brightness change over the whole crop leaves it alone."""
    from ffdv_utils.features.statistics import STAT_GROUPS, _face_stats, _FaceMaps

    rng = np.random.default_rng(0)
    faces = np.clip(rng.normal(120, 6, (8, 64, 64, 3)), 0, 255).astype(np.uint8)
    maps = _FaceMaps.of(faces)
    pasted = faces.copy()
    pasted[:, maps.inner] = np.clip(pasted[:, maps.inner].astype(int) + 40, 0, 255).astype(np.uint8)
    brighter = np.clip(faces.astype(int) + 40, 0, 255).astype(np.uint8)
    edge = STAT_GROUPS["face"].index("inner_edge_gradient")
    plain_edge = _face_stats(faces, maps)[edge]
    assert _face_stats(pasted, _FaceMaps.of(pasted))[edge] > plain_edge + 0.5
    assert abs(_face_stats(brighter, _FaceMaps.of(brighter))[edge] - plain_edge) < 0.05


def test_groups_choose_the_statistics_and_unknown_groups_are_refused() -> None:
    from ffdv_utils.features.statistics import DEFAULT_GROUPS, STAT_GROUPS, group_columns

    assert group_columns(None) == [c for g in DEFAULT_GROUPS for c in STAT_GROUPS[g]]
    assert group_columns(["prosody", "sync"]) == STAT_GROUPS["sync"] + STAT_GROUPS["prosody"]
    assert list(TRAIN_DEFAULTS["real_only_groups"]) == list(DEFAULT_GROUPS)
    with pytest.raises(ValueError, match="unknown group"):
        group_columns(["sync", "lips"])
    model = RealOnlyModel(columns=group_columns(["voice"])).fit(_table())
    assert model.columns == STAT_GROUPS["voice"] and model.precision.shape == (5, 5)


@pytest.mark.slow  # calls fit (refused before any training starts, but the slow-marker guard cannot know)
def test_fit_refuses_bad_real_only_settings_before_training() -> None:
    from ffdv_utils.core.errors import ConfigError
    from ffdv_utils.training.loop import fit

    for bad in ({"real_only_weight": 1.5}, {"real_only_weight": 0.3, "real_only_groups": ["lips"]}):
        with pytest.raises((ConfigError, ValueError), match="real_only"):
            fit({**TRAIN_DEFAULTS, "model": "test_resnet", "progress": False, **bad})
