"""Train / eval splits: which clips train a model and which clips test it (the protocols of ``experiments.protocols``).

- ``plain``: the label files' train split trains, the val split evaluates.
- ``held_out_kind``: one split per fake kind K: train without K, evaluate on real clips plus every K fake.
- ``cluster``: whole clusters of clips held out (the clustering itself is ``experiments.protocols``).
- ``held_out_identity``: whole identities held out (who is speaking; the sample data's answers name them).
- ``test``: train split trains, a labelled test split evaluates (sample data: ``answers/test_label.txt``).

A split is written as a CSV (``video_name, part, target, folder``; ``part`` is train or eval, ``folder`` is
relative to the data root) and handed to training as the ``split_csv`` parameter, which
``features.batches.clip_datasets`` reads with ``read_split``.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from ..core.files import atomic_write
from ..core.paths import SPLIT_DIRS, data_root_path, resolve_path
from .labels import canonical_name, is_pool, labelled_frame, list_test, pool_clips, read_labels

SPLIT_COLUMNS = ("video_name", "part", "target", "folder")


@dataclass
class Split:
    """One train / eval partition. ``train`` and ``eval``: video_name, target, folder (and kind when known)."""

    protocol: str
    name: str
    train: pd.DataFrame
    eval: pd.DataFrame
    held_out: str = ""
    note: str = ""
    extra: dict = field(default_factory=dict)

    def train_key(self) -> str:
        """Hash of the training clips: two splits with the same key train the same model."""
        return hashlib.sha1("\n".join(sorted(self.train.video_name)).encode()).hexdigest()[:12]

    def summary(self) -> dict:
        return {"protocol": self.protocol, "split": self.name, "held_out": self.held_out,
                "n_train": int(len(self.train)), "n_train_fake": int((self.train.target > 0.5).sum()),
                "n_eval": int(len(self.eval)), "n_eval_fake": int((self.eval.target > 0.5).sum()), "note": self.note}


# ----------------------------------------------------------------------------------------------------------------
# inputs


def labelled_clips(data_root: Any, splits: Iterable[str] = ("train", "val")) -> pd.DataFrame:
    """Labelled clips with video_name, target, path, split and folder (relative to the data root).

    A labelled folder (``labels.csv`` + ``clips/``, ``data.labels.is_pool``) is one pool: split ``pool``."""
    if is_pool(data_root):
        return pool_clips(data_root)
    df = labelled_frame(data_root, splits)
    df["folder"] = [SPLIT_DIRS[s] for s in df.split]
    return df


# ----------------------------------------------------------------------------------------------------------------
# protocols


def plain_split(clips: pd.DataFrame) -> Split:
    """Train split trains, val split evaluates."""
    return Split("plain", "plain", clips[clips.split == "train"].reset_index(drop=True),
                 clips[clips.split == "val"].reset_index(drop=True))


def held_out_kind_splits(clips: pd.DataFrame, kinds: Sequence[str] | None = None) -> list[Split]:
    """One split per fake kind K: train = train-split clips not of kind K; eval = val reals + every K fake.

    ``clips`` needs ``kind`` (``attach_kinds``). Fakes of other kinds in the val split are left out of both
    parts, so the training set differs from ``plain`` only by the missing kind.
    """
    fake_kinds = [k for k in (kinds or sorted(clips.kind[clips.target > 0.5].unique())) if k != "real"]
    out = []
    for kind in fake_kinds:
        train = clips[(clips.split == "train") & (clips.kind != kind)]
        evals = clips[((clips.split == "val") & (clips.target < 0.5)) | (clips.kind == kind)]
        note = "" if (evals.target > 0.5).any() else f"no {kind} fake to evaluate"
        out.append(Split("held_out_kind", f"holdout-{kind}", train.reset_index(drop=True),
                         evals.reset_index(drop=True), held_out=kind, note=note))
    return out


def cluster_splits(clips: pd.DataFrame, clusters: Sequence[int], n_folds: int = 2) -> list[Split]:
    """Whole clusters held out: clusters are dealt to ``n_folds`` folds (largest first, to the smallest fold);
    fold f evaluates on its clusters' clips and trains on every other clip."""
    clips = clips.assign(cluster=np.asarray(clusters, int))
    sizes = clips.cluster.value_counts().sort_values(ascending=False, kind="stable")
    n_folds = max(2, min(int(n_folds), len(sizes)))
    fold_of, load = {}, [0] * n_folds
    for cid, size in sizes.items():
        f = int(np.argmin(load))
        fold_of[int(cid)], load[f] = f, load[f] + int(size)
    clips["fold"] = clips.cluster.map(fold_of)
    out = []
    for f in range(n_folds):
        held = sorted(c for c, g in fold_of.items() if g == f)
        evals, train = clips[clips.fold == f], clips[clips.fold != f]
        note = "" if evals.target.nunique() == 2 else "eval part holds one class only: AUC undefined"
        out.append(Split("cluster", f"cluster-{f}", train.reset_index(drop=True), evals.reset_index(drop=True),
                         held_out="clusters " + ",".join(map(str, held)), note=note))
    return out


