"""Reporting a protocol comparison (``protocols.run_protocols``' results table): the leaderboard (mean and sd
over seeds, bootstrap intervals, TPR at low FPR with ``n/a`` below ``1/FPR`` real clips), its display form, ROC curves
per protocol and the per-split detail table.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..core import metrics
from ..core.metrics import N_BOOT
from ..core.plots import draw_roc, save_figure
from .floors import floor_flags, is_floor


LEADER_METRICS = ("auc", "tpr@fpr=1e-2", "tpr@fpr=1e-3")
PROTOCOL_ORDER = ("plain", "test", "grouped", "held_out_kind", "held_out_identity", "cluster")
TPR_METRICS = {f"tpr@fpr={metrics.fpr_name(f)}": f for f in metrics.TPR_FPRS}


def _seeded(results: pd.DataFrame) -> pd.DataFrame:
    """``results`` with a ``seed`` column (0 where absent: one seed) and every TPR that its eval part's real clips
    cannot resolve (``n_real < 1/FPR``) set to NaN, whatever an older results file holds."""
    df = results.copy()
    df["seed"] = df["seed"].fillna(-1) if "seed" in df else 0
    if "n_real" in df:
        for col, fpr in TPR_METRICS.items():
            if col in df:
                df.loc[df["n_real"].notna() & (df["n_real"] < metrics.min_reals(fpr)), col] = np.nan
    return df


def _over_seeds(part: pd.DataFrame, col: str, skipna: bool = True) -> tuple[pd.Series, pd.Series]:
    """Per name: the mean and sd (ddof 1; NaN with one seed) over seeds of ``col``, each seed's value being the mean
    over its splits (``skipna=False``: a split with NaN makes that seed's value NaN, as n/a TPRs must)."""
    per_seed = part.groupby(["name", "seed"])[col].agg(lambda v: v.mean(skipna=skipna))
    by_name = per_seed.groupby(level="name")
    return by_name.mean(), by_name.std(ddof=1)


def _nanmean(a: Any, axis: int = 0) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column (a resample without one class) stays NaN
        return np.nanmean(np.asarray(a, float), axis=axis)


def paired_bootstrap(groups: Mapping[str, Sequence[pd.DataFrame]], n_boot: int = metrics.N_BOOT,
                     seed: int = metrics.BOOT_SEED) -> dict[str, np.ndarray]:
    """Bootstrap AUCs of several splits and seeds on ONE clip-level resample per round.

    Args:
        groups: {split: [predictions (video_name, target, score) of each seed]}.

    Returns:
        {split: (n_boot,) the mean over seeds of the resampled AUC}. The union of the clips is resampled, reals and
        fakes apart (stratified), and every (split, seed) is scored on the draw counts of its own clips: seeds are
        paired (the interval is clip sampling, not seed spread), and clips shared by two splits (the val reals of
        every held-out kind) move together.
    """
    frames = [d for ds in groups.values() for d in ds]
    if not frames:
        return {}
    clips = pd.concat([d[["video_name", "target"]] for d in frames]).drop_duplicates("video_name")
    where = {}
    for fake in (False, True):
        names = clips.video_name[(clips.target >= 0.5) == fake]
        where[fake] = pd.Series(np.arange(len(names)), index=names.to_numpy())
    parts = {split: [(d.score[d.target < 0.5].to_numpy(float), d.score[d.target >= 0.5].to_numpy(float),
                      where[False][d.video_name[d.target < 0.5]].to_numpy(),
                      where[True][d.video_name[d.target >= 0.5]].to_numpy()) for d in ds]
             for split, ds in groups.items()}
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {split: [] for split in groups}
    for b in metrics.boot_chunks(len(clips), n_boot):
        w_real = metrics.bootstrap_weights(len(where[False]), b, rng)
        w_fake = metrics.bootstrap_weights(len(where[True]), b, rng)
        for split, seeds in parts.items():
            per_seed = [metrics.weighted_aucs(r, f, w_real[:, ir], w_fake[:, i_f]) if len(r) and len(f)
                        else np.full(b, np.nan) for r, f, ir, i_f in seeds]
            out[split].append(_nanmean(per_seed))
    return {split: np.concatenate(v) for split, v in out.items()}


def protocol_intervals(results: pd.DataFrame, folder: str | os.PathLike, n_boot: int = metrics.N_BOOT,
                       seed: int = metrics.BOOT_SEED, level: float = metrics.LEVEL) -> pd.DataFrame:
    """Bootstrap ``level`` intervals of the leaderboard's AUCs from the saved per-seed eval predictions.

    Per model and protocol, ``<protocol> auc lo`` / ``hi`` bound the reported number itself -- the mean over seeds
    of the mean over the protocol's splits -- recomputed on each of ``n_boot`` stratified resamples of the eval clips
    (``paired_bootstrap``: the per-seed predictions, paired, not pooled into one score); ``unseen <kind> auc lo`` /
    ``hi`` the same for one held-out kind. Indexed by name.
    """
    df = _seeded(results)
    if "predictions" not in df or ("auc" in df and df["auc"].isna().all()):
        return pd.DataFrame()
    df = df.dropna(subset=["predictions"])
    table: dict[str, dict[str, float]] = {}
    for (proto, name), part in df.groupby(["protocol", "name"], sort=False):
        groups: dict[str, list[pd.DataFrame]] = {}
        for row in part.itertuples():
            pred = pd.read_csv(Path(folder) / row.predictions, dtype={"video_name": str})
            groups.setdefault(row.split, []).append(pred)
        samples = paired_bootstrap(groups, n_boot, seed)
        row_out = table.setdefault(name, {})
        lo, hi = metrics.percentile_interval(_nanmean(list(samples.values())), level)
        row_out.update({f"{proto} auc lo": lo, f"{proto} auc hi": hi})
        if proto == "held_out_kind":
            held = part.drop_duplicates("split").set_index("split")["held_out"]
            for split, s in samples.items():
                lo, hi = metrics.percentile_interval(s, level)
                row_out.update({f"unseen {held[split]} auc lo": lo, f"unseen {held[split]} auc hi": hi})
    return pd.DataFrame.from_dict(table, orient="index")


def protocol_leaderboard(results: pd.DataFrame, metrics: Sequence[str] = LEADER_METRICS,
                         folder: str | os.PathLike | None = None, n_boot: int = N_BOOT) -> pd.DataFrame:
    """ONE table: a row per model, columns ``<protocol> <metric>`` and ``<protocol> <metric> sd`` (mean and sd over
    seeds, each seed's figure the mean over the protocol's splits), ``<protocol> n_real`` (the fewest real clips of
    the protocol's eval parts: a TPR at FPR F is n/a -- NaN -- below 1/F of them), per-kind AUCs of ``plain`` /
    ``test`` and, for ``held_out_kind``, the AUC on each unseen kind (mean, sd); ``n_seeds``; parameters in millions.

    With ``folder`` (the run folder holding ``protocol_predictions/``), ``<protocol> auc lo`` / ``hi`` and
    ``unseen <kind> auc lo`` / ``hi``: bootstrap 95 % intervals of those means (``protocol_intervals``).
    """
    df = _seeded(results)
    ok = df[df["auc"].notna()] if "auc" in df else df.iloc[0:0]
    if ok.empty:
        return pd.DataFrame({"name": results.get("name", pd.Series(dtype=str)).unique()})
    table = pd.DataFrame(index=pd.Index(list(dict.fromkeys(results.name)), name="name"))
    intervals = protocol_intervals(ok, folder, n_boot) if folder is not None else pd.DataFrame()

    def put(out: str, part: pd.DataFrame, col: str, skipna: bool = True) -> None:
        table[out], table[f"{out} sd"] = _over_seeds(part, col, skipna)
        for end in (" lo", " hi"):
            if out + end in intervals:
                table[out + end] = intervals[out + end]

    present = [p for p in PROTOCOL_ORDER if p in set(ok.protocol)] + \
        sorted(set(ok.protocol) - set(PROTOCOL_ORDER))
    for proto in present:
        part = ok[ok.protocol == proto]
        for m in metrics:
            if m in part:
                put(f"{proto} {m}", part, m, skipna=m not in TPR_METRICS)
        if "n_real" in part:
            table[f"{proto} n_real"] = part.groupby("name")["n_real"].min()
        if proto == "held_out_kind":
            for held, g in part.groupby("held_out"):
                put(f"unseen {held} auc", g, "auc")
        elif proto in ("plain", "test"):
            for col in sorted(c for c in part.columns if c.startswith("auc[")):
                if part[col].notna().any():
                    put(f"{proto} {col}", part, col)
    table["n_seeds"] = ok.groupby("name")["seed"].nunique()
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
    table = table.reset_index()
    if table["name"].map(is_floor).any():
        table["floors"] = floor_flags(table)
    return table


def _cell(mean: float, sd: float = float("nan"), lo: float = float("nan"), hi: float = float("nan"),
          digits: int = 3) -> str:
    if not np.isfinite(mean):
        return "nan"
    text = f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if np.isfinite(sd) else "")
    return text + (f" [{lo:.{digits}f}, {hi:.{digits}f}]" if np.isfinite(lo) and np.isfinite(hi) else "")


