import math

import numpy as np
import pytest

from ffdv_utils.core import metrics


def test_auc_matches_pair_counting():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = rng.random(200) + 0.3 * y
    pos, neg = s[y == 1], s[y == 0]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert metrics.auc(y, s) == pytest.approx(pairs)


def test_tpr_at_fpr_by_hand():
    # 4 reals, 4 fakes; one real outranks two fakes
    y = [0, 0, 0, 0, 1, 1, 1, 1]
    s = [0.1, 0.2, 0.3, 0.75, 0.9, 0.8, 0.7, 0.6]
    assert metrics.tpr_at_fpr(y, s, 0.0) == pytest.approx(0.5)   # above 0.75: two fakes, no real
    assert metrics.tpr_at_fpr(y, s, 0.25) == pytest.approx(1.0)  # one false positive allowed
    assert metrics.tpr_at_fpr(y, s, 1e-3) == pytest.approx(0.5)


def test_eer_perfect_and_random():
    assert metrics.eer([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == pytest.approx(0.0)
    assert metrics.eer([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.5)


def test_summarize_fields_and_undefined():
    m = metrics.summarize([0, 1, 1, 0], [0.2, 0.9, 0.4, 0.6])
    assert m["auc"] == pytest.approx(0.75)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(0.5)
    assert m["log_loss"] > 0
    one = metrics.summarize([1, 1], [0.3, 0.8])
    assert math.isnan(one["auc"]) and math.isnan(one["tpr@fpr=1e-3"])


def test_rejects_bad_scores():
    with pytest.raises(ValueError, match="NaN"):
        metrics.auc([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="labels"):
        metrics.auc([0, 1, 1], [0.1, 0.2])
