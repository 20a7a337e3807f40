"""Scoring: every score -- validation, ``06_submission``, ``python -m ffdv_utils score`` -- goes through
``predict_clips``, which reads the run's saved parameters, extracts features with the function training used
(``features.clips.clip_features``) and reads them with training's batch reader. Also TTA, ensembles of runs and
the test API (``score_video``: file path in, probability of fake out; ``VideoScorer``: the same as an object that
keeps the model, computes each clip's features in memory and writes nothing).

A clip that cannot be decoded at all still gets a row: the ``fallback_score`` (0.5 by default: it ranks such
clips in the middle, which costs the least AUC when nothing is known), and it is listed in
``prediction_issues.csv``.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..core.config import params_hash
from ..core.device import amp_dtype, resolve_device
from ..core.errors import ConfigError
from ..core.files import file_stamp, sha256_file
from ..core.params import InferenceParams
from ..core.paths import project_root
from ..core.schema import INFERENCE, TRAINING, with_defaults
from ..detector import NETWORK, Detector, load_detector
from ..features.batches import ClipDataset, batch_loader
from ..features.clips import clip_features
from ..features.embeddings import attach_embeddings
from ..features.memory import MemoryFeatures
from ..media.decode import probe_video
from ..models.checkpoint import Checkpoint, checkpoint_path
from ..models.registry import model_inputs
from ..training.evaluate import predict_loader

FALLBACK_SCORE = INFERENCE["fallback_score"]
ENSEMBLE_METHODS = ("mean", "rank")


@lru_cache(maxsize=4)
def _cached_detector(path: str, stamp: str, device: str) -> Detector:
    # ``stamp`` (size:mtime) is part of the key so a retrained checkpoint at the same path is loaded again
    return load_detector(path, device)


def path_problem(path: str | os.PathLike) -> str:
    """Why ``path`` cannot be read as a video file ('' when it is a regular file): never raises."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop"
        if exc.errno == errno.ENOENT:
            return "file not found"
        return f"cannot read ({exc.strerror or exc})"
    except (ValueError, TypeError) as exc:  # a NUL byte in the name, a path that is not text
        return f"unusable path ({exc})"
    if stat.S_ISDIR(st.st_mode):
        return "a directory, not a video file"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    return ""


