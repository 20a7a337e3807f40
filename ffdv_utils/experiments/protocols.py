"""Evaluation protocols: which clips train a model and which clips test it, and running a comparison under them
(``run_protocols``); ``protocol_report`` turns its results into leaderboards and curves.

A plain train/val split says little about a new attack when train and validation were made the same way (the
image-track winner re-split FFDV's validation set by clustering for that reason). Protocols here:

- ``plain``: the label files' train split trains, the val split evaluates.
- ``held_out_kind``: with manipulation kinds known (a CSV ``video_name,kind`` such as the sample data's
  ``answers/manipulations.csv``), one split per fake kind K: train on the train split without K, evaluate on
  the val split's real clips plus every K fake (train and val). No K clip is ever trained on.
- ``cluster``: kinds unknown. Clips of train + val are clustered on simple media and feature statistics
  (format, bitrate, loudness and spectral shape, face brightness and colour); whole clusters are held out in
  ``cluster_folds`` folds, so a model is tested on recording conditions it never saw.
- ``held_out_identity``: with identities known (an ``identity`` column in the kinds CSV, as in the sample data's
  answers), the identities of train + val are dealt to ``cluster_folds`` folds; a fold evaluates on every clip of
  its identities and trains on the others' -- faces and voices the model never saw, as in FFDV's test set.
- ``grouped``: whole groups held out (``data.groups``): any column of a groups file keyed by ``video_name``
  (``groups_csv``, ``group_column``; a labelled folder's own ``labels.csv`` by default), grouped K-fold
  (``group_folds``) or leave-one-group-out (``group_folds: 0``). On a labelled folder (``labels.csv`` + ``clips/``,
  such as real-world clips split by the source they come from) it is the protocol that says how a model does on
  sources it never saw.
- ``test``: train split trains, a labelled test split evaluates (sample data: ``answers/test_label.txt``).

Every protocol also trains and scores the two floors (``experiments.floors``, ``floors``): the public baseline's
recipe and a metadata-only model; the leaderboard flags any candidate that does not beat both.

A split is written as a CSV (``video_name, part, target, folder``; ``part`` is train or eval, ``folder`` is
relative to the data root) and handed to ``train.fit`` as the ``split_csv`` parameter (``clip_datasets``
reads it with ``read_split``).

Every (candidate, split) is trained once per training seed (``seeds``). The leaderboard reports, per protocol, the
mean and sd over seeds of the AUC (each seed's AUC being the mean over the protocol's splits), a bootstrap 95 %
interval of that mean (``protocol_intervals``: the eval clips resampled, reals and fakes apart, the same resample for
every seed and split), and TPR at FPR 1e-2 / 1e-3 with the number of real clips, n/a (NaN) below ``1/FPR`` reals.
"""

from __future__ import annotations

import itertools
import time
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..core import metrics
from ..core.paths import data_root_path, run_dir
from ..core.runs import start_run
from ..core.schema import FEATURES, with_defaults
from ..data.groups import attach_groups, grouped_splits, read_groups
from ..data.index import media_index
from ..data.kinds import attach_kinds, read_kinds
from ..data.labels import POOL_LABELS, DataError, is_pool
from ..data.splits import (
    Split,
    cluster_splits,
    held_out_identity_splits,
    held_out_kind_splits,
    labelled_clips,
    plain_split,
    test_split,
    write_split,
)
from ..detector import NETWORK, load_detector
from ..features.clips import clip_features
from ..inference.score import predict_clips
from ..training.loop import fit
from .candidates import base_train_params, iter_candidates
from .floors import BASELINE_FLOOR, METADATA_FLOOR, baseline_params, metadata_scores

PROTOCOLS = ("plain", "held_out_kind", "held_out_identity", "cluster", "grouped", "test")

# While a manipulation kind is held out, the pseudo-fake family that imitates it most closely is switched off too,
# or the fold would still train on a stand-in for the "unseen" kind. {held-out kind: pseudo-fake families to switch
# off}, for the sample data's kinds (FFDV's own kinds are not published; a kind without an entry switches nothing
# off). The names are the families of ``ffdv_utils/pseudo/families.py`` (``FAMILIES``); ``splice`` (temporal
# continuity) imitates no kind of the sample's train / val splits and stays on.
HELD_OUT_PAIRING: dict[str, tuple[str, ...]] = {
    "audio": ("voice",),                         # voice altered / replaced <-> vocoder-like damage to the voice
    "visual": ("face_blend", "mouth_reorder"),   # blended face swap or a mouth pasted from other frames <->
                                                 # self-blended face, mouth taken from other frames
    "av_mismatch": ("av_offset",),               # audio from another clip <-> the sound moved against the picture
}
# The training parameter the pseudo-fake stage reads: a list of family names that are off. The override is applied
# only where the training parameters hold this key (``core/schema.py`` declares it).
PSEUDO_OFF_KEY = "pseudo_fakes_off"


