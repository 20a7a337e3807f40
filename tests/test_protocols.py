"""Protocols: held-out kinds never leak into training, clusters are held out whole, split files round-trip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ffdv_utils.data.index import media_index
from ffdv_utils.data.splits import (
    Split,
    cluster_splits,
    labelled_clips,
    read_split,
    write_split,
)
from ffdv_utils.experiments.protocol_report import protocol_leaderboard
from ffdv_utils.experiments.protocols import (
    cluster_assign,
    cluster_statistics,
    evaluate_scores,
    make_splits,
)
from ffdv_utils.experiments.sync_cue import (
    plot_sync_cue,
    sync_cue_summary,
    sync_cue_table,
)

KINDS = ("real", "audio", "visual", "av_mismatch")


@pytest.fixture()
def data_root(tmp_path):
    """An FFDV-layout folder with empty video files (the protocols only need names, labels and kinds)."""
    root = tmp_path / "data"
    rows = []
    rng = np.random.default_rng(0)
    for split, folder, n in (("train", "trainset", 24), ("val", "valset", 12), ("test", "testset", 8)):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            kind = KINDS[i % 4]
            name = f"{split}{i:02d}{rng.integers(1000)}.mp4"
            (root / folder / name).write_bytes(b"")
            rows.append((name, split, int(kind != "real"), kind))
    df = pd.DataFrame(rows, columns=["video_name", "split", "target", "kind"])
    for split, fname in (("train", "train_label.txt"), ("val", "val_label.txt")):
        df[df.split == split][["video_name", "target"]].to_csv(root / fname, index=False)
    answers = tmp_path / "answers"
    answers.mkdir()
    df[df.split == "test"][["video_name", "target"]].to_csv(answers / "test_label.txt", index=False)
    df.to_csv(answers / "manipulations.csv", index=False)
    return root


def test_held_out_kind_never_trains_on_the_held_out_kind(data_root) -> None:
    kinds_csv = data_root.parent / "answers" / "manipulations.csv"
    splits = make_splits(data_root, ["plain", "held_out_kind"], kinds_csv=kinds_csv)
    held = [s for s in splits if s.protocol == "held_out_kind"]
    assert sorted(s.held_out for s in held) == ["audio", "av_mismatch", "visual"]
    for s in held:
        assert s.held_out not in set(s.train.kind)
        assert set(s.eval.kind) == {"real", s.held_out}
        assert not set(s.train.video_name) & set(s.eval.video_name)
        all_of_kind = pd.read_csv(kinds_csv).query("kind == @s.held_out and split != 'test'").video_name
        assert set(all_of_kind) <= set(s.eval.video_name)  # every clip of the kind is evaluated
        assert set(s.eval[s.eval.kind == "real"].video_name) <= set(splits[0].eval.video_name)  # val reals
    plain = splits[0]
    assert set(plain.train.split) == {"train"} and set(plain.eval.split) == {"val"}


def test_held_out_identity_never_trains_on_a_face_it_evaluates(data_root) -> None:
    kinds_csv = data_root.parent / "answers" / "manipulations.csv"
    table = pd.read_csv(kinds_csv)
    table["identity"] = [f"p{i % 7}" for i in range(len(table))]  # 7 people, each in train and val
    table.to_csv(kinds_csv, index=False)
    splits = make_splits(data_root, ["held_out_identity"], kinds_csv=kinds_csv, cluster_folds=2)
    assert [s.protocol for s in splits] == ["held_out_identity"] * 2
    labelled = table[table.split != "test"]
    evaluated = pd.concat([s.eval for s in splits])
    assert sorted(evaluated.video_name) == sorted(labelled.video_name)  # every clip evaluated exactly once
    for s in splits:
        assert not set(s.train.identity) & set(s.eval.identity)  # nobody on both sides
        assert len(s.train) + len(s.eval) == len(labelled) and s.eval.target.nunique() == 2
    sizes = [len(s.eval) for s in splits]
    assert max(sizes) - min(sizes) <= labelled.identity.value_counts().max()  # folds balanced by clip count
    bare = data_root.parent / "answers" / "kinds_only.csv"
    table.drop(columns="identity").to_csv(bare, index=False)
    with pytest.warns(UserWarning, match="identity column"):
        assert make_splits(data_root, ["held_out_identity"], kinds_csv=bare) == []


def test_without_kinds_the_cluster_protocol_stands_in(sample) -> None:
    """No kinds: held_out_kind becomes cluster, clustered on the clips' real statistics (media index, mel images and
    face crops of the sample's clips), whole clusters held out."""
    params = {"image_size": 64, "face_frames": 2, "face_size": 32, "feature_workers": 1}
    with pytest.warns(UserWarning, match="kinds_csv"):
        splits = make_splits(sample["data_root"], ["held_out_kind"], params=params, n_clusters=3, cluster_folds=3)
    assert [s.protocol for s in splits] == ["cluster"] * 3
    clips = labelled_clips(sample["data_root"])
    evaluated = pd.concat([s.eval for s in splits])
    assert sorted(evaluated.video_name) == sorted(clips.video_name)  # every clip evaluated exactly once
    for s in splits:
        assert not set(s.train.cluster) & set(s.eval.cluster) and len(s.train) + len(s.eval) == len(clips)
    stats = cluster_statistics(clips, params)
    index = media_index(clips[["video_name", "path"]]).set_index("video_name").loc[stats.video_name]
    np.testing.assert_allclose(stats.fps, index.fps.astype(float))
    np.testing.assert_allclose(stats.log_pixels, np.log(index.width.astype(float) * index.height.astype(float)))
    for col in ("mel_mean", "mel_std", "face_mean", "face_red"):  # measured per clip, not a constant
        assert stats[col].std() > 0, col
    assert dict(zip(evaluated.video_name, evaluated.cluster)) == dict(zip(stats.video_name,
                                                                          cluster_assign(stats, n_clusters=3)))


