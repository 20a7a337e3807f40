"""Evaluation protocols: which clips train a model and which clips test it.

A plain train/val split says little about a new attack when train and validation were made the same way (the
image-track winner re-split FFDV's validation set by clustering for that reason). Protocols here:

- ``plain``: the label files' train split trains, the val split evaluates.
- ``held_out_kind``: with manipulation kinds known (a CSV ``video_name,kind`` such as the sample data's
  ``answers/manipulations.csv``), one split per fake kind K: train on the train split without K, evaluate on
  the val split's real clips plus every K fake (train and val). No K clip is ever trained on.
- ``cluster``: kinds unknown. Clips of train + val are clustered on simple media and feature statistics
  (format, bitrate, loudness and spectral shape, face brightness and colour); whole clusters are held out in
  ``cluster_folds`` folds, so a model is tested on recording conditions it never saw.
- ``test``: train split trains, a labelled test split evaluates (sample data: ``answers/test_label.txt``).

A split is written as a CSV (``video_name, part, target, folder``; ``part`` is train or eval, ``folder`` is
relative to the data root) and handed to ``train.fit`` as the ``split_csv`` parameter (``clip_datasets``
reads it with ``read_split``).
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..core import metrics
from ..core.paths import data_root_path, run_dir
from ..core.plots import draw_roc, save_figure
from ..core.runs import start_run
from ..core.schema import FEATURES, with_defaults
from ..data.index import media_index
from ..data.kinds import attach_kinds, read_kinds
from ..data.splits import (
    Split,
    cluster_splits,
    held_out_kind_splits,
    labelled_clips,
    plain_split,
    test_split,
    write_split,
)
from ..features.clips import clip_features
from ..inference.score import predict_clips
from ..models.checkpoint import load_model
from ..training.loop import fit
from .candidates import base_train_params, iter_candidates

PROTOCOLS = ("plain", "held_out_kind", "cluster", "test")
STAT_COLUMNS = ("log_duration", "fps", "log_pixels", "aspect", "sample_rate", "channels", "log_bitrate",
                "mel_mean", "mel_std", "mel_tilt", "mel_time_std", "face_mean", "face_std", "face_red", "face_sat")


def clip_statistics(clips: pd.DataFrame, params: Mapping[str, Any] | None = None, index: pd.DataFrame | None = None,
                    workers: int | None = None, progress: bool = False) -> pd.DataFrame:
    """Per clip: format statistics from the media index and summary statistics of its mel image and face crops.

    Args:
        clips: video_name, path.
        params: feature parameters (the run's), so the cached mels / faces of training are reused.
        index: a media index (``media_index``) to reuse; probed when None.
        workers: probe / extraction workers.
        progress: progress bars.

    Returns:
        video_name plus the ``STAT_COLUMNS`` that could be computed (NaN-free: missing values get the median).
    """
    params = dict(params or {})
    if index is None:
        index = media_index(clips[["video_name", "path"]], workers=workers, progress=progress)
    idx = index.set_index("video_name").reindex(clips.video_name)

    def num(col: str) -> pd.Series:
        return pd.to_numeric(idx[col], errors="coerce") if col in idx else pd.Series(np.nan, index=idx.index)

    dur = num("duration").clip(lower=0.05)
    stats = pd.DataFrame({"video_name": list(clips.video_name)})
    stats["log_duration"] = np.log(dur.to_numpy())
    stats["fps"] = num("fps").to_numpy()
    stats["log_pixels"] = np.log((num("width") * num("height")).clip(lower=1).to_numpy())
    stats["aspect"] = (num("width") / num("height").clip(lower=1)).to_numpy()
    stats["sample_rate"] = num("sample_rate").to_numpy()
    stats["channels"] = num("channels").to_numpy()
    stats["log_bitrate"] = np.log((num("size_bytes") * 8 / dur).clip(lower=1).to_numpy())
    feats = clip_features(with_defaults(params, FEATURES), clips, ("mel", "faces"), progress=progress)
    mels = np.asarray(feats["mels"], dtype=np.float32) / 255.0  # (N, H, W)
    h = mels.shape[1]
    stats["mel_mean"] = mels.mean((1, 2))
    stats["mel_std"] = mels.std((1, 2))
    stats["mel_tilt"] = mels[:, h // 2:].mean((1, 2)) - mels[:, : h // 2].mean((1, 2))  # rows are low -> high
    stats["mel_time_std"] = mels.mean(1).std(1)
    faces = feats["faces"]
    rows = []
    for name in clips.video_name:
        f = faces.get(name).astype(np.float32) / 255.0  # (T, S, S, 3)
        mx, mn = f.max(-1), f.min(-1)
        rows.append((f.mean(), f.std(), f[..., 0].mean() - f[..., 2].mean(), ((mx - mn) / (mx + 1e-3)).mean()))
    stats[["face_mean", "face_std", "face_red", "face_sat"]] = np.array(rows, dtype=np.float32)
    for col in STAT_COLUMNS:
        if col in stats and stats[col].isna().any():
            stats[col] = stats[col].fillna(stats[col].median() if stats[col].notna().any() else 0.0)
    return stats


def cluster_assign(stats: pd.DataFrame, n_clusters: int = 6, seed: int = 0) -> np.ndarray:
    """K-means cluster id per row of ``stats`` on its standardised statistic columns."""
    from sklearn.cluster import KMeans

    cols = [c for c in STAT_COLUMNS if c in stats and stats[c].std() > 0]
    x = stats[cols].to_numpy(np.float64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-9)
    k = max(1, min(int(n_clusters), len(stats)))
    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)


def make_splits(data_root: Any, protocols: Sequence[str] = ("plain", "held_out_kind", "cluster"),
                kinds_csv: Any = None, test_labels: Any = None, params: Mapping[str, Any] | None = None,
                n_clusters: int = 6, cluster_folds: int = 2, seed: int = 0, index: pd.DataFrame | None = None,
                progress: bool = False) -> list[Split]:
    """Every split of the requested protocols that the available information allows.

    ``held_out_kind`` needs ``kinds_csv``; without it a warning says so and ``cluster`` is used instead (if not
    already requested). ``test`` needs ``test_labels`` and is skipped with a warning without them.
    """
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise ValueError(f"unknown protocol(s) {', '.join(unknown)}; choose from {', '.join(PROTOCOLS)}")
    kinds = read_kinds(kinds_csv) if kinds_csv else None
    clips = attach_kinds(labelled_clips(data_root), kinds)
    wanted = list(protocols)
    if "held_out_kind" in wanted and kinds is None:
        warnings.warn("held_out_kind needs kinds_csv (video_name,kind); using the cluster protocol instead",
                      stacklevel=2)
        wanted = [p for p in wanted if p != "held_out_kind"] + ([] if "cluster" in wanted else ["cluster"])
    splits: list[Split] = []
    for proto in wanted:
        if proto == "plain":
            splits.append(plain_split(clips))
        elif proto == "held_out_kind":
            splits.extend(held_out_kind_splits(clips))
        elif proto == "cluster":
            stats = clip_statistics(clips, params, index=index, progress=progress)
            splits.extend(cluster_splits(clips, cluster_assign(stats, n_clusters, seed), cluster_folds))
        elif proto == "test":
            if not test_labels:
                warnings.warn("the test protocol needs test_labels; skipped", stacklevel=2)
                continue
            test = test_split(clips, data_root, test_labels)
            test.eval = attach_kinds(test.eval, kinds)
            splits.append(test)
    return splits


# ----------------------------------------------------------------------------------------------------------------
# running a comparison under every protocol


def evaluate_scores(split: Split, scores: pd.DataFrame) -> dict:
    """Metrics of ``scores`` (video_name, score) on ``split.eval``: overall and real-vs-kind AUC per fake kind."""
    df = split.eval.merge(scores[["video_name", "score"]], on="video_name", how="inner")
    out: dict[str, Any] = metrics.summarize(df.target, df.score)
    if "kind" in df:
        out.update({f"auc[{k}]": v for k, v in metrics.per_kind(df.target, df.score, df.kind).items()})
    return out


def _eval_scores_from_run(run_name: str, split: Split, device: str = "auto", progress: bool = False) -> pd.DataFrame:
    """Scores of a trained run's best checkpoint on ``split.eval`` (a split that shares the run's training set)."""
    model, params = load_model(run_name, device)
    clips = split.eval[["video_name", "path"]] if "path" in split.eval else None
    if clips is None:
        root = data_root_path(params["data_root"])
        clips = split.eval.assign(path=[str(root / f / n) for f, n in zip(split.eval.folder, split.eval.video_name)])
    return predict_clips(model, params, clips[["video_name", "path"]], device=device, progress=progress)


def run_protocols(run_name: str, data_root: Any, candidates: Sequence[Mapping[str, Any]],
                  protocols: Sequence[str] = ("plain", "held_out_kind", "cluster"), kinds_csv: Any = None,
                  test_labels: Any = None, shared: Mapping[str, Any] | None = None, n_clusters: int = 6,
                  cluster_folds: int = 2, seed: int = 0, progress: bool = False) -> pd.DataFrame:
    """Train every candidate on every split of ``protocols`` and score it on the split's eval part.

    Each (candidate, split) is its own run folder ``outputs/<run>-<candidate>-<split>`` (params, checkpoints,
    ``val_predictions.csv`` = eval-part scores), trained in-process from this run's ``03_train`` parameters plus
    ``shared`` plus the candidate's overrides. The last epoch is kept (``select_metric: last``): the eval part
    must not choose the checkpoint, or a held-out kind would leak into model selection. A split whose training
    set equals one already trained (``test`` after ``plain``) is scored with that model instead of training again.
    A candidate over the 200M-parameter rule is listed with its size and not trained.

    Returns:
        One row per (split, candidate): protocol, split, held_out, name, run, metrics, per-kind AUCs, n_params.
    """
    base = base_train_params(run_name, data_root)
    folder = run_dir(run_name)
    splits = make_splits(data_root, protocols, kinds_csv=kinds_csv, test_labels=test_labels,
                         params={**base, **dict(shared or {})}, n_clusters=n_clusters, cluster_folds=cluster_folds,
                         seed=seed, index=None, progress=progress)
    pd.DataFrame([s.summary() for s in splits]).to_csv(folder / "protocol_splits.csv", index=False)
    trained: dict[tuple[str, str], str] = {}
    rows = []
    for split in splits:
        split_path = write_split(split, folder / "splits" / f"{split.name}.csv")
        for label, over, params, cand_row in iter_candidates(base, candidates, shared):
            params.update(split_csv=str(split_path), select_metric="last", progress=progress,
                          run_name=f"{run_name}-{label}-{split.name}")
            row: dict[str, Any] = {**split.summary(), **cand_row}
            if "error" in row:
                rows.append(row)
                continue
            key = (label, split.train_key())
            t0 = time.time()
            try:
                if key in trained:
                    scores = _eval_scores_from_run(trained[key], split, progress=progress)
                    row.update(run=trained[key], reused_model=True)
                else:
                    run = start_run(params, "03_train")
                    result = fit(params, run)
                    scores = pd.read_csv(run.path("val_predictions.csv"), dtype={"video_name": str})
                    trained[key] = run.name
                    row.update(run=run.name, train_time_s=result.get("train_time_s"),
                               best_epoch=result.get("best_epoch"))
            except Exception as exc:  # one failing candidate must not end a long comparison
                rows.append({**row, "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
                continue
            pred_path = folder / "protocol_predictions" / f"{split.name}__{label}.csv"
            pred_path.parent.mkdir(parents=True, exist_ok=True)
            merged = split.eval.merge(scores[["video_name", "score"]], on="video_name", how="inner")
            merged[[c for c in ("video_name", "target", "kind", "score") if c in merged]].to_csv(pred_path, index=False)
            rows.append({**row, **evaluate_scores(split, scores), "wall_s": time.time() - t0,
                         "predictions": str(pred_path.relative_to(folder))})
    table = pd.DataFrame(rows)
    table.to_csv(folder / "protocol_results.csv", index=False)
    return table


LEADER_METRICS = ("auc", "tpr@fpr=1e-2", "tpr@fpr=1e-3")
PROTOCOL_ORDER = ("plain", "test", "held_out_kind", "cluster")


def protocol_leaderboard(results: pd.DataFrame, metrics: Sequence[str] = LEADER_METRICS) -> pd.DataFrame:
    """ONE table: a row per model, columns ``<protocol> <metric>`` (mean over the protocol's splits), per-kind
    AUCs of ``plain`` / ``test`` and, for ``held_out_kind``, the AUC on each unseen kind; parameters in millions."""
    ok = results[results.get("auc").notna()] if "auc" in results else results.iloc[0:0]
    if ok.empty:
        return pd.DataFrame({"name": results.get("name", pd.Series(dtype=str)).unique()})
    table = pd.DataFrame(index=pd.Index(list(dict.fromkeys(results.name)), name="name"))
    present = [p for p in PROTOCOL_ORDER if p in set(ok.protocol)] + \
        sorted(set(ok.protocol) - set(PROTOCOL_ORDER))
    for proto in present:
        part = ok[ok.protocol == proto]
        means = part.groupby("name")[[m for m in metrics if m in part]].mean()
        for m in means.columns:
            table[f"{proto} {m}"] = means[m]
        if proto == "held_out_kind":
            for held, g in part.groupby("held_out"):
                table[f"unseen {held} auc"] = g.set_index("name")["auc"]
        elif proto in ("plain", "test"):
            for col in sorted(c for c in part.columns if c.startswith("auc[")):
                if part[col].notna().any():
                    table[f"{proto} {col}"] = part.groupby("name")[col].mean()
    if "n_params" in results:
        table["params_M"] = results.groupby("name")["n_params"].max() / 1e6
    if "train_time_s" in results:
        table["train_time_s"] = results.groupby("name")["train_time_s"].sum(min_count=1)
    if "error" in results:
        errs = results.dropna(subset=["error"]).groupby("name")["error"].first()
        if len(errs):
            table["error"] = errs
    first = next((c for c in table.columns if c.endswith(" auc")), None)
    if first is not None:
        table = table.sort_values(first, ascending=False, na_position="last")
    return table.reset_index()


def protocol_curves(results: pd.DataFrame, folder: str | os.PathLike) -> dict[str, dict[str, tuple]]:
    """{panel: {model: (targets, scores)}} from the saved eval predictions. A protocol's splits are pooled into one
    panel when their eval parts are disjoint (cluster folds); held-out kinds get a panel each."""
    curves: dict[str, dict[str, tuple]] = {}
    if "predictions" not in results:
        return curves
    for row in results.dropna(subset=["predictions"]).itertuples():
        panel = row.split if row.protocol in ("held_out_kind", "plain", "test") else row.protocol
        df = pd.read_csv(Path(folder) / row.predictions)
        y, s = curves.setdefault(panel, {}).get(row.name, (np.zeros(0), np.zeros(0)))
        curves[panel][row.name] = (np.concatenate([y, df.target.to_numpy(float)]),
                                   np.concatenate([s, df.score.to_numpy(float)]))
    return curves


def plot_protocol_rocs(curves: Mapping[str, Mapping[str, tuple]], path: str | os.PathLike | None = None,
                       log_fpr: bool = True) -> Any:
    """A panel of ROC curves per protocol split (log FPR: the tie-break metric lives at FPR = 1e-3)."""
    import matplotlib.pyplot as plt

    panels = list(curves)
    cols = min(3, max(1, len(panels)))
    rows = int(np.ceil(max(1, len(panels)) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    for ax, panel in zip(axes.ravel(), panels):
        draw_roc(ax, curves[panel], log_fpr, fontsize=7)
        ax.set_title(panel, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)



DETAIL_COLUMNS = ("protocol", "split", "held_out", "name", "n_train", "n_eval", "n_eval_fake", "auc", "tpr@fpr=1e-2",
                  "tpr@fpr=1e-3", "auc[*]", "train_time_s", "reused_model", "error")


def detail_table(results: pd.DataFrame) -> pd.DataFrame:
    """The per-split rows with the columns worth reading (every ``auc[kind]`` where ``auc[*]`` stands)."""
    cols: list[str] = []
    for c in DETAIL_COLUMNS:
        cols += sorted(k for k in results if k.startswith("auc[")) if c == "auc[*]" else [c] if c in results else []
    return results[cols]