def predict_clips(model: Detector | torch.nn.Module, params: Mapping[str, Any], clips: pd.DataFrame, tta: int = 1,
                  batch_size: int = 64, device: str = "auto", progress: bool = True,
                  errors_csv: Path | None = None, cached_embeddings: bool = False,
                  source: MemoryFeatures | None = None) -> pd.DataFrame:
    """Scores for ``clips`` (video_name, path): video_name, score, status (ok | no_audio | fallback: <why>), and for a
    detector with parts (a real-only score...) the parts of each joined score, ``model_score`` and
    ``<kind>_score``. A bare network (``nn.Module``) scores alone.

    Features come from ``features.clips.clip_features`` with the run's own parameters, and batches from the
    training loader's batch reader (``features.batches.batch_loader``): the code path training used. Frozen
    backbones run on the clips' features (the test API), or with ``cached_embeddings`` their outputs come from the
    embedding cache as in training (``features.embeddings``; computed once per clip, then shared by every run with
    the same backbone weights: what a comparison scoring many runs on one split wants).

    With ``source`` (a ``features.memory.MemoryFeatures``: the test API, ``VideoScorer``) the network's and the
    parts' features are computed in memory by the same functions and nothing is read from or written to the cache;
    the scores are the cached path's.
    """
    p = with_defaults(params, INFERENCE, TRAINING)
    detector = model if isinstance(model, Detector) else Detector(model, dict(p))
    network = detector.network
    dev = resolve_device(device)
    clips = clips.reset_index(drop=True)
    if "exists" not in clips:
        clips = clips.assign(exists=[Path(x).is_file() for x in clips.path])
    status = np.array(["ok"] * len(clips), dtype=object)
    for i in np.flatnonzero(~clips.exists.to_numpy(bool)):
        status[i] = f"fallback: {path_problem(clips.path[i]) or 'file not found'}"
    scores = np.full(len(clips), np.nan)
    parts: dict[str, np.ndarray] = {}  # with joined scores: the network's and each part's
    present = clips[clips.exists.to_numpy(bool)].reset_index()
    if len(present):
        feats = clip_features(p, present, model_inputs(network), progress=progress, errors_csv=errors_csv,
                              source=source)
        ds = ClipDataset(present.video_name, np.zeros(len(present)), mels=feats.get("mels"),
                         has_audio=feats.get("has_audio"), faces=feats.get("faces"))
        if cached_embeddings:
            attach_embeddings(network, p, [ds], dev, progress=progress)
        loader = batch_loader(ds, batch_size)
        idx, s = predict_loader(network, loader, dev, amp_dtype(p["amp"], dev), tta=tta, progress=progress)
        rows = present["index"].to_numpy()
        if detector.parts:  # the run's joined score, as in its validation (``Detector.join``)
            found = {k: v[idx] for k, v in detector.part_scores(present, p, source=source).items()}
            parts = {f"{k}_score": np.full(len(clips), np.nan) for k in (NETWORK, *found)}
            parts[f"{NETWORK}_score"][rows[idx]] = s
            for k, v in found.items():
                parts[f"{k}_score"][rows[idx]] = v
            s = detector.join(s, found)
        scores[rows[idx]] = s
        for i, name in enumerate(present.video_name):
            if name in feats["errors"]:  # every needed modality failed to decode: no evidence, the fallback
                scores[rows[i]], status[rows[i]] = np.nan, f"fallback: {feats['errors'][name]}"
            elif "has_audio" in feats and not feats["has_audio"][i] and status[rows[i]] == "ok":
                status[rows[i]] = "no_audio"
    bad_score = ~np.isfinite(scores)
    status[bad_score & (status == "ok")] = "fallback: non-finite score"
    scores[bad_score] = InferenceParams.of(p).fallback_score
    return pd.DataFrame({"video_name": clips.video_name, "score": scores, "status": status, **parts})


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


def source_record(run: str, ckpt: Path, params: Mapping[str, Any], saved: Checkpoint) -> dict:
    """What produced a run's scores in a prediction: checkpoint file and sha256, epoch, validation metrics..."""
    root = project_root()
    return {"run": str(run), "checkpoint": str(ckpt.relative_to(root) if ckpt.is_relative_to(root) else ckpt),
            "checkpoint_sha256": sha256_file(ckpt), "epoch": saved.epoch, "val_metrics": dict(saved.metrics),
            "n_params": saved.n_params, "model_type": params.get("model_type"), "model": params.get("model"),
            "params_hash": params_hash(params), "train_params": dict(params)}


def predict_runs(runs: Iterable[str], clips: pd.DataFrame, tta: int = 1, method: str = "mean",
                 device: str = "auto", progress: bool = True, errors_csv: Path | None = None,
                 fallback_score: float | None = None) -> tuple[pd.DataFrame, list[dict]]:
    """Score ``clips`` with one or several runs and ensemble them; returns scores and what produced them.

    A row is ``fallback`` (and gets ``fallback_score``) only when every run fell back on it; when some did, its
    status says which (``partial: ...``) and the ensemble uses what each run gave.
    """
    runs = [str(r) for r in runs]
    if not runs:
        raise ConfigError("no run to predict with: pass run_name or a list of runs")
    if method not in ENSEMBLE_METHODS:
        raise ConfigError(f"ensemble must be {' or '.join(ENSEMBLE_METHODS)}, not {method!r}")
    frames, record = [], []
    for run in runs:
        ckpt = checkpoint_path(run)
        detector = Detector.load(ckpt, device)
        params = dict(detector.params)
        if fallback_score is not None:
            params["fallback_score"] = float(fallback_score)
        frames.append(predict_clips(detector, params, clips, tta=tta, device=device, progress=progress,
                                    errors_csv=errors_csv))
        record.append(source_record(run, ckpt, params, detector.checkpoint))
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
    out["status"] = with_video_status(combined, clips.path) if "path" in clips else combined
    all_fell = fell_back.all(0)
    if all_fell.any():  # a rank ensemble would turn equal fallback scores into some rank: keep the documented value
        fb = FALLBACK_SCORE if fallback_score is None else float(fallback_score)
        out.loc[all_fell, "score"] = fb
    return out[["video_name", "score", "status"]], record


