"""The real-only weight sweep (``experiments.joins``): every weight recomputed from the two saved score columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ffdv_utils.core import metrics
from ffdv_utils.experiments.joins import joined_candidates, plot_weight_sweep, weight_sweep
from ffdv_utils.detector.real_only import combine


def _results(tmp_path) -> tuple[pd.DataFrame, dict]:
    """Two protocols (plain: 1 split, held_out_kind: 2) and a test split, 2 seeds of a model, 1 of the real-only
    score (it does not depend on the training seed)."""
    rng = np.random.default_rng(0)
    rows, frames = [], {}
    (tmp_path / "p").mkdir()
    for proto, split in (("plain", "plain"), ("held_out_kind", "holdout-a"), ("held_out_kind", "holdout-b"),
                         ("test", "test")):
        target = np.r_[np.zeros(30), np.ones(20)]
        names = [f"{split}{i}" for i in range(50)]
        for name, seeds, signal in (("m", (42, 43), 0.8), ("r", (42,), 1.6)):
            for seed in seeds:
                score = 1 / (1 + np.exp(-(target * signal + rng.normal(0, 1, 50))))
                path = f"p/{split}__{name}-{seed}.csv"
                frames[(name, split, seed)] = df = pd.DataFrame({"video_name": names, "target": target,
                                                                 "score": score})
                df.to_csv(tmp_path / path, index=False)
                rows.append({"protocol": proto, "split": split, "name": name, "seed": seed, "predictions": path})
    return pd.DataFrame(rows), frames


def test_the_sweep_mixes_the_two_saved_columns_at_every_weight(tmp_path) -> None:
    results, frames = _results(tmp_path)
    sweep = weight_sweep(results, tmp_path, "m", "r", weights=(0.0, 0.3, 1.0))
    assert list(sweep.weight) == [0.0, 0.3, 1.0] and "test auc" not in sweep  # never the test split

    def expected(proto_splits, w, seed):
        aucs = []
        for split in proto_splits:
            m, r = frames[("m", split, seed)], frames[("r", split, 42)]  # the one real-only seed pairs with each
            aucs.append(metrics.auc(m.target, combine(m.score, r.score, w)))
        return float(np.mean(aucs))

    for w in (0.0, 0.3, 1.0):
        row = sweep[sweep.weight == w].iloc[0]
        per_seed = [expected(["holdout-a", "holdout-b"], w, s) for s in (42, 43)]
        assert row["held_out_kind auc"] == pytest.approx(np.mean(per_seed))
        assert row["held_out_kind auc sd"] == pytest.approx(np.std(per_seed, ddof=1))
        assert row["plain auc"] == pytest.approx(np.mean([expected(["plain"], w, s) for s in (42, 43)]))
        assert row["held-out mean"] == pytest.approx(row["held_out_kind auc"])  # the only held-out protocol
    assert sweep["held_out_kind auc sd"].iloc[-1] == pytest.approx(0.0)  # weight 1: the seed-free score alone
    assert plot_weight_sweep(sweep, tmp_path / "sweep.png", chosen=0.3) is not None
    assert (tmp_path / "sweep.png").stat().st_size > 0
    with pytest.raises(ValueError, match="no split holds"):
        weight_sweep(results, tmp_path, "m", "nobody")


def test_joined_candidates_are_those_with_both_parts() -> None:
    results = pd.DataFrame({"name": ["j", "j[model]", "j[real_only]", "k", "k[model]"],
                            "part_of": [None, "j", "j", None, "k"]})
    assert joined_candidates(results) == ["j"]
    assert joined_candidates(results.drop(columns="part_of")) == []
