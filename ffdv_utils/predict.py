"""Inference, TTA, ensembles, submission writing and validation, and the test API ``score_video``.

One code path: every score -- validation, ``06_submission``, ``python -m ffdv_utils score`` -- goes through
``predict_clips``, which reads the run's saved parameters and extracts features with exactly the function
training used (``datasets.clip_features``).

A clip that cannot be decoded at all still gets a row: the ``fallback_score`` (0.5 by default: it ranks such
clips in the middle, which costs the least AUC when nothing is known), and it is listed in
``prediction_issues.csv``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from . import config
from .datasets import ClipDataset, clip_features
from .models import build_model, model_inputs
from .train import TRAIN_DEFAULTS, amp_dtype, predict_loader, resolve_device

FALLBACK_SCORE = 0.5
SUBMISSION_COLUMNS = ("video_name", "score")


class SubmissionError(ValueError):
    """A prediction file that the competition would reject; the message says which row and why."""


def checkpoint_path(run_or_checkpoint: str | os.PathLike) -> Path:
    """``best.pt`` of a run (name or folder) or a checkpoint file as given."""
    p = Path(run_or_checkpoint)
    if p.suffix == ".pt" and p.is_file():
        return p.resolve()
    folder = p if p.is_dir() else config.run_dir(str(run_or_checkpoint), create=False)
    ckpt = folder / "checkpoints" / "best.pt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"no checkpoint for {run_or_checkpoint!r}: {ckpt} does not exist; train the run first")
    return ckpt


def load_model(run_or_checkpoint: str | os.PathLike, device: str = "auto") -> tuple[torch.nn.Module, dict]:
    """The trained model (eval mode) and the parameters it was trained with."""
    ckpt = torch.load(checkpoint_path(run_or_checkpoint), map_location="cpu", weights_only=False)
    params = {**TRAIN_DEFAULTS, **ckpt["params"], "pretrained": False}  # weights come from the checkpoint
    model = build_model(params)
    model.load_state_dict(ckpt["model"])
    model.to(resolve_device(device)).eval()
    return model, params


@lru_cache(maxsize=4)
def _cached_model(path: str, device: str) -> tuple[torch.nn.Module, dict]:
    return load_model(path, device)


def predict_clips(model: torch.nn.Module, params: Mapping[str, Any], clips: pd.DataFrame, tta: int = 1,
                  batch_size: int = 64, device: str = "auto", progress: bool = True,
                  errors_csv: Path | None = None) -> pd.DataFrame:
    """Scores for ``clips`` (video_name, path): video_name, score, status (ok | no_audio | fallback: <why>)."""
    dev = resolve_device(device)
    clips = clips.reset_index(drop=True)
    if "exists" not in clips:
        clips = clips.assign(exists=[Path(p).is_file() for p in clips.path])
    status = np.array(["ok"] * len(clips), dtype=object)
    status[~clips.exists.to_numpy(bool)] = "fallback: file not found"
    scores = np.full(len(clips), np.nan)
    present = clips[clips.exists].reset_index()
    if len(present):
        inputs = model_inputs(model)
        feats = clip_features(params, present, inputs, progress=progress, errors_csv=errors_csv)
        ds = ClipDataset(present.video_name, np.zeros(len(present)), mels=feats.get("mels"),
                         has_audio=feats.get("has_audio"), faces=feats.get("faces"))
        loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)
        idx, s = predict_loader(model, loader, dev, amp_dtype(params.get("amp", "auto"), dev),
                                tta=tta, progress=progress)
        scores[present["index"].to_numpy()[idx]] = s
        bad = _undecodable(params, present, inputs)
        for i, why in bad.items():
            row = int(present["index"].iloc[i])
            scores[row], status[row] = np.nan, f"fallback: {why}"
        if "has_audio" in feats:
            no_audio = ~feats["has_audio"]
            for i in np.flatnonzero(no_audio):
                row = int(present["index"].iloc[i])
                if status[row] == "ok":
                    status[row] = "no_audio"
    bad_score = ~np.isfinite(scores)
    status[bad_score & (status == "ok")] = "fallback: non-finite score"
    scores[bad_score] = float(params.get("fallback_score", FALLBACK_SCORE))
    return pd.DataFrame({"video_name": clips.video_name, "score": scores, "status": status})


def _undecodable(params: Mapping[str, Any], clips: pd.DataFrame, inputs: Sequence[str]) -> dict[int, str]:
    """Rows whose every needed modality failed to decode (these get the fallback score)."""
    from . import features

    fails: dict[int, list[str]] = {}
    checks = []
    if "mel" in inputs:
        checks.append(features.extract_mels(clips[["video_name", "path"]], features.mel_params(params),
                                            config.cache_dir(), progress=False))
    if "faces" in inputs:
        checks.append(features.extract_faces(clips[["video_name", "path"]], features.face_params(params),
                                             config.cache_dir(), progress=False))
    for store in checks:
        table = store.table.set_index("video_name")
        for i, name in enumerate(clips.video_name):
            if name in table.index and str(table.loc[name, "status"]) == "error":
                fails.setdefault(i, []).append(str(table.loc[name, "error"])[:200])
    return {i: "; ".join(msgs) for i, msgs in fails.items() if len(msgs) == len(checks)}


def ensemble(frames: Sequence[pd.DataFrame], method: str = "mean") -> pd.Series:
    """Combine per-run scores (same row order): ``mean`` of probabilities or ``rank`` average (scaled to [0, 1])."""
    mat = np.stack([f.score.to_numpy(float) for f in frames])
    if method == "mean":
        return pd.Series(mat.mean(0))
    if method == "rank":
        ranks = np.stack([pd.Series(r).rank(method="average").to_numpy() for r in mat])
        n = mat.shape[1]
        return pd.Series((ranks.mean(0) - 1) / max(1, n - 1))
    raise ValueError(f"unknown ensemble method {method!r}; use mean or rank")


def validate_submission(pred: pd.DataFrame, template: pd.DataFrame | Sequence[str]) -> None:
    """Raise SubmissionError unless ``pred`` has header video_name,score, every template row exactly once and in
    order, and finite scores in [0, 1]."""
    names = list(template.template_name if isinstance(template, pd.DataFrame) and "template_name" in template
                 else template.video_name if isinstance(template, pd.DataFrame) else template)
    if tuple(pred.columns) != SUBMISSION_COLUMNS:
        raise SubmissionError(f"columns must be {','.join(SUBMISSION_COLUMNS)}, found {','.join(map(str, pred.columns))}")
    if len(pred) != len(names):
        raise SubmissionError(f"{len(pred)} rows but the template has {len(names)}")
    got = pred.video_name.astype(str).tolist()
    dup = pred.video_name[pred.video_name.duplicated()].tolist()
    if dup:
        raise SubmissionError(f"duplicate rows: {', '.join(map(str, dup[:5]))}")
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pred.to_csv(tmp, index=False, float_format="%.6f")
    os.replace(tmp, path)
    validate_submission(pd.read_csv(path, dtype={"video_name": str}), template)  # what is on disk, read back
    return pred


def predict_runs(runs: Iterable[str], clips: pd.DataFrame, tta: int = 1, method: str = "mean",
                 device: str = "auto", progress: bool = True, errors_csv: Path | None = None
                 ) -> tuple[pd.DataFrame, list[dict]]:
    """Score ``clips`` with one or several runs and ensemble them; returns scores and what produced them."""
    frames, record = [], []
    for run in runs:
        ckpt = checkpoint_path(run)
        model, params = load_model(ckpt, device)
        frames.append(predict_clips(model, params, clips, tta=tta, device=device, progress=progress,
                                    errors_csv=errors_csv))
        saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        record.append({"run": str(run), "checkpoint": str(ckpt.relative_to(config.project_root())
                                                          if ckpt.is_relative_to(config.project_root()) else ckpt),
                       "epoch": saved.get("epoch"), "val_metrics": saved.get("metrics"),
                       "params_hash": config.params_hash(params)})
    out = frames[0][["video_name", "status"]].copy()
    out["score"] = ensemble(frames, method).to_numpy() if len(frames) > 1 else frames[0].score.to_numpy()
    return out[["video_name", "score", "status"]], record


def score_video(path: str | os.PathLike, run_or_checkpoint: str | os.PathLike, device: str = "auto") -> float:
    """The test API: probability that the clip at ``path`` is fake. The model is loaded once and kept."""
    return score_videos([path], run_or_checkpoint, device=device)[0]


def score_videos(paths: Sequence[str | os.PathLike], run_or_checkpoint: str | os.PathLike,
                 device: str = "auto", tta: int = 1, progress: bool = False) -> list[float]:
    """Scores for many files with one model load (what ``python -m ffdv_utils score`` uses)."""
    model, params = _cached_model(str(checkpoint_path(run_or_checkpoint)), device)
    clips = pd.DataFrame({"video_name": [Path(p).name for p in paths], "path": [str(Path(p).resolve()) for p in paths]})
    # the cache is keyed by name; two files with one name in different folders must not collide
    clips["video_name"] = [f"{n}" if list(clips.video_name).count(n) == 1 else f"{i}_{n}"
                           for i, n in enumerate(clips.video_name)]
    scores = predict_clips(model, params, clips, tta=tta, device=device, progress=progress)
    return [float(s) for s in scores.score]


def write_prediction_record(run: config.Run, scores: pd.DataFrame, sources: list[dict],
                            params: Mapping[str, Any]) -> pd.DataFrame:
    """``prediction_sources.json`` (runs, checkpoints, parameters) and ``prediction_issues.csv`` (fallbacks)."""
    issues = scores[scores.status != "ok"][["video_name", "status", "score"]]
    issues.to_csv(run.path("prediction_issues.csv"), index=False)
    config.write_json(run.path("prediction_sources.json"), {
        "runs": sources, "ensemble": params.get("ensemble"), "tta": params.get("tta"),
        "fallback_score": params.get("fallback_score", FALLBACK_SCORE), "n_rows": int(len(scores)),
        "n_fallback": int(scores.status.str.startswith("fallback").sum()),
        "n_no_audio": int((scores.status == "no_audio").sum()), "params": dict(params),
        "environment": config.environment_info()})
    return issues


def evaluate_prediction(run: config.Run, pred: pd.DataFrame, labels_path: str | os.PathLike,
                        kinds_path: str | os.PathLike | None = None) -> dict:
    """Metrics of a prediction against answers (overall and per manipulation kind), added to metrics.json."""
    from . import metrics
    from .data import canonical_name, read_labels

    truth = read_labels(config.resolve_path(labels_path))
    df = pred.assign(key=[canonical_name(n) for n in pred.video_name]).merge(
        truth.rename(columns={"video_name": "key"}), on="key", how="inner")
    overall = metrics.summarize(df.target, df.score)
    table = [{"subset": "all", **overall}]
    if kinds_path:
        kinds = pd.read_csv(config.resolve_path(kinds_path), dtype={"video_name": str})
        df = df.merge(kinds[["video_name", "kind"]].rename(columns={"video_name": "key"}), on="key", how="left")
        real = df[df.target == 0]
        for kind in sorted(k for k in df.kind.dropna().unique() if k != "real"):
            part = pd.concat([real, df[df.kind == kind]])
            table.append({"subset": f"real vs {kind}", **metrics.summarize(part.target, part.score)})
    existing = config.read_json(run.path("metrics.json")) if run.path("metrics.json").is_file() else {}
    extra = {f"test_{k}": v for k, v in overall.items()}
    for row in table[1:]:
        extra[f"test_auc[{row['subset'].replace('real vs ', '')}]"] = row["auc"]
    config.write_json(run.path("metrics.json"), {**existing, **extra})
    pd.DataFrame(table).to_csv(run.path("test_metrics.csv"), index=False)
    return {"y": df.target.to_numpy(), "score": df.score.to_numpy(), "table": table}