def held_out_identity_splits(clips: pd.DataFrame, n_folds: int = 2) -> list[Split]:
    """Whole identities held out: the identities of the train and val splits are dealt to ``n_folds`` folds (most
    clips first, to the fold with fewest clips; ties by name); fold f evaluates on every clip of its identities, real
    and fake, and trains on the clips of all the others. ``clips`` needs ``identity`` (``attach_kinds`` with an
    answers file that has it); a clip without one stays in every training part. The kinds are all seen in training:
    what is unseen is the face and the voice."""
    known = clips[clips.identity.astype(str) != ""]
    sizes = known.identity.value_counts()
    order = sorted(sizes.index, key=lambda who: (-int(sizes[who]), str(who)))
    n_folds = max(2, min(int(n_folds), len(order)))
    fold_of, load = {}, [0] * n_folds
    for who in order:
        f = int(np.argmin(load))
        fold_of[who], load[f] = f, load[f] + int(sizes[who])
    fold = clips.identity.map(fold_of)
    out = []
    for f in range(n_folds):
        evals, train = clips[fold == f], clips[fold != f]
        note = "" if evals.target.nunique() == 2 else "eval part holds one class only: AUC undefined"
        out.append(Split("held_out_identity", f"identity-{f}", train.reset_index(drop=True),
                         evals.reset_index(drop=True),
                         held_out=f"{sum(1 for g in fold_of.values() if g == f)} identities", note=note))
    return out


def test_split(clips: pd.DataFrame, data_root: Any, test_labels: Any, test_dir: str = "testset") -> Split:
    """Train split trains; the labelled test clips evaluate (answers kept outside the data folder)."""
    truth = read_labels(resolve_path(test_labels))
    test = list_test(data_root, test_dir)
    test = test[test.exists]
    target = dict(zip(truth.video_name, truth.target))
    test = test.assign(target=[target.get(canonical_name(n), target.get(n, np.nan)) for n in test.video_name])
    test = test.dropna(subset=["target"])
    test["split"] = "test"
    test["folder"] = test_dir
    if "kind" in clips:
        test["kind"] = np.where(test.target > 0.5, "fake", "real")
    return Split("test", "test", clips[clips.split == "train"].reset_index(drop=True),
                 test[[c for c in ("video_name", "target", "path", "split", "folder") if c in test]]
                 .reset_index(drop=True))


# ----------------------------------------------------------------------------------------------------------------
# split files


def write_split(split: Split, path: str | os.PathLike) -> Path:
    """The split as ``video_name, part, target, folder`` (plus kind when known), written atomically."""
    cols = ["video_name", "target", "folder"] + (["kind"] if "kind" in split.train or "kind" in split.eval else [])
    parts = [split.train.reindex(columns=cols).assign(part="train"),
             split.eval.reindex(columns=cols).assign(part="eval")]
    df = pd.concat(parts, ignore_index=True)[["video_name", "part", "target", "folder"] + cols[3:]]
    path = Path(path)
    atomic_write(path, df.to_csv(index=False))
    return path


def read_split(path: str | os.PathLike, data_root: Any = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, eval) frames with video_name, target, path from a split CSV (``write_split``)."""
    resolved = resolve_path(str(path))
    if resolved is None or not resolved.is_file():
        raise FileNotFoundError(f"split file {path!r} not found (resolved to {resolved})")
    df = pd.read_csv(resolved, dtype={"video_name": str, "folder": str})
    missing = set(SPLIT_COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"{resolved}: needs columns {', '.join(SPLIT_COLUMNS)} (missing {', '.join(sorted(missing))})")
    root = data_root_path(data_root)
    df["path"] = [str(root / f / n) for f, n in zip(df.folder, df.video_name)]
    absent = [n for n, p in zip(df.video_name, df.path) if not Path(p).is_file()]
    if absent:
        warnings.warn(f"{resolved}: {len(absent)} clip(s) have no file under {root} and are left out "
                      f"(first: {', '.join(absent[:5])})", stacklevel=2)
        df = df[~df.video_name.isin(absent)]
    train = df[df.part == "train"][["video_name", "target", "path"]].reset_index(drop=True)
    evals = df[df.part == "eval"][["video_name", "target", "path"]].reset_index(drop=True)
    if train.empty or evals.empty:
        raise ValueError(f"{resolved}: the train and eval parts must both hold clips "
                         f"({len(train)} train, {len(evals)} eval)")
    return train, evals
