"""``prediction.csv``: written in template order and validated before and after it is written (header
``video_name,score``, every template row once, finite scores in [0, 1]); the record of what produced it; and its
metrics against answers when the sample data provides them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..core import metrics
from ..core.files import atomic_path, read_json, write_json
from ..core.paths import resolve_path
from ..core.runs import Run, environment_info
from ..core.schema import INFERENCE, with_defaults
from ..data.labels import canonical_name, read_labels

SUBMISSION_COLUMNS = ("video_name", "score")


class SubmissionError(ValueError):
    """A prediction file that the competition would reject; the message says which row and why."""


def validate_submission(pred: pd.DataFrame, template: pd.DataFrame | Sequence[str]) -> None:
    """Raise SubmissionError unless ``pred`` has header video_name,score, every template row exactly once and in
    order, and finite scores in [0, 1]."""
    names = list(template.template_name if isinstance(template, pd.DataFrame) and "template_name" in template
                 else template.video_name if isinstance(template, pd.DataFrame) else template)
    if tuple(pred.columns) != SUBMISSION_COLUMNS:
        raise SubmissionError(f"columns must be {','.join(SUBMISSION_COLUMNS)}, "
                              f"found {','.join(map(str, pred.columns))}")
    got = pred.video_name.astype(str).tolist()
    dup = pred.video_name[pred.video_name.duplicated()].tolist()
    if dup:
        raise SubmissionError(f"duplicate rows: {', '.join(map(str, dup[:5]))}")
    got_set, name_set = set(got), set(names)
    missing = [n for n in names if n not in got_set]
    if missing:
        raise SubmissionError(f"{len(missing)} template row(s) missing, first: {', '.join(missing[:5])}")
    extra = [n for n in got if n not in name_set]
    if extra:
        raise SubmissionError(f"{len(extra)} row(s) not in the template, first: {', '.join(extra[:5])}")
    for i, (a, b) in enumerate(zip(got, names)):
        if a != b:
            raise SubmissionError(f"row {i + 2} is {a!r} but the template has {b!r} there (order must match)")
    s = pd.to_numeric(pred.score, errors="coerce").to_numpy(float)
    bad = np.flatnonzero(~np.isfinite(s) | (s < 0) | (s > 1))
    if len(bad):
        i = int(bad[0])
        raise SubmissionError(f"row {i + 2} ({got[i]}): score {pred.score.iloc[i]!r} is not a finite number in [0, 1]")


def write_submission(template: pd.DataFrame, scores: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Write ``prediction.csv`` (video_name,score) in template order, validated before it is written."""
    by_name = dict(zip(scores.video_name, scores.score))
    missing = [n for n in template.video_name if n not in by_name]
    if missing:
        raise SubmissionError(f"no score for {len(missing)} template row(s), first: {', '.join(missing[:5])}")
    names = template.template_name if "template_name" in template else template.video_name
    pred = pd.DataFrame({"video_name": list(names), "score": [float(by_name[n]) for n in template.video_name]})
    validate_submission(pred, template)
    with atomic_path(path) as tmp:
        pred.to_csv(tmp, index=False, float_format="%.6f")
        # what is on disk, read back, must pass too; a file that does not is never left under the real name
        validate_submission(pd.read_csv(tmp, dtype={"video_name": str}, keep_default_na=False), template)
    return pred


def write_prediction_record(run: Run, scores: pd.DataFrame, sources: list[dict],
                            params: Mapping[str, Any]) -> pd.DataFrame:
    """``prediction_sources.json`` (runs, checkpoints, parameters) and ``prediction_issues.csv`` (fallbacks)."""
    issues = scores[scores.status != "ok"][["video_name", "status", "score"]]
    issues.to_csv(run.path("prediction_issues.csv"), index=False)
    write_json(run.path("prediction_sources.json"), {
        "runs": sources, "ensemble": params.get("ensemble"), "tta": params.get("tta"),
        "fallback_score": with_defaults(params, INFERENCE)["fallback_score"], "n_rows": int(len(scores)),
        "n_fallback": int(scores.status.str.startswith("fallback").sum()),
        "n_partial": int(scores.status.str.startswith("partial").sum()),
        "n_no_audio": int((scores.status == "no_audio").sum()), "params": dict(params),
        "environment": environment_info()})
    return issues


def evaluate_prediction(run: Run, pred: pd.DataFrame, labels_path: str | os.PathLike,
                        kinds_path: str | os.PathLike | None = None) -> dict:
    """Metrics of a prediction against answers (overall and per manipulation kind), added to metrics.json."""
    truth = read_labels(resolve_path(labels_path))
    df = pred.assign(key=[canonical_name(n) for n in pred.video_name]).merge(
        truth.rename(columns={"video_name": "key"}), on="key", how="inner")
    overall = metrics.summarize(df.target, df.score)
    table = [{"subset": "all", **overall}]
    if kinds_path:
        kinds = pd.read_csv(resolve_path(kinds_path), dtype={"video_name": str})
        df = df.merge(kinds[["video_name", "kind"]].rename(columns={"video_name": "key"}), on="key", how="left")
        by_kind = metrics.per_kind(df.target, df.score, df.kind, metric=metrics.summarize)
        table += [{"subset": f"real vs {kind}", **m} for kind, m in by_kind.items()]
    existing = read_json(run.path("metrics.json")) if run.path("metrics.json").is_file() else {}
    extra = {f"test_{k}": v for k, v in overall.items()}
    for row in table[1:]:
        extra[f"test_auc[{row['subset'].replace('real vs ', '')}]"] = row["auc"]
    write_json(run.path("metrics.json"), {**existing, **extra})
    pd.DataFrame(table).to_csv(run.path("test_metrics.csv"), index=False)
    return {"y": df.target.to_numpy(), "score": df.score.to_numpy(), "table": table}
