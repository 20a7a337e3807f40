"""Figures the notebooks show. Each function returns the matplotlib Figure (and saves it when given a path)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from .metrics import auc
from .paths import resolve_path

LABEL_NAMES = {0: "real", 1: "fake"}


def save_figure(fig: plt.Figure, path: str | Path | None) -> plt.Figure:
    """Save ``fig`` when ``path`` is given (relative paths resolve from the project root) and hand it back."""
    if path is not None:
        path = resolve_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def label_balance(df: pd.DataFrame, path: str | Path | None = None) -> plt.Figure:
    """Clips per split and label (needs ``split`` and ``target``)."""
    counts = df.groupby(["split", "target"]).size().unstack(fill_value=0).rename(columns=LABEL_NAMES)
    fig, ax = plt.subplots(figsize=(5, 3))
    counts.plot.bar(ax=ax, color=["tab:blue", "tab:red"][: counts.shape[1]])
    ax.set_ylabel("clips")
    ax.set_title("label balance")
    return save_figure(fig, path)


def metadata_hists(index: pd.DataFrame, fields: Sequence[str] = ("duration", "fps", "width", "sample_rate"),
                   path: str | Path | None = None) -> plt.Figure:
    """Histogram of media fields, real vs fake overlaid (a field that separates them is a shortcut)."""
    fields = [f for f in fields if f in index.columns]
    fig, axes = plt.subplots(1, len(fields), figsize=(3.2 * len(fields), 2.8), squeeze=False)
    for ax, f in zip(axes[0], fields):
        for t, color in ((0, "tab:blue"), (1, "tab:red")):
            v = pd.to_numeric(index.loc[index.target == t, f], errors="coerce").dropna()
            if len(v):
                ax.hist(v, bins=20, alpha=0.55, color=color, label=LABEL_NAMES[t])
        ax.set_title(f)
    axes[0][0].legend()
    fig.tight_layout()
    return save_figure(fig, path)


def shortcut_audit(audit: pd.DataFrame, path: str | Path | None = None) -> plt.Figure:
    """Bar chart of each metadata field's AUC alone (0.5 = no information; the red band marks suspicion)."""
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(audit) + 1))
    colors = ["tab:red" if s else "tab:gray" for s in audit.suspicious]
    ax.barh(audit.field, audit.auc_best_direction, color=colors)
    ax.axvline(0.5, color="k", lw=0.8)
    ax.axvspan(0.7, 1.0, color="tab:red", alpha=0.08)
    ax.set_xlim(0.4, 1.0)
    ax.set_xlabel("AUC of the field alone (best direction)")
    ax.set_title("shortcut audit")
    fig.tight_layout()
    return save_figure(fig, path)


