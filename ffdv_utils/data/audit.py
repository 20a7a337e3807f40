"""The shortcut audit: how well each metadata field alone (duration, size, codec, audio presence, leading silence)
predicts the label. A field far from AUC 0.5 is something a model can learn instead of the manipulation.
"""

from __future__ import annotations

from typing import Iterable

import pandas as pd

AUDIT_FIELDS = ("duration", "size_bytes", "width", "height", "fps", "n_frames", "has_audio", "sample_rate",
                "channels", "audio_duration", "leading_silence")


def shortcut_audit(index: pd.DataFrame, fields: Iterable[str] = AUDIT_FIELDS, limit: float = 0.7) -> pd.DataFrame:
    """ROC AUC of each metadata field alone against ``target``.

    A field far from 0.5 (either way) predicts the label without looking at the content: a model can learn it,
    score high on validation and fail on a test set made differently. ``suspicious`` marks
    max(AUC, 1 - AUC) >= ``limit``.
    """
    import numpy as np
    from sklearn.metrics import roc_auc_score

    rows = []
    y = index.target.to_numpy(float)
    for f in fields:
        if f not in index.columns:
            continue
        v = pd.to_numeric(index[f], errors="coerce").to_numpy(float)
        ok = np.isfinite(v)
        if ok.sum() < 4 or len(np.unique(y[ok])) < 2:
            auc = float("nan")
        elif len(np.unique(v[ok])) < 2:
            auc = 0.5  # a constant field carries no information
        else:
            auc = float(roc_auc_score(y[ok], v[ok]))
        best = max(auc, 1 - auc) if np.isfinite(auc) else float("nan")
        rows.append({"field": f, "auc": auc, "auc_best_direction": best, "n": int(ok.sum()),
                     "suspicious": bool(np.isfinite(best) and best >= limit)})
    return pd.DataFrame(rows)
