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
relative to the data root) and handed to ``train.fit`` as the ``split_csv`` parameter (``datasets.clip_datasets``
reads it with ``read_split``).
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from . import config

PROTOCOLS = ("plain", "held_out_kind", "cluster", "test")
SPLIT_COLUMNS = ("video_name", "part", "target", "folder")
STAT_COLUMNS = ("log_duration", "fps", "log_pixels", "aspect", "sample_rate", "channels", "log_bitrate",
                "mel_mean", "mel_std", "mel_tilt", "mel_time_std", "face_mean", "face_std", "face_red", "face_sat")


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
    """Labelled clips with video_name, target, path, split and folder (relative to the data root)."""
    from .data import SPLIT_DIRS, labelled_frame

    df = labelled_frame(data_root, splits)
    df["folder"] = [SPLIT_DIRS[s] for s in df.split]
    return df


def read_kinds(path: Any) -> pd.DataFrame:
    """``video_name, kind`` from a CSV with those columns (``real`` for genuine clips); names are canonical."""
    from .data import canonical_name

    resolved = config.resolve_path(path)
    if resolved is None or not resolved.is_file():
        raise FileNotFoundError(f"kinds CSV {path!r} not found (resolved to {resolved})")
    df = pd.read_csv(resolved, dtype={"video_name": str})
    missing = {"video_name", "kind"} - set(df.columns)
    if missing:
        raise ValueError(f"{resolved}: needs columns video_name and kind (missing {', '.join(sorted(missing))})")
    return pd.DataFrame({"video_name": [canonical_name(n) for n in df.video_name], "kind": df.kind.astype(str)})


def attach_kinds(clips: pd.DataFrame, kinds: pd.DataFrame | None) -> pd.DataFrame:
    """``clips`` with a ``kind`` column: from ``kinds`` where listed, else ``real`` / ``fake`` from the label."""
    from .data import canonical_name

    out = clips.copy()
    default = np.where(out.target > 0.5, "fake", "real")
    if kinds is None:
        out["kind"] = default
        return out
    table = dict(zip(kinds.video_name, kinds.kind))
    out["kind"] = [table.get(canonical_name(n), d) for n, d in zip(out.video_name, default)]
    return out


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


def clip_statistics(clips: pd.DataFrame, params: Mapping[str, Any] | None = None, index: pd.DataFrame | None = None,
                    workers: int | None = None, progress: bool = False) -> pd.DataFrame:
    """Per clip: format statistics from the media index and summary statistics of its mel image and face crops.

    Args:
        clips: video_name, path.
        params: feature parameters (the run's), so the cached mels / faces of training are reused.
        index: a media index (``data.media_index``) to reuse; probed when None.
        workers: probe / extraction workers.
        progress: progress bars.

    Returns:
        video_name plus the ``STAT_COLUMNS`` that could be computed (NaN-free: missing values get the median).
    """
    from .data import media_index
    from .datasets import clip_features

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
    feats = clip_features({**params, "image_size": int(params.get("image_size") or 64)}, clips,
                          ("mel", "faces"), progress=progress)
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


def test_split(clips: pd.DataFrame, data_root: Any, test_labels: Any, test_dir: str = "testset") -> Split:
    """Train split trains; the labelled test clips evaluate (answers kept outside the data folder)."""
    from .data import canonical_name, list_test, read_labels

    truth = read_labels(config.resolve_path(test_labels))
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
# split files


def write_split(split: Split, path: str | os.PathLike) -> Path:
    """The split as ``video_name, part, target, folder`` (plus kind when known), written atomically."""
    cols = ["video_name", "target", "folder"] + (["kind"] if "kind" in split.train or "kind" in split.eval else [])
    parts = [split.train.reindex(columns=cols).assign(part="train"),
             split.eval.reindex(columns=cols).assign(part="eval")]
    df = pd.concat(parts, ignore_index=True)[["video_name", "part", "target", "folder"] + cols[3:]]
    path = Path(path)
    config.atomic_write_text(path, df.to_csv(index=False))
    return path