MEMORY_BATCH = 8  # score_table computes the features of at most this many files in memory (see its docstring)


def clip_rows(paths: Sequence[str | os.PathLike]) -> tuple[pd.DataFrame, list[str]]:
    """The clips table scoring needs for ``paths`` (video_name made unique within the call, real path, exists) and
    the file names as given. Linear in the number of paths; never raises on a bad path."""
    # realpath, not Path.resolve: a symlink loop among the paths must give that path a row, not end the batch
    names = [Path(p).name for p in paths]
    clips = pd.DataFrame({"video_name": names,
                          "path": [os.path.realpath(os.path.expanduser(os.fspath(p))) for p in paths]})
    clips["exists"] = [not path_problem(p) for p in clips.path]
    # one name per clip within a call (the feature cache is keyed by name); the cache itself notices when a name
    # points at another file than the one its entry was made from, and recomputes
    counts = Counter(names)  # one pass: a count per name inside the comprehension would be quadratic
    clips["video_name"] = [n if counts[n] == 1 else f"{i}_{n}" for i, n in enumerate(names)]
    return clips, names


def scored_table(detector: Detector, paths: Sequence[str | os.PathLike], device: str = "auto", tta: int = 1,
                 progress: bool = False, in_memory: bool = True, chunk: int = 64) -> pd.DataFrame:
    """video_name, path, score, status of ``paths`` scored by ``detector``, through ``predict_clips``.

    ``in_memory``: each chunk of ``chunk`` files gets its own ``MemoryFeatures`` (features computed in this
    process, held for that chunk only, nothing read from or written to the cache). Otherwise the features come
    from the cache, extracted by the parallel workers where missing.
    """
    clips, names = clip_rows(paths)
    if in_memory:
        parts = [predict_clips(detector, detector.params, clips.iloc[s:s + chunk], tta=tta, device=device,
                               progress=False, source=MemoryFeatures()) for s in range(0, max(1, len(clips)), chunk)]
        scores = pd.concat(parts, ignore_index=True)
    else:
        scores = predict_clips(detector, detector.params, clips, tta=tta, device=device, progress=progress)
    status = with_video_status(scores.status, clips.path)
    return pd.DataFrame({"video_name": names, "path": clips.path, "score": scores.score.astype(float),
                         "status": status})


def score_table(paths: Sequence[str | os.PathLike], run_or_checkpoint: str | os.PathLike, device: str = "auto",
                tta: int = 1, progress: bool = False, in_memory: bool | None = None) -> pd.DataFrame:
    """video_name, path, score, status for many files with one model load (what ``score`` prints).

    ``in_memory`` None: up to ``MEMORY_BATCH`` files are scored like the test API (features computed in this
    process, nothing written: a few files are not worth starting the extraction workers for, and a call then costs
    the same whatever the cache holds); more go through the feature cache, extracted by the parallel workers
    (resumable, and a later call or 06 on the same files reads them back). True / False force either.
    """
    ckpt = checkpoint_path(run_or_checkpoint)
    detector = _cached_detector(str(ckpt), file_stamp(ckpt), device)
    memory = len(paths) <= MEMORY_BATCH if in_memory is None else bool(in_memory)
    return scored_table(detector, paths, device, tta, progress, in_memory=memory)


def with_video_status(status: Sequence[str], paths: Sequence[str]) -> np.ndarray:
    """``status`` with ``no_video`` added where a scored file holds no video stream (a sound file named .mp4 is scored
    on what it has, and said so); one header probe per scored file."""
    out = np.asarray(list(status), dtype=object).copy()
    paths = list(paths)
    for i in np.flatnonzero(np.isin(out.astype(str), ("ok", "no_audio"))):
        if not has_video_stream(paths[i]):
            out[i] = "no_video" if out[i] == "ok" else "no_audio, no_video"
    return out