def fold_overrides(split: Split, params: Mapping[str, Any]) -> dict:
    """Training-parameter overrides of one protocol fold: for a ``held_out_kind`` fold, the held-out kind's paired
    pseudo-fake families (``HELD_OUT_PAIRING``) added to ``params[PSEUDO_OFF_KEY]``; {} for every other fold, for a
    kind without a pairing, and for parameters without ``PSEUDO_OFF_KEY``."""
    families = HELD_OUT_PAIRING.get(split.held_out, ()) if split.protocol == "held_out_kind" else ()
    if not families or PSEUDO_OFF_KEY not in params:
        return {}
    off = list(params[PSEUDO_OFF_KEY] or [])
    return {PSEUDO_OFF_KEY: off + [f for f in families if f not in off]}

STAT_COLUMNS = ("log_duration", "fps", "log_pixels", "aspect", "sample_rate", "channels", "log_bitrate",
                "mel_mean", "mel_std", "mel_tilt", "mel_time_std", "face_mean", "face_std", "face_red", "face_sat")


def cluster_statistics(clips: pd.DataFrame, params: Mapping[str, Any] | None = None,
                       index: pd.DataFrame | None = None, workers: int | None = None,
                       progress: bool = False) -> pd.DataFrame:
    """Per clip, what the ``cluster`` protocol groups clips by: format statistics from the media index and summary
    statistics of its mel image and face crops.

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
                progress: bool = False, groups_csv: Any = None, group_column: str = "source",
                group_folds: int = 5) -> list[Split]:
    """Every split of the requested protocols that the available information allows.

    ``grouped`` reads ``group_column`` of ``groups_csv`` (default: the data root's ``labels.csv`` when it is a
    labelled folder); without a groups file it is an error naming what to set.

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
    pooled = is_pool(data_root)
    for proto in wanted:
        if pooled and proto not in ("grouped", "cluster"):
            warnings.warn(f"{proto} needs FFDV's train / val label files; a labelled folder ({POOL_LABELS} + clips/) "
                          "has one pool of clips: use grouped or cluster; skipped", stacklevel=2)
            continue
        if proto == "plain":
            splits.append(plain_split(clips))
        elif proto == "held_out_kind":
            splits.extend(held_out_kind_splits(clips))
        elif proto == "held_out_identity":
            if "identity" not in clips or not (clips.identity.astype(str) != "").any():
                warnings.warn("held_out_identity needs kinds_csv with an identity column (video_name,kind,identity); "
                              "skipped", stacklevel=2)
                continue
            splits.extend(held_out_identity_splits(clips, cluster_folds))
        elif proto == "cluster":
            stats = cluster_statistics(clips, params, index=index, progress=progress)
            splits.extend(cluster_splits(clips, cluster_assign(stats, n_clusters, seed), cluster_folds))
        elif proto == "grouped":
            source = groups_csv or (data_root_path(data_root) / POOL_LABELS if is_pool(data_root) else None)
            if source is None:
                raise DataError("the grouped protocol needs groups_csv (a CSV with video_name and a group column, "
                                "group_column) or a labelled folder as data root (labels.csv with that column)")
            splits.extend(grouped_splits(attach_groups(clips, read_groups(source, group_column)), group_folds,
                                         seed))
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
    """Metrics of ``scores`` (video_name, score) on ``split.eval``: overall and real-vs-kind AUC per fake kind.

    ``auc_ci_lo`` / ``auc_ci_hi`` is the split's bootstrap 95 % interval; a TPR at an FPR that fewer than ``1/FPR``
    real clips cannot resolve is NaN, with ``tpr@fpr=F n/a`` True and ``n_real`` beside it.
    """
    df = split.eval.merge(scores[["video_name", "score"]], on="video_name", how="inner")
    out: dict[str, Any] = metrics.summarize(df.target, df.score)
    for fpr in metrics.TPR_FPRS:
        if out[f"tpr@fpr={metrics.fpr_name(fpr)} n/a"]:
            out[f"tpr@fpr={metrics.fpr_name(fpr)}"] = float("nan")
    if "kind" in df:
        out.update({f"auc[{k}]": v for k, v in metrics.per_kind(df.target, df.score, df.kind).items()})
        out.update(_unseen_auc(split, df))
    return out