def read_split(path: str | os.PathLike, data_root: Any = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, eval) frames with video_name, target, path from a split CSV (``write_split``)."""
    resolved = config.resolve_path(str(path))
    if resolved is None or not resolved.is_file():
        raise FileNotFoundError(f"split file {path!r} not found (resolved to {resolved})")
    df = pd.read_csv(resolved, dtype={"video_name": str, "folder": str})
    missing = set(SPLIT_COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"{resolved}: needs columns {', '.join(SPLIT_COLUMNS)} (missing {', '.join(sorted(missing))})")
    root = config.find_data_root(data_root)
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


# ----------------------------------------------------------------------------------------------------------------
# running a comparison under every protocol


def evaluate_scores(split: Split, scores: pd.DataFrame) -> dict:
    """Metrics of ``scores`` (video_name, score) on ``split.eval``: overall and real-vs-kind AUC per fake kind."""
    from . import metrics

    df = split.eval.merge(scores[["video_name", "score"]], on="video_name", how="inner")
    out: dict[str, Any] = metrics.summarize(df.target, df.score)
    if "kind" in df:
        real = df[df.target < 0.5]
        for kind in sorted(k for k in df.kind.dropna().unique() if k not in ("real", "fake")):
            part = pd.concat([real, df[df.kind == kind]])
            out[f"auc[{kind}]"] = metrics.auc(part.target, part.score)
    return out


def _eval_scores_from_run(run_name: str, split: Split, device: str = "auto", progress: bool = False) -> pd.DataFrame:
    """Scores of a trained run's best checkpoint on ``split.eval`` (a split that shares the run's training set)."""
    from .predict import load_model, predict_clips

    model, params = load_model(run_name, device)
    clips = split.eval[["video_name", "path"]] if "path" in split.eval else None
    if clips is None:
        root = config.find_data_root(params.get("data_root"))
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
    from .compare import base_train_params, label_of, parameter_count
    from .models import MAX_PARAMS, ModelRuleError
    from .train import fit

    base = base_train_params(run_name, data_root)
    folder = config.run_dir(run_name)
    splits = make_splits(data_root, protocols, kinds_csv=kinds_csv, test_labels=test_labels,
                         params={**base, **dict(shared or {})}, n_clusters=n_clusters, cluster_folds=cluster_folds,
                         seed=seed, index=None, progress=progress)
    pd.DataFrame([s.summary() for s in splits]).to_csv(folder / "protocol_splits.csv", index=False)
    trained: dict[tuple[str, str], str] = {}
    rows = []
    for split in splits:
        split_path = write_split(split, folder / "splits" / f"{split.name}.csv")
        for cand in candidates:
            label = label_of(cand)
            over = {**dict(shared or {}), **{k: v for k, v in cand.items() if k != "name"}}
            params = {**base, **over, "split_csv": str(split_path), "select_metric": "last", "progress": progress,
                      "run_name": f"{run_name}-{label}-{split.name}"}
            row: dict[str, Any] = {**split.summary(), "name": label}
            try:
                n_params = parameter_count(params)
            except (ModelRuleError, RuntimeError, ValueError) as exc:
                rows.append({**row, "error": str(exc)[:200]})
                continue
            row["n_params"] = n_params
            if n_params > MAX_PARAMS:
                rows.append({**row, "error": f"{n_params / 1e6:.0f}M parameters: over the 200M cap, not trained"})
                continue
            key = (label, split.train_key())
            t0 = time.time()
            try:
                if key in trained:
                    scores = _eval_scores_from_run(trained[key], split, progress=progress)
                    row.update(run=trained[key], reused_model=True)
                else:
                    run = config.start_run(params, "03_train")
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
    from sklearn.metrics import roc_curve

    from .metrics import auc
    from .plots import save_figure

    panels = list(curves)
    cols = min(3, max(1, len(panels)))
    rows = int(np.ceil(max(1, len(panels)) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    for ax, panel in zip(axes.ravel(), panels):
        for label, (y, s) in curves[panel].items():
            if len(np.unique(y)) < 2:
                continue
            fpr, tpr, _ = roc_curve(y, s)
            ax.plot(np.maximum(fpr, 1e-3) if log_fpr else fpr, tpr, label=f"{label} ({auc(y, s):.3f})")
        if log_fpr:
            ax.set_xscale("log")
            ax.set_xlim(1e-3, 1)
        ax.plot([1e-3, 1], [1e-3, 1], color="gray", lw=0.6, ls="--")
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("true-positive rate")
        ax.legend(fontsize=7, loc="lower right")
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
