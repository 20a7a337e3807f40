"""The challenge's numbers: ROC AUC (ranking), TPR at a fixed FPR (tie-break), EER, accuracy, F1, log loss."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
from sklearn.metrics import f1_score, log_loss, roc_auc_score, roc_curve

EPS = 1e-7


def _arrays(y_true: Sequence, y_score: Sequence) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(y_score, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"{len(y)} labels but {len(p)} scores")
    if not np.all(np.isfinite(p)):
        raise ValueError("scores contain NaN or infinity")
    return y, p


def auc(y_true: Sequence, y_score: Sequence) -> float:
    """ROC AUC; NaN when only one class is present (undefined, not 0.5)."""
    y, p = _arrays(y_true, y_score)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, p))


def tpr_at_fpr(y_true: Sequence, y_score: Sequence, fpr: float = 1e-3) -> float:
    """The highest TPR reachable with a false-positive rate at most ``fpr`` (no interpolation).

    With fewer than ``1/fpr`` real clips the only threshold meeting the bound admits no false positive at all,
    which is what this returns: an honest, pessimistic figure on small validation sets.
    """
    y, p = _arrays(y_true, y_score)
    if len(np.unique(y)) < 2:
        return float("nan")
    fprs, tprs, _ = roc_curve(y, p)
    ok = fprs <= fpr + 1e-12
    return float(tprs[ok].max()) if ok.any() else 0.0


def eer(y_true: Sequence, y_score: Sequence) -> float:
    """Equal error rate: where the false-positive rate equals the false-negative rate."""
    y, p = _arrays(y_true, y_score)
    if len(np.unique(y)) < 2:
        return float("nan")
    fprs, tprs, _ = roc_curve(y, p)
    fnrs = 1 - tprs
    i = int(np.nanargmin(np.abs(fnrs - fprs)))
    return float((fprs[i] + fnrs[i]) / 2)


def summarize(y_true: Sequence, y_score: Sequence, threshold: float = 0.5) -> dict[str, float]:
    """Every metric the workspace reports, as plain floats (NaN where undefined)."""
    y, p = _arrays(y_true, y_score)
    pc = np.clip(p, EPS, 1 - EPS)
    pred = (p >= threshold).astype(int)
    both = len(np.unique(y)) == 2
    hard = np.all((y == 0) | (y == 1))
    out = {
        "n": int(len(y)),
        "n_fake": int((y >= 0.5).sum()),
        "auc": auc(y, p),
        "tpr@fpr=1e-2": tpr_at_fpr(y, p, 1e-2),
        "tpr@fpr=1e-3": tpr_at_fpr(y, p, 1e-3),
        "eer": eer(y, p),
        "accuracy": float((pred == (y >= 0.5)).mean()) if len(y) else float("nan"),
        "f1": float(f1_score(y >= 0.5, pred, zero_division=0)) if len(y) else float("nan"),
        "log_loss": float(log_loss(y, pc, labels=[0, 1])) if (both and hard) else float("nan"),
    }
    return {k: (v if not (isinstance(v, float) and math.isinf(v)) else float("nan")) for k, v in out.items()}


GENERIC_KINDS = ("real", "fake")  # a kind column's placeholders where the manipulation is not known


def per_kind(y_true: Sequence, y_score: Sequence, kinds: Sequence, metric: Callable = auc) -> dict[str, Any]:
    """``metric`` of real clips against each manipulation kind alone: {kind: metric(reals + that kind's fakes)}.

    What an attack the model never saw costs shows here: the overall AUC averages it away. Rows whose kind is
    ``real``, ``fake`` (unknown) or missing contribute only as reals (when their target is 0).
    """
    y, s = np.asarray(y_true, float), np.asarray(y_score, float)
    k = np.asarray(["" if (v is None or (isinstance(v, float) and np.isnan(v))) else str(v) for v in kinds])
    real = y < 0.5
    out: dict[str, Any] = {}
    for kind in sorted(set(k[~real]) - set(GENERIC_KINDS) - {""}):
        part = real | ((k == kind) & ~real)
        out[kind] = metric(y[part], s[part])
    return out