def _unseen_auc(split: Split, df: pd.DataFrame) -> dict:
    """``auc[unseen kinds]`` / ``auc[seen kinds]``: real clips against the fakes of the kinds absent from (present
    in) the split's training fakes -- on the sample's test split, the test-only kinds -- when both exist."""
    if "kind" not in split.train:
        return {}
    seen = set(split.train.loc[split.train.target > 0.5, "kind"].dropna())
    fake = df.target > 0.5
    unseen = fake & ~df.kind.isin(seen)
    if not unseen.any() or unseen.sum() == fake.sum() or (~fake).sum() == 0:
        return {}
    out = {}
    for name, part in (("unseen kinds", unseen), ("seen kinds", fake & ~unseen)):
        keep = ~fake | part
        out[f"auc[{name}]"] = metrics.auc(df.target[keep], df.score[keep])
    return out


def _eval_scores_from_run(run_name: str, split: Split, device: str = "auto", progress: bool = False) -> pd.DataFrame:
    """Scores of a trained run's detector on ``split.eval`` (a split that shares the run's training set)."""
    detector = load_detector(run_name, device)
    params = detector.params
    clips = split.eval[["video_name", "path"]] if "path" in split.eval else None
    if clips is None:
        root = data_root_path(params["data_root"])
        clips = split.eval.assign(path=[str(root / f / n) for f, n in zip(split.eval.folder, split.eval.video_name)])
    return predict_clips(detector, params, clips[["video_name", "path"]], device=device, progress=progress,
                         cached_embeddings=True)


def score_parts(scores: pd.DataFrame) -> list[str]:
    """The parts of a joined score in a predictions table: the network's (``model_score``) first, then each part's
    (``<kind>_score``)."""
    named = [c[: -len("_score")] for c in scores.columns if c.endswith("_score")]
    return sorted(named, key=lambda k: k != NETWORK)


