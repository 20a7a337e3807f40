"""The grouped protocol (leave-source-out) and the two floors every candidate must beat."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from ffdv_utils.data.groups import attach_groups, group_leak, grouped_splits, read_groups
from ffdv_utils.data.labels import DataError, is_pool, pool_clips
from ffdv_utils.experiments.floors import (
    BASELINE_FLOOR,
    BASELINE_RECIPE,
    METADATA_FLOOR,
    baseline_params,
    floor_flags,
    metadata_scores,
)
from ffdv_utils.experiments.protocol_report import protocol_leaderboard
from ffdv_utils.experiments.protocols import make_splits, run_protocols
from ffdv_utils.training.loop import FitResult


def _clips(n_groups: int, per_group: int, seed: int = 0, pure: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        rate = float(g % 2) if pure else rng.uniform(0.2, 0.8)
        for i in range(per_group):
            rows.append({"video_name": f"g{g:02d}_{i:02d}.mp4", "target": int(rng.random() < rate) if not pure
                         else int(rate), "group": f"src{g:02d}"})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("n_groups,per_group,folds", [(30, 4, 5), (7, 3, 0), (12, 5, 3), (5, 2, 9)])
def test_a_grouped_split_never_puts_one_group_on_both_sides(n_groups, per_group, folds) -> None:
    clips = _clips(n_groups, per_group, seed=n_groups)
    splits = grouped_splits(clips, folds, seed=1)
    assert group_leak(splits) == []
    for s in splits:
        assert not set(s.train.group) & set(s.eval.group)
        assert len(s.train) + len(s.eval) == len(clips)
    # every clip is evaluated exactly once over the folds
    evaluated = pd.concat([s.eval for s in splits]).video_name
    assert sorted(evaluated) == sorted(clips.video_name)
    expected = n_groups if folds <= 0 or folds >= n_groups else folds
    assert len(splits) == expected


def test_group_leak_sees_a_group_on_both_sides() -> None:
    clips = _clips(6, 3)
    split = grouped_splits(clips, 3)[0]
    split.eval = pd.concat([split.eval, split.train.iloc[:1]])
    assert group_leak([split]) == [f"{split.name}: {split.train.group.iloc[0]}"]


def test_a_model_that_only_learned_its_groups_scores_at_chance_under_the_grouped_protocol() -> None:
    """Features that identify the group (one-hot, the way a source's camera or codec would) and labels that follow
    the group: a random split rewards learning the group; the grouped split shows it is worth nothing."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import KFold

    clips = _clips(20, 6, pure=True)
    onehot = pd.get_dummies(clips.group).to_numpy(float)
    y = clips.target.to_numpy()

    def oof_auc(folds) -> float:
        scores = np.zeros(len(y))
        for tr, te in folds:
            scores[te] = LogisticRegression(C=10.0, max_iter=1000).fit(onehot[tr], y[tr]).predict_proba(onehot[te])[:, 1]
        return roc_auc_score(y, scores)

    random_auc = oof_auc(KFold(5, shuffle=True, random_state=0).split(onehot))
    index = {n: i for i, n in enumerate(clips.video_name)}
    grouped = [(s.train.video_name.map(index).to_numpy(), s.eval.video_name.map(index).to_numpy())
               for s in grouped_splits(clips, 5, seed=0)]
    grouped_auc = oof_auc(grouped)
    assert random_auc > 0.95
    assert abs(grouped_auc - 0.5) < 0.05


def test_clips_without_a_group_are_groups_of_their_own(tmp_path) -> None:
    clips = _clips(4, 3)[["video_name", "target"]]
    csv = tmp_path / "groups.csv"
    pd.DataFrame({"video_name": clips.video_name[:6].str.replace(".mp4", ""), "where": ["a"] * 3 + ["b"] * 3}
                 ).to_csv(csv, index=False)
    with pytest.warns(UserWarning, match="6 clip"):
        out = attach_groups(clips, read_groups(csv, "where"))
    assert out.group.nunique() == 2 + 6
    with pytest.raises(DataError, match="no column 'source'"):
        read_groups(csv, "source")


def _pool(tmp_path, n_sources: int = 6, per: int = 4) -> tuple:
    root = tmp_path / "pool"
    (root / "clips").mkdir(parents=True)
    rows = []
    for s in range(n_sources):
        for i in range(per):
            name = f"s{s}_{i}.mp4"
            (root / "clips" / name).write_bytes(b"")
            rows.append({"video_name": name, "target": (s + i) % 2, "source": f"repo{s}", "note": "x"})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root, pd.DataFrame(rows)


def test_a_labelled_folder_is_one_pool_split_by_its_own_source_column(tmp_path) -> None:
    root, rows = _pool(tmp_path)
    assert is_pool(root) and not is_pool(tmp_path)
    clips = pool_clips(root)
    assert list(clips.video_name) == list(rows.video_name) and set(clips.folder) == {"clips"}
    with pytest.warns(UserWarning, match="plain needs FFDV"):
        splits = make_splits(root, ["grouped", "plain"], group_folds=3)
    assert [s.protocol for s in splits] == ["grouped"] * 3 and group_leak(splits) == []
    assert all(set(s.eval.group) & set(s.train.group) == set() for s in splits)
    assert set(pd.concat([s.eval for s in splits]).group) == set(rows.source)
    with pytest.raises(DataError, match="groups_csv"):
        make_splits(_ffdv(tmp_path), ["grouped"])  # FFDV layout, no groups file named


def _ffdv(tmp_path):
    root = tmp_path / "ffdv"
    for split, folder in (("train", "trainset"), ("val", "valset")):
        (root / folder).mkdir(parents=True)
        names = [f"{split}{i}.mp4" for i in range(4)]
        for n in names:
            (root / folder / n).write_bytes(b"")
        pd.DataFrame({"video_name": names, "target": [0, 1, 0, 1]}).to_csv(root / f"{split}_label.txt", index=False)
    return root


def test_the_baseline_floor_is_the_recipe_whatever_the_comparison_shares() -> None:
    shared = {"real_only_weight": 0.9, "pseudo_fakes": {"voice": 0.5}, "model_type": "fusion", "mel_preset": "default",
              "lr": 0.1, "feature_workers": 3, "data_root": "somewhere"}
    p = baseline_params(shared)
    for key, value in BASELINE_RECIPE.items():
        assert p[key] == value, key
    assert p["feature_workers"] == 3 and p["data_root"] == "somewhere"
    assert p["mel_preset"] == "seed" and p["model"] == "resnet18" and p["lr"] == 3.0e-3 and p["epochs"] == 10
    assert baseline_params({}, pretrained="weights/resnet18.pth")["pretrained"] == "weights/resnet18.pth"


def test_the_metadata_floor_reads_only_container_fields() -> None:
    from ffdv_utils.data.splits import Split

    rng = np.random.default_rng(0)
    n = 40
    index = pd.DataFrame({"video_name": [f"c{i}.mp4" for i in range(n)], "duration": rng.uniform(2, 10, n),
                          "fps": 25.0, "width": 512, "height": 512, "size_bytes": rng.uniform(1e5, 1e6, n),
                          "has_audio": True, "channels": 1, "audio_codec": "aac", "video_codec": "h264"})
    target = np.arange(n) % 2
    index["sample_rate"] = np.where(target == 1, 16000, 44100)  # the shortcut
    labels = pd.DataFrame({"video_name": index.video_name, "target": target})
    split = Split("grouped", "g", labels.iloc[:30], labels.iloc[30:])
    scores = metadata_scores(split, index)
    assert list(scores.video_name) == list(labels.video_name[30:])
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(target[30:], scores.score) == 1.0
    index["sample_rate"] = 16000  # no shortcut left: nothing to learn from the container
    assert roc_auc_score(target[30:], metadata_scores(split, index).score) < 0.8


def test_floor_flags_mark_every_candidate_that_does_not_beat_both_floors() -> None:
    board = pd.DataFrame({"name": ["good", "meh", BASELINE_FLOOR, METADATA_FLOOR, "bad"],
                          "grouped auc": [0.9, 0.75, 0.8, 0.7, 0.6], "test auc": [0.95, 0.9, 0.85, 0.6, np.nan]})
    flags = floor_flags(board)
    assert flags[0] == "ok"
    assert flags[1].startswith("BELOW floor-baseline (grouped 0.750 vs 0.800)")
    assert flags[2] == "floor" and flags[3] == "floor"
    assert "floor-metadata" in flags[4] and "test nan" in flags[4]


def test_run_protocols_adds_both_floors_to_every_split_and_flags_the_board(tmp_path, monkeypatch) -> None:
    """The protocol loop with ``fit`` stubbed (training is tested elsewhere): the baseline floor is trained per split
    and seed with the recipe's parameters (not the candidates' shared ones), the metadata floor is fitted per split,
    and both reach the leaderboard with their intervals and the floors column."""
    monkeypatch.setenv("FFDV_OUTPUTS", str(tmp_path / "out"))
    root, _ = _pool(tmp_path, n_sources=8, per=4)
    calls = []

    def fake_fit(params, run):
        calls.append(dict(params))
        names = pd.read_csv(params["split_csv"]).query("part == 'eval'")
        rng = np.random.default_rng(params["seed"])
        strength = 0.2 if params["model_type"] == "audio" and params["mel_preset"] == "seed" else 2.0
        scores = pd.DataFrame({"video_name": names.video_name, "target": names.target,
                               "score": names.target * strength + rng.random(len(names))})
        return FitResult({"train_time_s": 0.1, "best_epoch": 1}, scores)

    monkeypatch.setattr("ffdv_utils.experiments.protocols.fit", fake_fit)
    cand = [{"name": "strong", "model_type": "fusion"}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no 03 record; empty files cannot be probed
        results = run_protocols("rw", root, cand, ["grouped"], group_folds=4, seeds=2,
                                shared={"real_only_weight": 0.5, "mel_preset": "default"},
                                floors=["baseline", "metadata"])
    baseline_calls = [c for c in calls if c["run_name"].startswith(f"rw-{BASELINE_FLOOR}")]
    assert len(baseline_calls) == 4 * 2 and len(calls) == 4 * 2 * 2
    assert all(c["real_only_weight"] == 0.0 and c["mel_preset"] == "seed" for c in baseline_calls)
    assert set(results.name) == {"strong", BASELINE_FLOOR, METADATA_FLOOR}
    assert (results.name == METADATA_FLOOR).sum() == 4
    board = protocol_leaderboard(results, folder=tmp_path / "out" / "rw").set_index("name")
    assert board.loc["strong", "floors"] == "ok"
    assert board.loc[BASELINE_FLOOR, "floors"] == "floor"
    assert np.isfinite(board.loc[METADATA_FLOOR, "grouped auc lo"])
    with pytest.raises(ValueError, match="unknown floor"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        run_protocols("rw2", root, cand, ["grouped"], floors=["oracle"])