def has_video_stream(path: str | os.PathLike) -> bool:
    """Does the container hold a video stream? (read from its header; True when it cannot be read: the decoders
    have reported on it already)"""
    info = probe_video(path)
    return bool(info["error"]) or bool(info["video_codec"] or info["width"])


class VideoScorer:
    """The test API as an object: a run's detector (network, real-only and profile parts, parameters) loaded once
    and kept; each call scores files through ``predict_clips`` -- the batch reader, network and parts of every
    other score -- with features computed in memory by the functions extraction uses (``features.memory``).

    A call reads and writes nothing in the feature cache (no manifest, no entry, no packed stack): its cost is the
    clip's decode and the model, whatever the cache holds and however many calls came before. Unreadable files get
    the fallback score; ``table`` says why (``fallback: ...``, ``no_audio``, ``no_video``), as ``score`` does.

    Example:
        >>> scorer = VideoScorer("my_run", device="cpu")
        >>> scorer("clip.mp4")  # probability that the clip is fake
        0.83
        >>> scorer.score_many(["a.mp4", "b.mp4"])
        [0.12, 0.97]

    Args:
        run_or_checkpoint: A run name, a run folder or a checkpoint ``.pt`` file.
        device: Where the network runs ("auto", "cpu", "cuda").
        tta: Test-time passes (1: none; see ``training.evaluate.predict_loader``).
        detector: An already loaded detector of that checkpoint (skips loading it again).
    """

    chunk = 64  # files whose features are held at once by ``score_many`` and ``table``

    def __init__(self, run_or_checkpoint: str | os.PathLike, device: str = "auto", tta: int = 1,
                 detector: Detector | None = None):
        self.checkpoint = checkpoint_path(run_or_checkpoint)
        self.detector = detector if detector is not None else load_detector(self.checkpoint, device)
        self.device, self.tta = device, int(tta)

    def __call__(self, path: str | os.PathLike) -> float:
        return self.score(path)

    def score(self, path: str | os.PathLike) -> float:
        """Probability that the clip at ``path`` is fake (the fallback score when it cannot be read)."""
        return float(self.table([path]).score.iloc[0])

    def score_many(self, paths: Sequence[str | os.PathLike]) -> list[float]:
        """Scores of ``paths`` in their order."""
        return [float(s) for s in self.table(paths).score]

    def table(self, paths: Sequence[str | os.PathLike], tta: int | None = None) -> pd.DataFrame:
        """video_name, path, score, status of ``paths`` (as ``score_table``), ``chunk`` files at a time."""
        return scored_table(self.detector, list(paths), self.device, self.tta if tta is None else int(tta),
                            in_memory=True, chunk=self.chunk)


@lru_cache(maxsize=4)
def _cached_scorer(path: str, stamp: str, device: str) -> VideoScorer:
    return VideoScorer(path, device, detector=_cached_detector(path, stamp, device))


def video_scorer(run_or_checkpoint: str | os.PathLike, device: str = "auto") -> VideoScorer:
    """The kept ``VideoScorer`` of a checkpoint: made on first use, made again when the file changes (size or
    modification time), so a retrained run is never scored with its old weights."""
    ckpt = checkpoint_path(run_or_checkpoint)
    return _cached_scorer(str(ckpt), file_stamp(ckpt), device)


def score_video(path: str | os.PathLike, run_or_checkpoint: str | os.PathLike, device: str = "auto") -> float:
    """The test API: probability that the clip at ``path`` is fake. The model and its parts are loaded once and
    kept (``video_scorer``); the clip's features are computed in memory and nothing is written (``VideoScorer``)."""
    return video_scorer(run_or_checkpoint, device).score(path)


def score_videos(paths: Sequence[str | os.PathLike], run_or_checkpoint: str | os.PathLike,
                 device: str = "auto", tta: int = 1, progress: bool = False) -> list[float]:
    """Scores for many files with one model load, in the order given (fallback score for unreadable files); the
    test API's list form: features in memory, 64 files at a time, nothing written (``VideoScorer``)."""
    return [float(s) for s in video_scorer(run_or_checkpoint, device).table(paths, tta=tta).score]
