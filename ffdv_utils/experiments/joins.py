"""How much of the real-only score to join to a model's score: the weight sweep, from saved protocol predictions.

A run with ``real_only_weight`` w scores (1 - w) * model + w * real-only (``detector.real_only.combine``). Choosing
w needs no new training: the protocol loop saves, per split and seed, the model's own scores and the real-only
scores (the ``<candidate>[model]`` and ``<candidate>[real_only]`` rows of a joined candidate, or two candidates of
their own), and every w is a different mix of the same two columns. ``weight_sweep`` recomputes each protocol's AUC
for a grid of weights, as the leaderboard would report it (per seed the mean over the protocol's splits, then mean
and sd over seeds); ``held-out mean`` is the mean of the held-out protocols present (``held_out_kind``,
``held_out_identity``, ``cluster``): manipulations and people the model never saw, the figure to choose w by.
Never the ``test`` protocol's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..core import metrics
from ..core.plots import save_figure
from ..detector.real_only import combine

WEIGHTS = tuple(round(w, 2) for w in np.arange(0.0, 1.0001, 0.05))
HELD_OUT_PROTOCOLS = ("held_out_kind", "held_out_identity", "cluster")


def _predictions(results: pd.DataFrame, folder: Path, name: str) -> dict[tuple[str, Any], pd.DataFrame]:
    rows = results[(results.name == name) & results.predictions.notna()] if "predictions" in results else results[:0]
    return {(r.split, r.seed): pd.read_csv(folder / r.predictions, dtype={"video_name": str})
            for r in rows.itertuples()}


def weight_sweep(results: pd.DataFrame, folder: str | os.PathLike, model: str, real_only: str,
                 weights: Sequence[float] = WEIGHTS) -> pd.DataFrame:
    """Per weight (rows): ``<protocol> auc`` / ``auc sd`` over seeds of the joined score, and ``held-out mean``.

    Args:
        results: 05's per-split results (``protocol_results.csv``: protocol, split, name, seed, predictions).
        folder: the run folder the ``predictions`` paths are relative to.
        model: the rows holding the model's own scores (``<candidate>[model]``, or a candidate with weight 0).
        real_only: the rows holding the real-only scores (``<candidate>[real_only]``, or a candidate with weight 1);
            a split it has only one seed of (the real-only score does not depend on the training seed) pairs that
            seed with every seed of ``model``.
    """
    folder = Path(folder)
    df = results.copy()
    df["seed"] = df["seed"].fillna(-1) if "seed" in df else 0
    ms, ro = _predictions(df, folder, model), _predictions(df, folder, real_only)
    proto_of = dict(zip(df.split, df.protocol))
    rows = []
    for (split, seed), m in ms.items():
        r = ro.get((split, seed))
        if r is None:
            r = next((v for (s, _), v in ro.items() if s == split), None)
        if r is None or proto_of.get(split) == "test":
            continue
        both = m.merge(r[["video_name", "score"]], on="video_name", suffixes=("", "_ro"))
        for w in weights:
            rows.append({"weight": float(w), "protocol": proto_of[split], "split": split, "seed": seed,
                         "auc": metrics.auc(both.target, combine(both.score, both.score_ro, float(w)))})
    if not rows:
        raise ValueError(f"no split holds predictions of both {model!r} and {real_only!r} (test excluded)")
    long = pd.DataFrame(rows)
    per_seed = long.groupby(["weight", "protocol", "seed"]).auc.mean()
    stats = per_seed.groupby(["weight", "protocol"]).agg(["mean", "std"]).unstack("protocol")
    out = pd.DataFrame(index=stats.index)
    for proto in long.protocol.unique():
        out[f"{proto} auc"], out[f"{proto} auc sd"] = stats[("mean", proto)], stats[("std", proto)]
    held = [f"{p} auc" for p in HELD_OUT_PROTOCOLS if f"{p} auc" in out]
    if held:
        out["held-out mean"] = out[held].mean(axis=1)
    return out.reset_index()


def joined_candidates(results: pd.DataFrame) -> list[str]:
    """The candidates of ``results`` whose joined score has both parts as rows (``<label>[model]``, ``[real_only]``)."""
    if "part_of" not in results:
        return []
    parts = results.dropna(subset=["part_of"]).groupby("part_of").name.apply(set)
    return [label for label, names in parts.items() if {f"{label}[model]", f"{label}[real_only]"} <= names]


def plot_weight_sweep(sweep: pd.DataFrame, path: str | os.PathLike | None = None, chosen: float | None = None,
                      title: str = "") -> Any:
    """Each protocol's AUC against the real-only weight (0: the model alone, 1: the real-only score alone), with
    the held-out mean bold and the run's own weight marked."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.2, 3.8))
    for col in [c for c in sweep.columns if c.endswith(" auc")]:
        ax.plot(sweep.weight, sweep[col], marker=".", label=col[:-4])
        sd = sweep.get(col + " sd")
        if sd is not None and sd.notna().any():
            ax.fill_between(sweep.weight, sweep[col] - sd, sweep[col] + sd, alpha=0.15)
    if "held-out mean" in sweep:
        ax.plot(sweep.weight, sweep["held-out mean"], color="black", linewidth=2.2, label="held-out mean")
    if chosen is not None:
        ax.axvline(chosen, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("real_only_weight (0: model alone, 1: real-only score alone)")
    ax.set_ylabel("AUC (mean over seeds)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower center", ncol=3, bbox_to_anchor=(0.5, -0.42))
    fig.tight_layout()
    return save_figure(fig, path)