def image_grid(images: Sequence[np.ndarray], titles: Sequence[str] | None = None, cols: int = 4,
               cmap: str | None = None, path: str | Path | None = None, size: float = 2.6) -> plt.Figure:
    """A grid of images (grey mel images or RGB frames)."""
    n = max(1, len(images))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, img in enumerate(images):
        ax = axes.ravel()[i]
        ax.imshow(img, cmap=cmap or ("magma" if img.ndim == 2 else None), aspect="auto", origin="lower"
                  if img.ndim == 2 else "upper")
        if titles:
            ax.set_title(titles[i], fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def training_curves(history: pd.DataFrame, path: str | Path | None = None) -> plt.Figure:
    """Loss and validation AUC / TPR per epoch."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.2))
    a.plot(history.epoch, history.train_loss, marker="o", label="train loss")
    if "val_log_loss" in history:
        a.plot(history.epoch, history.val_log_loss, marker="o", label="val log loss")
    a.set_xlabel("epoch")
    a.set_ylabel("loss")
    a.set_title("loss")
    a.legend()
    # the two TPR lines often coincide (few validation clips): distinct styles keep both visible
    styles = {"val_auc": dict(marker="o", ls="-", ms=6),
              "val_tpr@fpr=1e-2": dict(marker="s", ls="--", ms=7, mfc="none"),
              "val_tpr@fpr=1e-3": dict(marker="^", ls=":", ms=4)}
    for col, style in styles.items():
        if col in history:
            b.plot(history.epoch, history[col], label=col.replace("val_", ""), **style)
    b.set_ylim(-0.02, 1.02)
    b.set_xlabel("epoch")
    b.set_ylabel("AUC / TPR at the FPR")
    b.legend()
    b.set_title("validation")
    fig.tight_layout()
    return save_figure(fig, path)


def draw_roc(ax: plt.Axes, curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], log_fpr: bool = True,
             fpr_floor: float = 1e-3, fontsize: int = 8) -> plt.Axes:
    """ROC curves {label: (y_true, score)} on ``ax``, AUC in the legend; a log FPR axis from ``fpr_floor`` shows the
    low-FPR region the tie-break uses (TPR at FPR = 1e-3). Curves with one class only are left out."""
    styles = ("-", "--", "-.", ":")  # curves that coincide (or nearly) stay visible one over the other
    for i, (label, (y, s)) in enumerate(curves.items()):
        y, s = np.asarray(y, float), np.asarray(s, float)
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(np.maximum(fpr, fpr_floor / 10) if log_fpr else fpr, tpr, label=f"{label} (AUC {auc(y, s):.3f})",
                ls=styles[i % len(styles)], lw=2.2 - 0.4 * (i % 3), alpha=0.85)
    if log_fpr:
        ax.set_xscale("log")
        ax.set_xlim(fpr_floor, 1)
        ax.axvline(1e-3, color="k", ls=":", lw=0.8)
    ax.plot([fpr_floor / 10, 1], [fpr_floor / 10, 1], color="gray", lw=0.6, ls="--")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.legend(fontsize=fontsize, loc="lower right")
    return ax


def roc(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | Path | None = None,
        log_fpr: bool = True) -> plt.Figure:
    """ROC curves {label: (y_true, score)}; a log FPR axis shows the low-FPR region the tie-break uses."""
    fig, ax = plt.subplots(figsize=(5, 4.2))
    draw_roc(ax, curves, log_fpr)
    fig.tight_layout()
    return save_figure(fig, path)


def score_hist(y: Sequence[float], s: Sequence[float], path: str | Path | None = None) -> plt.Figure:
    """Score distributions of real and fake clips."""
    y, s = np.asarray(y), np.asarray(s)
    fig, ax = plt.subplots(figsize=(5, 3))
    for t, color in ((0, "tab:blue"), (1, "tab:red")):
        ax.hist(s[y == t], bins=20, range=(0, 1), alpha=0.55, color=color, label=LABEL_NAMES[t])
    ax.set_xlabel("score (probability of fake)")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def leaderboard(board: pd.DataFrame, metric: str = "val_auc", path: str | Path | None = None) -> plt.Figure:
    """Horizontal bars of ``metric`` per entry; entries over the parameter cap are hatched red."""
    board = board.sort_values(metric)
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(board) + 1.2))
    colors = ["tab:red" if o else "tab:green" for o in board.get("over_200M", [False] * len(board))]
    ax.barh(board["name"], board[metric], color=colors)
    for i, (v, t) in enumerate(zip(board[metric], board.get("train_time_s", [np.nan] * len(board)))):
        ax.text(v, i, f" {v:.3f}" + (f"  ({t:.0f} s)" if np.isfinite(t) else ""), va="center", fontsize=8)
    ax.set_xlim(0, 1.15)
    ax.set_xlabel(metric)
    fig.tight_layout()
    return save_figure(fig, path)


def auc_intervals(board: pd.DataFrame, path: str | Path | None = None) -> plt.Figure:
    """A panel per ``<x> auc`` column of a protocol leaderboard that has a bootstrap interval (``<x> auc lo`` /
    ``hi``): per model, the mean over seeds (dot), ± sd over seeds (thick bar, where ``<x> auc sd`` is defined) and
    the bootstrap 95 % interval (thin bar with end ticks); 0.5 (chance) dotted."""
    panels = [c[:-4] for c in board.columns if c.endswith(" auc") and f"{c} lo" in board and f"{c} hi" in board]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(3.3 * max(1, len(panels)), 0.45 * len(board) + 1.5),
                             sharey=True, squeeze=False)
    y = np.arange(len(board))
    for ax, panel in zip(axes[0], panels):
        col = f"{panel} auc"
        mean, lo, hi = (pd.to_numeric(board[c], errors="coerce").to_numpy(float) for c in (col, f"{col} lo",
                                                                                           f"{col} hi"))
        sd = pd.to_numeric(board[f"{col} sd"], errors="coerce").to_numpy(float) if f"{col} sd" in board \
            else np.full(len(board), np.nan)
        ax.hlines(y, lo, hi, color="tab:blue", lw=1.2, label="bootstrap 95 %")
        ax.plot(lo, y, "|", hi, y, "|", color="tab:blue", ms=9)
        if np.isfinite(sd).any():
            ax.hlines(y, mean - sd, mean + sd, color="tab:orange", lw=5, alpha=0.6, label="± sd over seeds")
        ax.plot(mean, y, "o", color="k", ms=4, label="mean over seeds")
        ax.axvline(0.5, color="gray", ls=":", lw=0.8)
        finite = np.concatenate([lo[np.isfinite(lo)], mean[np.isfinite(mean)], [0.5]])
        ax.set_xlim(max(0.0, finite.min() - 0.05), 1.01)
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("AUC")
    axes[0][0].set_yticks(y)
    axes[0][0].set_yticklabels(list(board["name"]))
    axes[0][0].invert_yaxis()
    if not panels:
        axes[0][0].text(0.5, 0.5, "no intervals (no saved predictions)", ha="center", va="center")
        axes[0][0].axis("off")
    fig.tight_layout()
    if panels:  # below the panels, where it hides no model
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=8, frameon=False)
    return save_figure(fig, path)
