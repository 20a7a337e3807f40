"""Inference, TTA, ensembles, submission writing and validation, and the test API ``score_video``.

One code path: every score -- validation, ``06_submission``, ``python -m ffdv_utils score`` -- goes through
``predict_clips``, which reads the run's saved parameters and extracts features with exactly the function
training used (``datasets.clip_features``).

A clip that cannot be decoded at all still gets a row: the ``fallback_score`` (0.5 by default: it ranks such
clips in the middle, which costs the least AUC when nothing is known), and it is listed in
``prediction_issues.csv``.
"""

from __future__ import annotations

import hashlib
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
ENSEMBLE_METHODS = ("mean", "rank")


class SubmissionError(ValueError):
    """A prediction file that the competition would reject; the message says which row and why."""


def attached_file(name: str, depth: int = 3) -> Path | None:
    """A file attached to a Kaggle kernel as a dataset, found by name under ``/kaggle/input`` (None elsewhere).

    Searched level by level, at most ``depth`` folders deep, so a dataset's mount point may change without
    breaking the kernel, and 250,000 test clips are never walked file by file.
    """
    base = config.KAGGLE_INPUT
    if not config.is_kaggle() or not base.is_dir():
        return None
    level = [base]
    for d in range(depth + 1):
        nxt: list[Path] = []
        for folder in level:
            if (folder / name).is_file():
                return (folder / name).resolve()
            if d < depth:
                try:
                    nxt.extend(sorted(Path(e.path) for e in os.scandir(folder) if e.is_dir()))
                except OSError:
                    continue
        level = nxt
    return None


def checkpoint_path(run_or_checkpoint: str | os.PathLike) -> Path:
    """``best.pt`` of a run (name or folder) or a checkpoint file as given.

    On Kaggle a checkpoint that is not where it was named is looked up by file name under ``/kaggle/input``
    (``kaggle stage`` ships a run's weights as ``<run>-best.pt`` in the attached dataset).
    """
    text = str(run_or_checkpoint)
    p = Path(text).expanduser()
    if p.suffix == ".pt":
        if p.is_file():
            return p.resolve()
        hit = attached_file(p.name)
        if hit is not None:
            return hit
        raise FileNotFoundError(f"checkpoint {text} not found"
                                + (f" (nor a file of that name under {config.KAGGLE_INPUT})" if config.is_kaggle()
                                   else ""))
    if config.RUN_NAME_RE.match(text) and config.run_dir(text, create=False).is_dir():
        folder = config.run_dir(text, create=False)
    elif p.is_dir():
        folder = p
    elif config.RUN_NAME_RE.match(text):
        folder = config.run_dir(text, create=False)
    else:
        raise FileNotFoundError(f"{text!r} is neither a checkpoint (.pt) file, a run folder nor a run name")
    ckpt = folder / "checkpoints" / "best.pt"
    if ckpt.is_file():
        return ckpt.resolve()
    hit = attached_file(f"{folder.name}-best.pt")
    if hit is not None:
        return hit
    raise FileNotFoundError(f"no checkpoint for {text!r}: {ckpt} does not exist; train the run first"
                            + (f" or attach {folder.name}-best.pt as a dataset" if config.is_kaggle() else ""))


def _load(ckpt: Path, device: str = "auto") -> tuple[torch.nn.Module, dict, dict]:
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    params = {**TRAIN_DEFAULTS, **saved["params"], "pretrained": False}  # weights come from the checkpoint
    model = build_model(params)
    model.load_state_dict(saved["model"])
    model.to(resolve_device(device)).eval()
    meta = {k: saved.get(k) for k in ("epoch", "metrics", "n_params")}
    return model, params, meta


def load_model(run_or_checkpoint: str | os.PathLike, device: str = "auto") -> tuple[torch.nn.Module, dict]:
    """The trained model (eval mode) and the parameters it was trained with (features are made from these)."""
    model, params, _ = _load(checkpoint_path(run_or_checkpoint), device)
    return model, params


