"""The challenge's numbers: ROC AUC (ranking), TPR at a fixed FPR (tie-break), EER, accuracy, F1, log loss, and how
far to trust them: a stratified bootstrap interval for AUC and "n/a" for a TPR at an FPR the real clips cannot
resolve (fewer than ``1/FPR`` of them)."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
from sklearn.metrics import f1_score, log_loss, roc_auc_score, roc_curve

EPS = 1e-7
TPR_FPRS = (1e-2, 1e-3)  # the FPRs every table reports a TPR at (FPR = 1e-3 is the challenge's tie-break)
N_BOOT = 1000            # bootstrap resamples of an AUC interval
BOOT_SEED = 0            # their seed: the same data gives the same interval
LEVEL = 0.95             # its coverage
_BOOT_CELLS = 4_000_000  # resamples x clips drawn at once (memory: a few tens of MB whatever the data size)


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


def min_reals(fpr: float) -> int:
    """The fewest real clips at which an FPR of ``fpr`` can be told apart from zero: ``1/fpr`` (100 for 1e-2)."""
    return math.ceil(1.0 / fpr - 1e-9)


def tpr_defined(n_real: int, fpr: float) -> bool:
    """Whether a TPR at ``fpr`` means what it says: at least ``1/fpr`` real clips (``min_reals``)."""
    return int(n_real) >= min_reals(fpr)


def tpr_at_fpr_or_na(y_true: Sequence, y_score: Sequence, fpr: float = 1e-3) -> float:
    """``tpr_at_fpr``, or NaN ("n/a") with fewer than ``1/fpr`` real clips, where that figure would only be the TPR
    with no false positive at all. What leaderboards report."""
    y, _ = _arrays(y_true, y_score)
    return tpr_at_fpr(y_true, y_score, fpr) if tpr_defined(int((y < 0.5).sum()), fpr) else float("nan")


def tpr_label(value: float, n_real: int, fpr: float, digits: int = 3, sd: float = float("nan")) -> str:
    """A table cell: ``"0.612 (n_real 1200)"`` (``"0.612 ± 0.020 (n_real 1200)"`` with a finite ``sd``), or
    ``"n/a (n_real 40 < 100)"`` below ``1/fpr`` real clips."""
    if not tpr_defined(n_real, fpr):
        return f"n/a (n_real {int(n_real)} < {min_reals(fpr)})"
    text = "nan" if not np.isfinite(value) else f"{value:.{digits}f}"
    return text + (f" ± {sd:.{digits}f}" if np.isfinite(sd) else "") + f" (n_real {int(n_real)})"


def weighted_aucs(real: np.ndarray, fake: np.ndarray, w_real: np.ndarray, w_fake: np.ndarray) -> np.ndarray:
    """AUC of each row of weights at once: ``w_real`` (B, n_real) and ``w_fake`` (B, n_fake) count how often each
    clip is drawn (a bootstrap resample); ties count one half. NaN for a row whose reals or fakes weigh nothing.

    Vectorised: the reals are sorted once; per row, the cumulative real weight is read at each fake's place among
    them (a sparse product carries the fakes' weights there), O(B (n_real + n_fake)) after one sort.
    """
    from scipy import sparse

    real, fake = np.asarray(real, float).ravel(), np.asarray(fake, float).ravel()
    w_real, w_fake = np.atleast_2d(np.asarray(w_real, float)), np.atleast_2d(np.asarray(w_fake, float))
    n_r, n_f = len(real), len(fake)
    order = np.argsort(real, kind="stable")
    sorted_real = real[order]
    cum = np.zeros((w_real.shape[0], n_r + 1))  # cum[:, j]: weight of the j lowest reals
    np.cumsum(w_real[:, order], axis=1, out=cum[:, 1:])
    lo = np.searchsorted(sorted_real, fake, side="left")   # reals strictly below each fake
    hi = np.searchsorted(sorted_real, fake, side="right")  # ... plus the tied ones
    rows = np.concatenate([np.arange(n_f), np.arange(n_f)])
    place = sparse.csr_matrix((np.full(2 * n_f, 0.5), (rows, np.concatenate([lo, hi]))), shape=(n_f, n_r + 1))
    at = np.asarray((place.T @ w_fake.T).T)  # (B, n_r + 1): fake weight at each place, ties split half and half
    den = w_real.sum(1) * w_fake.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (cum * at).sum(1) / den, np.nan)


def bootstrap_weights(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) draw counts: each row resamples ``n`` items with replacement (n uniform draws, counted)."""
    if n == 0:
        return np.zeros((n_boot, 0))
    idx = rng.integers(0, n, (n_boot, n)) + np.arange(n_boot)[:, None] * n
    return np.bincount(idx.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(float)


def boot_chunks(n_items: int, n_boot: int) -> list[int]:
    """Resamples per block so that a block's weights stay under ``_BOOT_CELLS`` cells."""
    step = max(1, min(n_boot, _BOOT_CELLS // max(1, n_items)))
    return [min(step, n_boot - i) for i in range(0, n_boot, step)]


def bootstrap_aucs(y_true: Sequence, y_score: Sequence, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> np.ndarray:
    """``n_boot`` AUCs of stratified resamples: the real clips and the fake clips are each resampled with replacement
    to their own count, so every resample keeps the class balance (and both classes). All NaN with one class."""
    y, p = _arrays(y_true, y_score)
    real, fake = p[y < 0.5], p[y >= 0.5]
    if len(real) == 0 or len(fake) == 0:
        return np.full(n_boot, np.nan)
    rng = np.random.default_rng(seed)
    out = []
    for b in boot_chunks(len(y), n_boot):
        out.append(weighted_aucs(real, fake, bootstrap_weights(len(real), b, rng), bootstrap_weights(len(fake), b, rng)))
    return np.concatenate(out)


def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central ``level`` interval of bootstrap samples (NaN ones left out; (NaN, NaN) when none is left)."""
    s = np.asarray(samples, float)
    s = s[np.isfinite(s)]
    if not len(s):
        return float("nan"), float("nan")
    a = (1 - level) / 2
    lo, hi = np.quantile(s, [a, 1 - a])
    return float(lo), float(hi)


def auc_interval(y_true: Sequence, y_score: Sequence, n_boot: int = N_BOOT, seed: int = BOOT_SEED,
                 level: float = LEVEL) -> tuple[float, float]:
    """Bootstrap ``level`` (95 %) percentile interval of the AUC, reals and fakes resampled separately
    (``bootstrap_aucs``), fixed seed: the same data always gives the same interval. (NaN, NaN) with one class."""
    return percentile_interval(bootstrap_aucs(y_true, y_score, n_boot, seed), level)


def eer(y_true: Sequence, y_score: Sequence) -> float:
    """Equal error rate: where the false-positive rate equals the false-negative rate."""
    y, p = _arrays(y_true, y_score)
    if len(np.unique(y)) < 2:
        return float("nan")
    fprs, tprs, _ = roc_curve(y, p)
    fnrs = 1 - tprs
    i = int(np.nanargmin(np.abs(fnrs - fprs)))
    return float((fprs[i] + fnrs[i]) / 2)


def summarize(y_true: Sequence, y_score: Sequence, threshold: float = 0.5, n_boot: int = N_BOOT) -> dict[str, Any]:
    """Every metric the workspace reports, as plain numbers (NaN where undefined).

    ``auc_ci_lo`` / ``auc_ci_hi``: the bootstrap 95 % interval of ``auc`` (``auc_interval``; ``n_boot=0`` skips it).
    ``tpr@fpr=F`` keeps ``tpr_at_fpr``'s figure (training may select on it); ``tpr@fpr=F n/a`` is True where fewer than
    ``1/F`` real clips make that figure "TPR with no false positive" rather than a TPR at ``F`` -- tables show n/a.
    """
    y, p = _arrays(y_true, y_score)
    n_real = int((y < 0.5).sum())
    pc = np.clip(p, EPS, 1 - EPS)
    pred = (p >= threshold).astype(int)
    both = len(np.unique(y)) == 2
    hard = np.all((y == 0) | (y == 1))
    out = {
        "n": int(len(y)),
        "n_fake": int((y >= 0.5).sum()),
        "n_real": n_real,
        "auc": auc(y, p),
        "tpr@fpr=1e-2": tpr_at_fpr(y, p, 1e-2),
        "tpr@fpr=1e-3": tpr_at_fpr(y, p, 1e-3),
        "eer": eer(y, p),
        "accuracy": float((pred == (y >= 0.5)).mean()) if len(y) else float("nan"),
        "f1": float(f1_score(y >= 0.5, pred, zero_division=0)) if len(y) else float("nan"),
        "log_loss": float(log_loss(y, pc, labels=[0, 1])) if (both and hard) else float("nan"),
    }
    lo, hi = auc_interval(y, p, n_boot) if n_boot else (float("nan"), float("nan"))
    out.update({"auc_ci_lo": lo, "auc_ci_hi": hi})
    out.update({f"tpr@fpr={fpr_name(f)} n/a": not tpr_defined(n_real, f) for f in TPR_FPRS})
    return {k: (v if not (isinstance(v, float) and math.isinf(v)) else float("nan")) for k, v in out.items()}


def fpr_name(fpr: float) -> str:
    """How an FPR is written in metric keys: ``1e-2``, ``1e-3``."""
    return f"{fpr:.0e}".replace("e-0", "e-")


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