def test_cluster_splits_hold_whole_clusters_out() -> None:
    rng = np.random.default_rng(1)
    n = 60
    clips = pd.DataFrame({"video_name": [f"c{i}" for i in range(n)], "target": rng.integers(0, 2, n),
                          "split": "train", "folder": "trainset"})
    centres = rng.normal(0, 10, (5, 3))
    truth = rng.integers(0, 5, n)
    stats = pd.DataFrame(centres[truth] + rng.normal(0, 0.1, (n, 3)), columns=["fps", "log_pixels", "mel_mean"])
    clusters = cluster_assign(stats, n_clusters=5)
    assert pd.crosstab(clusters, truth).gt(0).sum(axis=1).eq(1).all()  # well separated groups are found
    splits = cluster_splits(clips, clusters, n_folds=2)
    assert len(splits) == 2
    evaluated = pd.concat([s.eval for s in splits])
    assert sorted(evaluated.video_name) == sorted(clips.video_name)  # every clip evaluated exactly once
    for s in splits:
        assert not set(s.train.cluster) & set(s.eval.cluster)  # no cluster on both sides
        assert len(s.train) + len(s.eval) == n


def test_split_file_round_trip_and_test_protocol(data_root) -> None:
    answers = data_root.parent / "answers"
    splits = make_splits(data_root, ["plain", "test"], kinds_csv=answers / "manipulations.csv",
                                   test_labels=answers / "test_label.txt")
    test = splits[1]
    assert test.train_key() == splits[0].train_key()  # same training set: one model serves both
    assert len(test.eval) == 8 and set(test.eval.folder) == {"testset"}
    path = write_split(test, data_root.parent / "split.csv")
    train, evals = read_split(path, data_root)
    assert list(train.video_name) == list(test.train.video_name)
    assert list(evals.video_name) == list(test.eval.video_name)
    assert all(p.startswith(str(data_root)) for p in evals.path)
    assert (evals.target.to_numpy() == test.eval.target.to_numpy()).all()