def _file_stamp(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


@lru_cache(maxsize=4)
def _cached_model(path: str, stamp: str, device: str) -> tuple[torch.nn.Module, dict]:
    # ``stamp`` (size:mtime) is part of the key so a retrained checkpoint at the same path is loaded again
    return load_model(path, device)


def predict_clips(model: torch.nn.Module, params: Mapping[str, Any], clips: pd.DataFrame, tta: int = 1,
                  batch_size: int = 64, device: str = "auto", progress: bool = True,
                  errors_csv: Path | None = None) -> pd.DataFrame:
    """Scores for ``clips`` (video_name, path): video_name, score, status (ok | no_audio | fallback: <why>).

    Features come from ``datasets.clip_features`` with the run's own parameters: the code path training used.
    """
    dev = resolve_device(device)
    clips = clips.reset_index(drop=True)
    if "exists" not in clips:
        clips = clips.assign(exists=[Path(p).is_file() for p in clips.path])
    status = np.array(["ok"] * len(clips), dtype=object)
    status[~clips.exists.to_numpy(bool)] = "fallback: file not found"
    scores = np.full(len(clips), np.nan)
    present = clips[clips.exists.to_numpy(bool)].reset_index()
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
    """Combine per-run scores (same row order).

    ``mean``: average probability. ``rank``: each run's scores replaced by their ranks (ties averaged), the ranks
    averaged and scaled to [0, 1]; it ignores how each run is calibrated, which is all AUC looks at.
    """
    if method not in ENSEMBLE_METHODS:
        raise ValueError(f"unknown ensemble method {method!r}; use {' or '.join(ENSEMBLE_METHODS)}")
    mat = np.stack([f.score.to_numpy(float) for f in frames])
    if method == "mean":
        return pd.Series(mat.mean(0))
    ranks = np.stack([pd.Series(r).rank(method="average").to_numpy() for r in mat])
    n = mat.shape[1]
    return pd.Series((ranks.mean(0) - 1) / max(1, n - 1))


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pred.to_csv(tmp, index=False, float_format="%.6f")
    try:  # what is on disk, read back, must pass too; a file that does not is never left under the real name
        validate_submission(pd.read_csv(tmp, dtype={"video_name": str}, keep_default_na=False), template)
    except SubmissionError:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return pred


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _source_record(run: str, ckpt: Path, params: Mapping[str, Any], meta: Mapping[str, Any]) -> dict:
    root = config.project_root()
    return {"run": str(run), "checkpoint": str(ckpt.relative_to(root) if ckpt.is_relative_to(root) else ckpt),
            "checkpoint_sha256": _sha256(ckpt), "epoch": meta.get("epoch"), "val_metrics": meta.get("metrics"),
            "n_params": meta.get("n_params"), "model_type": params.get("model_type"), "model": params.get("model"),
            "params_hash": config.params_hash(params), "train_params": dict(params)}


def predict_runs(runs: Iterable[str], clips: pd.DataFrame, tta: int = 1, method: str = "mean",
                 device: str = "auto", progress: bool = True, errors_csv: Path | None = None,
                 fallback_score: float | None = None) -> tuple[pd.DataFrame, list[dict]]:
    """Score ``clips`` with one or several runs and ensemble them; returns scores and what produced them.

    A row is ``fallback`` (and gets ``fallback_score``) only when every run fell back on it; when some did, its
    status says which (``partial: ...``) and the ensemble uses what each run gave.
    """
    runs = [str(r) for r in runs]
    if not runs:
        raise config.ConfigError("no run to predict with: pass run_name or a list of runs")
    if method not in ENSEMBLE_METHODS:
        raise config.ConfigError(f"ensemble must be {' or '.join(ENSEMBLE_METHODS)}, not {method!r}")
    frames, record = [], []
    for run in runs:
        ckpt = checkpoint_path(run)
        model, params, meta = _load(ckpt, device)
        if fallback_score is not None:
            params["fallback_score"] = float(fallback_score)
        frames.append(predict_clips(model, params, clips, tta=tta, device=device, progress=progress,
                                    errors_csv=errors_csv))
        record.append(_source_record(run, ckpt, params, meta))
    out = frames[0][["video_name"]].copy()
    out["score"] = ensemble(frames, method).to_numpy() if len(frames) > 1 else frames[0].score.to_numpy()
    statuses = np.stack([f.status.to_numpy(object) for f in frames])
    fell_back = np.char.startswith(statuses.astype(str), "fallback")
    combined = []
    for j in range(statuses.shape[1]):
        col = [str(s) for s in statuses[:, j]]
        if fell_back[:, j].all():
            combined.append(col[0])
        elif fell_back[:, j].any():
            combined.append("partial: " + "; ".join(f"{r}: {s}" for r, s in zip(runs, col) if s != "ok"))
        else:
            combined.append(next((s for s in col if s != "ok"), "ok"))
    out["status"] = combined
    all_fell = fell_back.all(0)
    if all_fell.any():  # a rank ensemble would turn equal fallback scores into some rank: keep the documented value
        fb = FALLBACK_SCORE if fallback_score is None else float(fallback_score)
        out.loc[all_fell, "score"] = fb
    return out[["video_name", "score", "status"]], record


def score_table(paths: Sequence[str | os.PathLike], run_or_checkpoint: str | os.PathLike, device: str = "auto",
                tta: int = 1, progress: bool = False) -> pd.DataFrame:
    """video_name, path, score, status for many files with one model load (what ``score`` prints)."""
    ckpt = checkpoint_path(run_or_checkpoint)
    model, params = _cached_model(str(ckpt), _file_stamp(ckpt), device)
    clips = pd.DataFrame({"video_name": [Path(p).name for p in paths],
                          "path": [str(Path(p).expanduser().resolve()) for p in paths]})
    # one name per clip within a call (the feature cache is keyed by name); the cache itself notices when a name
    # points at another file than the one its entry was made from, and recomputes
    names = list(clips.video_name)
    clips["video_name"] = [n if names.count(n) == 1 else f"{i}_{n}" for i, n in enumerate(names)]
    scores = predict_clips(model, params, clips, tta=tta, device=device, progress=progress)
    return pd.DataFrame({"video_name": names, "path": clips.path, "score": scores.score.astype(float),
                         "status": scores.status})


def score_video(path: str | os.PathLike, run_or_checkpoint: str | os.PathLike, device: str = "auto") -> float:
    """The test API: probability that the clip at ``path`` is fake. The model is loaded once and kept."""
    return score_videos([path], run_or_checkpoint, device=device)[0]


def score_videos(paths: Sequence[str | os.PathLike], run_or_checkpoint: str | os.PathLike,
                 device: str = "auto", tta: int = 1, progress: bool = False) -> list[float]:
    """Scores for many files with one model load, in the order given (fallback score for unreadable files)."""
    return [float(s) for s in score_table(paths, run_or_checkpoint, device, tta, progress).score]


def write_prediction_record(run: config.Run, scores: pd.DataFrame, sources: list[dict],
                            params: Mapping[str, Any]) -> pd.DataFrame:
    """``prediction_sources.json`` (runs, checkpoints, parameters) and ``prediction_issues.csv`` (fallbacks)."""
    issues = scores[scores.status != "ok"][["video_name", "status", "score"]]
    issues.to_csv(run.path("prediction_issues.csv"), index=False)
    config.write_json(run.path("prediction_sources.json"), {
        "runs": sources, "ensemble": params.get("ensemble"), "tta": params.get("tta"),
        "fallback_score": params.get("fallback_score", FALLBACK_SCORE), "n_rows": int(len(scores)),
        "n_fallback": int(scores.status.str.startswith("fallback").sum()),
        "n_partial": int(scores.status.str.startswith("partial").sum()),
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
