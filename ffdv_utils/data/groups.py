"""Grouped splits: whole groups of clips (sources, generators, clusters, speakers) on one side only.

A figure from a split that puts clips of one source on both sides says little about a source the model never saw:
a model can learn the source (its camera, its codec, its generator's habits) instead of the manipulation. Here every
group is either trained on or evaluated on, never both:

- ``group_folds`` K >= 2 (default 5): grouped K-fold, stratified by label where the groups allow it
  (``sklearn.model_selection.StratifiedGroupKFold``, shuffled with ``seed``);
- ``group_folds`` 0 (or at least the number of groups): leave-one-group-out, one split per group.

The groups come from any column of a CSV keyed by ``video_name`` (``read_groups``): a user's own clusters or
sources for FFDV, or the ``source`` column of a labelled folder's ``labels.csv``.

A labelled folder (``data.labels.POOL_LABELS`` + ``POOL_CLIPS``) is a second data-root layout beside FFDV's: one pool of
clips, ``labels.csv`` with ``video_name,target`` and any other columns, the media in ``clips/``. It has no train /
val split of its own: the grouped protocol makes them.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..core.paths import resolve_path
from .labels import DataError, canonical_name
from .splits import Split

UNGROUPED = "<no group>"


def read_groups(path: str | os.PathLike, column: str) -> dict[str, str]:
    """{video_name: group} from ``column`` of a CSV with a ``video_name`` column (names matched with or without
    ``.mp4``). Raises ``DataError`` naming the file when either column is missing."""
    resolved = resolve_path(str(path))
    if resolved is None or not Path(resolved).is_file():
        raise DataError(f"groups file {path!r} not found (resolved to {resolved})")
    df = pd.read_csv(resolved, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    df.columns = [c.strip() for c in df.columns]
    for col in ("video_name", column):
        if col not in df.columns:
            raise DataError(f"{resolved}:1: no column {col!r} (columns: {', '.join(df.columns)}); "
                            "set group_column to one of them")
    out: dict[str, str] = {}
    for name, group in zip(df.video_name, df[column]):
        out[canonical_name(name.strip())] = group.strip()
    return out


def attach_groups(clips: pd.DataFrame, groups: Mapping[str, str]) -> pd.DataFrame:
    """``clips`` with a ``group`` column; a clip the groups file does not name is a group of its own (warned)."""
    names = [canonical_name(n) for n in clips.video_name]
    found = [groups.get(n, "") for n in names]
    lonely = [n for n, g in zip(clips.video_name, found) if not g]
    if lonely:
        warnings.warn(f"{len(lonely)} clip(s) have no group and each forms a group of its own "
                      f"(first: {', '.join(lonely[:5])})", stacklevel=2)
    return clips.assign(group=[g or f"{UNGROUPED}:{n}" for g, n in zip(found, clips.video_name)])


def grouped_splits(clips: pd.DataFrame, n_folds: int = 5, seed: int = 0) -> list[Split]:
    """Splits that hold whole groups out (``clips`` needs ``group``; see the module docstring for the fold rule).

    Every clip is evaluated exactly once over the splits, and no split has one group on both sides.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    clips = clips.reset_index(drop=True)
    groups = clips.group.astype(str).to_numpy()
    unique = sorted(set(groups))
    if len(unique) < 2:
        raise DataError(f"the grouped protocol needs at least 2 groups; found {len(unique)}")
    k = int(n_folds or 0)
    if k <= 0 or k >= len(unique):
        folds = [(np.flatnonzero(groups != g), np.flatnonzero(groups == g)) for g in unique]
        kind = "leave-one-group-out"
    else:
        y = (clips.target.to_numpy(float) > 0.5).astype(int)
        sgkf = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=int(seed))
        folds = list(sgkf.split(np.zeros(len(clips)), y, groups))
        kind = f"grouped {k}-fold"
    out = []
    for i, (tr, te) in enumerate(folds):
        train, evals = clips.iloc[tr].reset_index(drop=True), clips.iloc[te].reset_index(drop=True)
        held = sorted(set(evals.group))
        note = kind if evals.target.nunique() == 2 else f"{kind}; eval part holds one class only: AUC undefined"
        out.append(Split("grouped", f"group-{i}", train, evals,
                         held_out=",".join(held) if len(held) <= 4 else f"{len(held)} groups", note=note,
                         extra={"groups": held}))
    return out


def group_leak(splits: Sequence[Split]) -> list[str]:
    """Groups found on both sides of some split (empty for a sound grouped protocol)."""
    leaks = []
    for s in splits:
        both = set(s.train.get("group", [])) & set(s.eval.get("group", []))
        leaks += [f"{s.name}: {g}" for g in sorted(both)]
    return leaks