def leaderboard_display(board: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The leaderboard as text, to read: ``<protocol> AUC`` "mean ± sd [bootstrap 95 %]", ``<protocol> TPR@1e-2``
    "mean ± sd (n_real N)" or "n/a (n_real N < 100)" (``metrics.tpr_label``), ``unseen <kind> AUC`` and
    ``<protocol> AUC[<kind>]``, then seeds, size, time, errors. The sd is left out with one seed, the interval
    without saved predictions."""
    out = pd.DataFrame({"name": board["name"]})

    def get(col: str) -> np.ndarray:
        return pd.to_numeric(board[col], errors="coerce").to_numpy(float) if col in board \
            else np.full(len(board), np.nan)

    for col in [c for c in board.columns if c.endswith(" auc") or (" auc[" in c and c.endswith("]"))]:
        out[col.replace(" auc", " AUC")] = [_cell(*v, digits=digits) for v in
                                            zip(get(col), get(col + " sd"), get(col + " lo"), get(col + " hi"))]
        proto = col[:-4]
        for m, fpr in TPR_METRICS.items():
            if not col.endswith(" auc") or f"{proto} {m}" not in board:
                continue
            out[f"{proto} TPR@{metrics.fpr_name(fpr)}"] = [
                metrics.tpr_label(v, int(n), fpr, digits, sd) if np.isfinite(n) else _cell(v, sd, digits=digits)
                for v, sd, n in zip(get(f"{proto} {m}"), get(f"{proto} {m} sd"), get(f"{proto} n_real"))]
    for col in ("floors", "n_seeds", "params_M", "train_time_s", "error"):
        if col in board:
            out[col] = board[col].round(2) if col in ("params_M", "train_time_s") else board[col]
    return out


def protocol_curves(results: pd.DataFrame, folder: str | os.PathLike) -> dict[str, dict[str, tuple]]:
    """{panel: {model: (targets, scores)}} from the saved eval predictions of each model's first seed. A protocol's
    splits are pooled into one panel when their eval parts are disjoint (cluster folds); held-out kinds get a panel
    each."""
    curves: dict[str, dict[str, tuple]] = {}
    if "predictions" not in results:
        return curves
    for row in results.dropna(subset=["predictions"]).drop_duplicates(["split", "name"]).itertuples():
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



DETAIL_COLUMNS = ("protocol", "split", "held_out", "name", "seed", "n_train", "n_eval", "n_eval_fake", "n_real", "auc",
                  "auc_ci_lo", "auc_ci_hi", "tpr@fpr=1e-2", "tpr@fpr=1e-3", "auc[*]", "pseudo_fakes_off",
                  "train_time_s", "reused_model", "error")


def detail_table(results: pd.DataFrame) -> pd.DataFrame:
    """The per-split rows with the columns worth reading (every ``auc[kind]`` where ``auc[*]`` stands)."""
    cols: list[str] = []
    for c in DETAIL_COLUMNS:
        cols += sorted(k for k in results if k.startswith("auc[")) if c == "auc[*]" else [c] if c in results else []
    return results[cols]