def run_protocols(run_name: str, data_root: Any, candidates: Sequence[Mapping[str, Any]],
                  protocols: Sequence[str] = ("plain", "held_out_kind", "cluster"), kinds_csv: Any = None,
                  test_labels: Any = None, shared: Mapping[str, Any] | None = None, n_clusters: int = 6,
                  cluster_folds: int = 2, seed: int = 0, progress: bool = False,
                  seeds: int | Sequence[int] | None = None, groups_csv: Any = None, group_column: str = "source",
                  group_folds: int = 5, floors: Sequence[str] = (),
                  floor_baseline_pretrained: Any = None) -> pd.DataFrame:
    """Train every candidate on every split of ``protocols``, once per training seed, and score it on the split's
    eval part.

    ``seeds``: training seeds, a count (None: 1, a single run) counted from the candidate's own ``seed``, or a
    list (``candidates.seed_list``); ``seed`` is the clustering's seed, not a training seed. Each (candidate, split,
    seed) is its own run folder ``outputs/<run>-<candidate>[-s<seed>]-<split>`` (no suffix for the own seed; params,
    checkpoints,
    ``val_predictions.csv`` = eval-part scores), trained in-process from this run's ``03_train`` parameters plus
    ``shared`` plus the candidate's overrides. The last epoch is kept (``select_metric: last``): the eval part
    must not choose the checkpoint, or a held-out kind would leak into model selection. A split whose training
    set equals one already trained (``test`` after ``plain``) is scored with that model instead of training again.
    A candidate whose detector joins other scores to its network (``real_only_weight`` > 0...) adds a row per
    part and split from the same detector: the network's score (``<label>[model]``) and each part's alone
    (``<label>[real_only]``).
    A candidate over the 200M-parameter rule is listed with its size and not trained. A ``held_out_kind`` fold
    trains with ``fold_overrides`` (the paired pseudo-fake family off; nothing while no such stage exists).

    Returns:
        One row per (split, candidate, seed): protocol, split, held_out, name, seed, run, metrics (``evaluate_scores``),
        per-kind AUCs, n_params, pseudo_fakes_off.
    """
    base = base_train_params(run_name, data_root)
    folder = run_dir(run_name)
    splits = make_splits(data_root, protocols, kinds_csv=kinds_csv, test_labels=test_labels,
                         params={**base, **dict(shared or {})}, n_clusters=n_clusters, cluster_folds=cluster_folds,
                         seed=seed, index=None, progress=progress, groups_csv=groups_csv, group_column=group_column,
                         group_folds=group_folds)
    floors = list(floors or ())
    unknown = sorted(set(floors) - {"baseline", "metadata"})
    if unknown:
        raise ValueError(f"unknown floor(s) {', '.join(unknown)}; choose from baseline, metadata")
    index = _floor_index(splits, folder, progress) if "metadata" in floors else None
    pd.DataFrame([s.summary() for s in splits]).to_csv(folder / "protocol_splits.csv", index=False)
    trained: dict[tuple[str, str], str] = {}
    rows = []
    seeds = 1 if seeds is None else seeds  # one run per candidate, with its own seed
    for split in splits:
        split_path = write_split(split, folder / "splits" / f"{split.name}.csv")
        if index is not None:
            rows.append(_metadata_row(split, index, folder))
        entries = iter_candidates(base, candidates, shared, seeds)
        if "baseline" in floors:
            floor_base = baseline_params({**base, **dict(shared or {})}, floor_baseline_pretrained)
            entries = itertools.chain(iter_candidates(floor_base, [{"name": BASELINE_FLOOR}], None, seeds), entries)
        for label, over, params, cand_row in entries:
            fold = fold_overrides(split, params)
            params.update(split_csv=str(split_path), select_metric="last", progress=progress,
                          run_name=f"{run_name}-{label}-{split.name}", **fold)
            row: dict[str, Any] = {**split.summary(), **cand_row}
            if split.protocol == "held_out_kind":
                row["pseudo_fakes_off"] = ",".join(fold[PSEUDO_OFF_KEY]) if fold else ""
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
                    scores = result.predictions
                    trained[key] = run.name
                    row.update(run=run.name, train_time_s=result.get("train_time_s"),
                               best_epoch=result.get("best_epoch"))
            except Exception as exc:  # one failing candidate must not end a long comparison
                rows.append({**row, "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
                continue
            # a run with a real-only score also reports each part of its joined score as a row of its own (the same
            # model, no second training): ``<label>[model]`` and ``<label>[real_only]``
            for suffix, col in (("", "score"), *((f"[{part}]", f"{part}_score") for part in score_parts(scores))):
                part = scores[["video_name", col]].rename(columns={col: "score"})
                name = f"{label}{suffix}"
                pred_path = folder / "protocol_predictions" / f"{split.name}__{name}.csv"
                pred_path.parent.mkdir(parents=True, exist_ok=True)
                merged = split.eval.merge(part, on="video_name", how="inner")
                merged[[c for c in ("video_name", "target", "kind", "score") if c in merged]].to_csv(pred_path,
                                                                                                     index=False)
                # (``label`` carries the seed, ``row["name"]`` does not: the parts of every seed share one name)
                extra = {"name": f"{row['name']}{suffix}", "train_time_s": None, "part_of": row["name"]} if suffix \
                    else {}
                rows.append({**row, **extra, **evaluate_scores(split, part), "wall_s": time.time() - t0,
                             "predictions": str(pred_path.relative_to(folder))})
    table = pd.DataFrame(rows)
    table.to_csv(folder / "protocol_results.csv", index=False)
    return table


def _floor_index(splits: Sequence[Split], folder: Path, progress: bool) -> pd.DataFrame:
    """The media index (probe fields) of every clip of ``splits``, cached in the run folder."""
    clips = pd.concat([pd.concat([s.train, s.eval]) for s in splits], ignore_index=True)
    clips = clips.drop_duplicates("video_name")[["video_name", "path"]].reset_index(drop=True)
    return media_index(clips, cache=folder / "floor_media_index.csv", progress=progress)


def _metadata_row(split: Split, index: pd.DataFrame, folder: Path) -> dict:
    """``floor:metadata`` on one split as a results row, its eval predictions saved like a candidate's."""
    t0 = time.time()
    scores = metadata_scores(split, index)
    pred_path = folder / "protocol_predictions" / f"{split.name}__{METADATA_FLOOR}.csv"
    pred_path.parent.mkdir(parents=True, exist_ok=True)
    merged = split.eval.merge(scores, on="video_name", how="inner")
    merged[[c for c in ("video_name", "target", "kind", "score") if c in merged]].to_csv(pred_path, index=False)
    return {**split.summary(), "name": METADATA_FLOOR, "seed": 0, "n_params": None, **evaluate_scores(split, scores),
            "wall_s": time.time() - t0, "predictions": str(pred_path.relative_to(folder))}
