"""Sharded scoring: each process or machine scores part K of N of the template's clips into a part file, and
``merge_parts`` checks that the parts cover the template exactly once and writes ``prediction.csv`` in its order
(``python -m ffdv_utils submission score --shard K/N`` then ``submission merge``).

A clip's part is the one its extraction shard has (``core.shards``, by the clip's name), so a machine that extracted
shard K of the test clips scores shard K from its own cache. Scores are notebook 06's (``inference.score.
predict_runs``): a clip's score does not depend on the other clips scored with it, so the merged file equals the
unsharded one -- except for a ``rank`` ensemble, whose ranks are taken over all rows at once: it is refused with a
shard.

A part file is a CSV with columns ``video_name, score, status, shard`` (``shard``: ``K/N``); the output of
``python -m ffdv_utils score`` (``video_name,score``) is read as a part too, without the shard column.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from ..core.errors import ConfigError
from ..core.files import atomic_path
from ..core.shards import Shard, shard_of
from .score import predict_runs
from .submission import SubmissionError, write_submission

PART_COLUMNS = ("video_name", "score", "status", "shard")


def part_name(shard: Shard) -> str:
    """``prediction.part-K-of-N.csv``."""
    return f"prediction.part-{shard.tag}.csv"


def score_part(runs: Sequence[str], clips: pd.DataFrame, shard: Shard | str, path: str | os.PathLike, tta: int = 1,
               method: str = "mean", device: str = "auto", progress: bool = True,
               fallback_score: float | None = None) -> tuple[pd.DataFrame, list[dict]]:
    """Score the rows of ``clips`` (``data.list_test``'s table) that belong to ``shard`` with notebook 06's
    ``predict_runs`` and write them to the part file ``path``; returns the part and what produced it."""
    shard = Shard.parse(shard)
    if shard is None:
        raise ConfigError("score_part needs a shard (K/N)")
    if method == "rank" and shard.count > 1:
        raise ConfigError("a rank ensemble ranks all rows together, so its scores depend on which clips are scored "
                          "with them: score the shards with ensemble mean, or unsharded")
    mine = clips[shard.mask(clips.video_name)].reset_index(drop=True)
    if len(mine):
        scores, sources = predict_runs(runs, mine, tta=tta, method=method, device=device, progress=progress,
                                       fallback_score=fallback_score)
    else:  # a part may be empty (more shards than clips): it still says that it was scored
        scores, sources = pd.DataFrame({"video_name": [], "score": [], "status": []}), []
    part = scores.assign(shard=shard.label)[list(PART_COLUMNS)]
    with atomic_path(Path(path), ".tmp.csv") as tmp:
        part.to_csv(tmp, index=False, float_format="%.17g")  # exact: merged equals unsharded
    return part, sources


def read_part(path: str | os.PathLike) -> pd.DataFrame:
    """A part file (or ``score``'s output) as video_name, score, status, shard, part (the file); errors name it."""
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={"video_name": str, "status": str, "shard": str}, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SubmissionError(f"{path}: not a readable part file ({exc})") from None
    missing = {"video_name", "score"} - set(df.columns)
    if missing:
        raise SubmissionError(f"{path}: no column {', '.join(sorted(missing))} (a part has video_name,score[,status,"
                              "shard])")
    for col, default in (("status", "ok"), ("shard", "")):
        if col not in df:
            df[col] = default
    labels = sorted(set(df.shard) - {""})
    if len(labels) > 1:
        raise SubmissionError(f"{path}: rows of several shards ({', '.join(labels)}); a part holds one")
    if labels:
        shard = Shard.parse(labels[0])
        stray = [n for n in df.video_name if not shard.holds(n)]
        if stray:
            raise SubmissionError(f"{path}: {len(stray)} row(s) do not belong to shard {shard.label}, first: "
                                  f"{', '.join(stray[:5])}")
    dup = df.video_name[df.video_name.duplicated()].tolist()
    if dup:
        raise SubmissionError(f"{path}: {', '.join(dup[:5])} listed twice")
    return df[list(PART_COLUMNS)].assign(part=str(path))


def merge_parts(paths: Iterable[str | os.PathLike], template: pd.DataFrame, out: str | os.PathLike) -> pd.DataFrame:
    """``prediction.csv`` at ``out`` from part files, in the template's order, validated like notebook 06's.

    Refused (SubmissionError naming the file or the shard) when two files are the same shard or score the same
    clip, when a row is not in the template, or when template rows are missing: a shard with no part file is named
    (``part 3/4 missing``), as is a part that lacks some of its rows.
    """
    parts = [read_part(p) for p in paths]
    if not parts:
        raise SubmissionError("no part file to merge")
    by_label: dict[str, str] = {}
    counts = {Shard.parse(p.shard.iloc[0]).count for p in parts if len(p) and p.shard.iloc[0]}
    for p in parts:
        label = p.shard.iloc[0] if len(p) else ""
        if label and label in by_label:
            raise SubmissionError(f"{p.part.iloc[0]} and {by_label[label]} are both part {label}")
        if label:
            by_label[label] = p.part.iloc[0]
    if len(counts) > 1:
        raise SubmissionError(f"the parts split the clips in different numbers of shards ({sorted(counts)}): "
                              "their rows would overlap; merge parts of one K/N split")
    rows = pd.concat(parts, ignore_index=True)
    twice = rows[rows.video_name.duplicated(keep=False)]
    if len(twice):
        name = twice.video_name.iloc[0]
        files = twice[twice.video_name == name].part.tolist()
        raise SubmissionError(f"{len(twice.video_name.unique())} clip(s) scored in more than one part, first "
                              f"{name} in {' and '.join(files)}")
    names = list(template.video_name)
    wanted = set(names)
    extra = rows[~rows.video_name.isin(wanted)]
    if len(extra):
        raise SubmissionError(f"{extra.part.iloc[0]}: {len(extra)} row(s) not in the template, first: "
                              f"{', '.join(extra.video_name.head(5))}")
    have = set(rows.video_name)
    missing = [n for n in names if n not in have]
    if missing:
        raise SubmissionError(_missing_message(missing, by_label, counts))
    return write_submission(template, rows[["video_name", "score"]], Path(out))


def _missing_message(missing: list[str], by_label: dict[str, str], counts: set[int]) -> str:
    if len(counts) == 1:
        n = counts.pop()
        lost: dict[str, list[str]] = {}
        for name in missing:
            lost.setdefault(f"{shard_of(name, n)}/{n}", []).append(name)
        absent = [label for label in lost if label not in by_label]
        if absent:
            label = sorted(absent, key=lambda s: int(s.split("/")[0]))[0]
            return (f"part {label} missing: no part file holds its {len(lost[label])} template row(s) (first: "
                    f"{', '.join(lost[label][:3])}); parts given: {', '.join(sorted(by_label)) or 'none'}")
        label = next(iter(lost))
        return (f"{by_label[label]} (part {label}) lacks {len(lost[label])} of its template row(s), first: "
                f"{', '.join(lost[label][:5])}")
    return f"{len(missing)} template row(s) in no part, first: {', '.join(missing[:5])}"