def test_evaluate_scores_and_one_leaderboard() -> None:
    ev = pd.DataFrame({"video_name": list("abcdef"), "target": [0, 0, 1, 1, 1, 1],
                       "kind": ["real", "real", "audio", "audio", "visual", "visual"]})
    split = Split("plain", "plain", ev.iloc[:0], ev)
    scores = pd.DataFrame({"video_name": list("abcdef"), "score": [0.1, 0.2, 0.9, 0.8, 0.15, 0.05]})
    m = evaluate_scores(split, scores)
    assert m["auc[audio]"] == 1.0 and m["auc[visual]"] == 0.25
    rows = pd.DataFrame([
        {"protocol": "plain", "split": "plain", "held_out": "", "name": "audio", "auc": 0.6, "tpr@fpr=1e-2": 0.1,
         "tpr@fpr=1e-3": 0.1, "auc[audio]": 1.0, "n_params": 2e6},
        {"protocol": "plain", "split": "plain", "held_out": "", "name": "fusion", "auc": 0.9, "tpr@fpr=1e-2": 0.3,
         "tpr@fpr=1e-3": 0.2, "auc[audio]": 0.95, "n_params": 4e6},
        {"protocol": "held_out_kind", "split": "holdout-audio", "held_out": "audio", "name": "fusion", "auc": 0.7,
         "tpr@fpr=1e-2": 0.0, "tpr@fpr=1e-3": 0.0, "n_params": 4e6},
        {"protocol": "held_out_kind", "split": "holdout-visual", "held_out": "visual", "name": "fusion",
         "auc": 0.5, "tpr@fpr=1e-2": 0.0, "tpr@fpr=1e-3": 0.0, "n_params": 4e6},
    ])
    board = protocol_leaderboard(rows)
    assert list(board.name) == ["fusion", "audio"]
    assert board.loc[0, "held_out_kind auc"] == pytest.approx(0.6)
    assert board.loc[0, "unseen visual auc"] == 0.5 and board.loc[0, "unseen audio auc"] == 0.7
    row = board.set_index("name")
    assert row.loc["fusion", ["plain auc", "plain tpr@fpr=1e-2", "plain tpr@fpr=1e-3", "plain auc[audio]"]].tolist() \
        == [0.9, 0.3, 0.2, 0.95]
    assert row.loc["audio", ["plain auc", "plain tpr@fpr=1e-2", "plain auc[audio]"]].tolist() == [0.6, 0.1, 1.0]
    assert row.params_M.tolist() == [4.0, 2.0]
    assert row.loc["audio", ["held_out_kind auc", "unseen audio auc", "unseen visual auc"]].isna().all()  # not run


def test_unknown_protocol_is_refused(data_root) -> None:
    with pytest.raises(ValueError, match="unknown protocol"):
        make_splits(data_root, ["loso"])


def test_sync_cue_table_on_the_sample_data(sample) -> None:
    """The untrained lip-sync cue, per clip and per kind, from the cache (what 05_compare plots)."""
    clips = labelled_clips(sample["data_root"])
    params = {"image_size": 64, "face_frames": 6, "face_size": 48, "feature_workers": 1}
    table = sync_cue_table(params, clips, kinds_csv=sample["answers"] / "manipulations.csv")
    assert len(table) == len(clips) and set(table.video_name) == set(clips.video_name)
    assert table.sync_cue.between(-1, 1).all() and table.sync_cue.std() > 0
    summary = sync_cue_summary(table)
    assert set(summary.group) <= {"real", "audio", "visual", "av_mismatch"} and "real" in set(summary.group)
    fakes = summary[summary.group != "real"]
    assert fakes.auc_vs_real.between(0, 1).all() and summary.n.sum() == len(table)
    fig = plot_sync_cue(table)
    assert len(fig.axes[0].patches) > 0


def test_unseen_kinds_auc_pools_the_kinds_absent_from_training() -> None:
    train = pd.DataFrame({"video_name": ["t0", "t1", "t2"], "target": [0, 1, 1], "kind": ["real", "audio", "audio"]})
    ev = pd.DataFrame({"video_name": list("abcdefg"), "target": [0, 0, 1, 1, 1, 1, 1],
                       "kind": ["real", "real", "audio", "audio", "lpc_voice", "reenact", "reenact"]})
    scores = pd.DataFrame({"video_name": list("abcdefg"), "score": [0.3, 0.5, 0.9, 0.8, 0.4, 0.6, 0.7]})
    m = evaluate_scores(Split("test", "test", train, ev), scores)
    # seen: audio (0.9, 0.8) against reals (0.3, 0.5) -> 1.0; unseen: lpc_voice 0.4, reenact 0.6 / 0.7 -> 5 of 6 pairs
    assert m["auc[seen kinds]"] == 1.0
    assert m["auc[unseen kinds]"] == pytest.approx(5 / 6)
    # every eval kind seen in training: no pooled unseen figure
    assert "auc[unseen kinds]" not in evaluate_scores(Split("plain", "plain", train, ev.iloc[:4]), scores)
