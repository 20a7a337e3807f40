"""Honest evaluation: bootstrap AUC intervals, TPR n/a below 1/FPR real clips, leaderboards over seeds, and the
held-out-kind hook that switches off the paired pseudo-fake family."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from ffdv_utils.core import metrics, plots
from ffdv_utils.data.splits import Split
from ffdv_utils.experiments.candidates import iter_candidates, seed_list, seed_suffix
from ffdv_utils.experiments.protocol_report import (
    leaderboard_display,
    paired_bootstrap,
    protocol_intervals,
    protocol_leaderboard,
)
from ffdv_utils.experiments.protocols import (
    HELD_OUT_PAIRING,
    PSEUDO_OFF_KEY,
    evaluate_scores,
    fold_overrides,
    run_protocols,
)
from ffdv_utils.training.loop import FitResult

# ----------------------------------------------------------------------------------------------------------------
# the bootstrap


def test_weighted_aucs_equal_sklearn_on_the_repeated_clips() -> None:
    """Each row of draw counts gives the AUC of the data set with every clip repeated that often (ties included)."""
    rng = np.random.default_rng(3)
    real, fake = np.round(rng.random(40), 1), np.round(rng.random(25) + 0.2, 1)  # rounded: many ties
    w_real, w_fake = rng.integers(0, 4, (6, 40)).astype(float), rng.integers(0, 4, (6, 25)).astype(float)
    got = metrics.weighted_aucs(real, fake, w_real, w_fake)
    for i in range(6):
        r, f = np.repeat(real, w_real[i].astype(int)), np.repeat(fake, w_fake[i].astype(int))
        want = roc_auc_score(np.r_[np.zeros(len(r)), np.ones(len(f))], np.r_[r, f])
        assert got[i] == pytest.approx(want, abs=1e-12)
    assert metrics.weighted_aucs(real, fake, np.ones((1, 40)), np.ones((1, 25)))[0] == pytest.approx(
        metrics.auc(np.r_[np.zeros(40), np.ones(25)], np.r_[real, fake]))


def test_interval_is_fixed_by_its_seed_and_in_summarize() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = rng.random(300) + 0.4 * y
    a, b = metrics.auc_interval(y, s), metrics.auc_interval(y, s)
    assert a == b  # same data, same interval
    assert metrics.auc_interval(y, s, seed=1) != a  # the seed is what fixes it
    lo, hi = a
    assert lo < metrics.auc(y, s) < hi
    m = metrics.summarize(y, s)
    assert (m["auc_ci_lo"], m["auc_ci_hi"]) == a
    assert m["n_real"] == int((y == 0).sum()) and m["n_fake"] == int((y == 1).sum())


def test_resampling_is_stratified() -> None:
    """2 reals and 2 fakes: pooled resampling would draw a one-class set (AUC undefined) about 1 time in 8."""
    aucs = metrics.bootstrap_aucs([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], n_boot=1000)
    assert np.isfinite(aucs).all()
    assert metrics.auc_interval([0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.8, 0.9]) == (1.0, 1.0)  # separated stays so
    assert all(math.isnan(v) for v in metrics.auc_interval([1, 1, 1], [0.1, 0.5, 0.9]))


def test_interval_covers_the_true_auc_and_narrows_like_root_n() -> None:
    """Binormal scores (reals N(0,1), fakes N(1,1)): true AUC = Phi(1/sqrt 2). Over 200 data sets the 95 % interval
    holds it about 95 % of the time, its width matches Hanley & McNeil's standard error, and it halves from 60 to
    240 clips per class."""
    true_auc = norm.cdf(1 / math.sqrt(2))
    rng = np.random.default_rng(11)

    def hanley_mcneil(a: float, n: int) -> float:
        q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
        return math.sqrt((a * (1 - a) + (n - 1) * (q1 - a * a) + (n - 1) * (q2 - a * a)) / (n * n))

    widths = {}
    for n in (60, 240):
        hits, w = 0, []
        for i in range(200 if n == 60 else 40):
            y = np.r_[np.zeros(n), np.ones(n)]
            s = np.r_[rng.normal(0, 1, n), rng.normal(1, 1, n)]
            lo, hi = metrics.auc_interval(y, s, seed=i)
            hits += lo <= true_auc <= hi
            w.append(hi - lo)
        widths[n] = float(np.mean(w))
        if n == 60:
            assert 0.90 <= hits / 200 <= 0.99, hits
        assert widths[n] == pytest.approx(2 * 1.96 * hanley_mcneil(true_auc, n), rel=0.15)
    assert widths[240] / widths[60] == pytest.approx(0.5, abs=0.08)


# ----------------------------------------------------------------------------------------------------------------
# TPR n/a


def test_tpr_is_na_exactly_below_one_over_fpr_real_clips() -> None:
    rng = np.random.default_rng(5)
    for fpr, need in ((1e-2, 100), (1e-3, 1000)):
        assert metrics.min_reals(fpr) == need
        for n_real in (need - 1, need):
            y = np.r_[np.zeros(n_real), np.ones(50)]
            s = np.r_[rng.random(n_real), rng.random(50) + 0.5]
            honest = metrics.tpr_at_fpr_or_na(y, s, fpr)
            m = metrics.summarize(y, s, n_boot=0)
            key = f"tpr@fpr={metrics.fpr_name(fpr)}"
            assert m[key] == metrics.tpr_at_fpr(y, s, fpr)  # summarize keeps the old figure (training selects on it)
            if n_real < need:
                assert math.isnan(honest) and m[key + " n/a"]
                assert metrics.tpr_label(0.4, n_real, fpr) == f"n/a (n_real {n_real} < {need})"
            else:
                assert honest == metrics.tpr_at_fpr(y, s, fpr) and not m[key + " n/a"]
                assert metrics.tpr_label(0.4, n_real, fpr) == f"0.400 (n_real {n_real})"


def test_evaluate_scores_reports_na_with_the_real_count() -> None:
    n_real = 150
    ev = pd.DataFrame({"video_name": [f"c{i}" for i in range(n_real + 30)], "target": [0] * n_real + [1] * 30})
    scores = ev[["video_name"]].assign(score=np.linspace(0, 1, len(ev)))
    m = evaluate_scores(Split("plain", "plain", ev.iloc[:0], ev), scores)
    assert m["n_real"] == n_real and m["tpr@fpr=1e-2"] == 1.0 and not m["tpr@fpr=1e-2 n/a"]
    assert math.isnan(m["tpr@fpr=1e-3"]) and m["tpr@fpr=1e-3 n/a"]
    assert m["auc_ci_lo"] <= m["auc"] <= m["auc_ci_hi"]


# ----------------------------------------------------------------------------------------------------------------
# leaderboards over seeds


def _predictions(folder, n_real: int, n_fake: int, seeds: list[int], rng, name: str, split: str,
                 kind: str = "") -> list[dict]:
    """One saved prediction file per seed (the same clips, scores a little different per seed) and its rows."""
    rows = []
    y = np.r_[np.zeros(n_real), np.ones(n_fake)]
    base = np.r_[rng.normal(0, 1, n_real), rng.normal(1.2, 1, n_fake)]
    for seed in seeds:
        s = base + rng.normal(0, 0.3, len(y))
        rel = f"protocol_predictions/{split}__{name}-s{seed}.csv"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"video_name": [f"f{kind}{i}" if t else f"r{i}" for i, t in enumerate(y)],
                      "target": y, "score": s}).to_csv(folder / rel, index=False)
        m = metrics.summarize(y, s, n_boot=0)
        rows.append({"protocol": "held_out_kind" if kind else "plain", "split": split, "held_out": kind,
                     "name": name, "seed": seed, "n_real": n_real, "auc": m["auc"],
                     "tpr@fpr=1e-2": m["tpr@fpr=1e-2"], "tpr@fpr=1e-3": m["tpr@fpr=1e-3"], "predictions": rel})
    return rows


def test_leaderboard_mean_sd_interval_and_na(tmp_path) -> None:
    rng = np.random.default_rng(2)
    seeds = [42, 43, 44]
    rows = _predictions(tmp_path, 150, 60, seeds, rng, "fusion", "plain")
    for kind in ("audio", "visual"):
        rows += _predictions(tmp_path, 150, 30, seeds, rng, "fusion", f"holdout-{kind}", kind)
    rows += _predictions(tmp_path, 40, 60, seeds, rng, "audio", "plain")
    results = pd.DataFrame(rows)
    board = protocol_leaderboard(results, folder=tmp_path).set_index("name")

    per_seed = results[results.name == "fusion"].groupby(["protocol", "seed"]).auc.mean()
    held = per_seed["held_out_kind"]  # each seed's mean over its two held-out kinds
    assert board.loc["fusion", "held_out_kind auc"] == pytest.approx(held.mean())
    assert board.loc["fusion", "held_out_kind auc sd"] == pytest.approx(held.std(ddof=1))  # sd over seeds
    assert board.loc["fusion", "held_out_kind auc sd"] != pytest.approx(
        results[results.protocol == "held_out_kind"].auc.std(ddof=1))  # ... not over all (split, seed) rows
    assert board.loc["fusion", "n_seeds"] == 3
    for col in ("plain auc", "held_out_kind auc", "unseen audio auc"):
        assert board.loc["fusion", f"{col} lo"] < board.loc["fusion", col] < board.loc["fusion", f"{col} hi"]
    # n/a: 150 reals resolve FPR 1e-2 but not 1e-3; 40 reals resolve neither
    assert np.isfinite(board.loc["fusion", "plain tpr@fpr=1e-2"]) and board.loc["fusion", "plain n_real"] == 150
    assert math.isnan(board.loc["fusion", "plain tpr@fpr=1e-3"]) and math.isnan(board.loc["audio", "plain tpr@fpr=1e-2"])
    shown = leaderboard_display(board.reset_index()).set_index("name")
    assert shown.loc["audio", "plain TPR@1e-2"] == "n/a (n_real 40 < 100)"
    assert shown.loc["fusion", "plain TPR@1e-3"] == "n/a (n_real 150 < 1000)"
    assert shown.loc["fusion", "plain TPR@1e-2"].endswith("(n_real 150)") and " ± " in shown.loc["fusion", "plain AUC"]
    fig = plots.auc_intervals(board.reset_index())
    assert [ax.get_title() for ax in fig.axes] == ["plain", "held_out_kind", "unseen audio", "unseen visual"]


def test_interval_is_paired_over_seeds(tmp_path) -> None:
    """One split, one seed: the leaderboard's interval is the plain bootstrap of those predictions. Three seeds that
    predict the same scores give the same interval (paired resamples): seeds do not pass for more clips."""
    rng = np.random.default_rng(4)
    rows = _predictions(tmp_path, 80, 50, [1], rng, "m", "plain")
    pred = pd.read_csv(tmp_path / rows[0]["predictions"])
    one = protocol_intervals(pd.DataFrame(rows), tmp_path).loc["m"]
    assert (one["plain auc lo"], one["plain auc hi"]) == metrics.auc_interval(pred.target, pred.score)
    copies = [pred, pred.copy(), pred.copy()]
    three = metrics.percentile_interval(paired_bootstrap({"plain": copies})["plain"])
    assert three == pytest.approx((one["plain auc lo"], one["plain auc hi"]), abs=1e-12)


def test_seed_list_and_run_labels() -> None:
    assert seed_list(None, 42) == [42] and seed_list(3, 42) == [42, 43, 44]
    assert seed_list([7, 7, 1], 42) == [7, 1]
    with pytest.raises(ValueError):
        seed_list(0, 42)
    assert seed_suffix(42, 42) == "" and seed_suffix(43, 42) == "-s43"
    base = {"model_type": "audio", "model": "test_resnet", "seed": 42}
    got = list(iter_candidates(base, [{"name": "a"}], seeds=2))
    assert [(label, row["name"], row["seed"], params["seed"]) for label, _, params, row in got] == \
        [("a", "a", 42, 42), ("a-s43", "a", 43, 43)]
    assert [label for label, *_ in iter_candidates(base, [{"name": "a"}])] == ["a"]  # no seeds: as before


# ----------------------------------------------------------------------------------------------------------------
# the held-out-kind hook and the seeds loop of run_protocols


def test_fold_overrides_switch_off_the_paired_family_only_where_a_stage_reads_it() -> None:
    ev = pd.DataFrame({"video_name": ["a"], "target": [0]})
    held = Split("held_out_kind", "holdout-audio", ev, ev, held_out="audio")
    plain = Split("plain", "plain", ev, ev)
    assert fold_overrides(held, {"lr": 1.0}) == {}  # no pseudo-fake stage: the fold's parameters are untouched
    assert fold_overrides(held, {PSEUDO_OFF_KEY: None}) == {PSEUDO_OFF_KEY: list(HELD_OUT_PAIRING["audio"])}
    assert fold_overrides(held, {PSEUDO_OFF_KEY: ["splice"]}) == \
        {PSEUDO_OFF_KEY: ["splice", *HELD_OUT_PAIRING["audio"]]}
    assert fold_overrides(plain, {PSEUDO_OFF_KEY: []}) == {}
    assert fold_overrides(Split("held_out_kind", "h", ev, ev, held_out="lipsync_gan"), {PSEUDO_OFF_KEY: []}) == {}
    assert set(HELD_OUT_PAIRING) == {"audio", "visual", "av_mismatch"}  # every fake kind of the sample data


@pytest.fixture()
def tiny_root(tmp_path):
    """An FFDV-layout folder with empty video files and a kinds CSV (the protocols need names, labels, kinds)."""
    root = tmp_path / "data"
    rows = []
    for split, folder, n in (("train", "trainset", 16), ("val", "valset", 12)):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            kind = ("real", "audio", "visual", "av_mismatch")[i % 4]
            name = f"{split}{i:02d}.mp4"
            (root / folder / name).write_bytes(b"")
            rows.append((name, split, int(kind != "real"), kind))
    df = pd.DataFrame(rows, columns=["video_name", "split", "target", "kind"])
    for split in ("train", "val"):
        df[df.split == split][["video_name", "target"]].to_csv(root / f"{split}_label.txt", index=False)
    df.to_csv(tmp_path / "manipulations.csv", index=False)
    return root


def test_run_protocols_trains_once_per_seed_and_applies_the_hook(tiny_root, tmp_path, monkeypatch) -> None:
    """The protocol loop with ``fit`` stubbed (its own tests train for real): 2 seeds, each its own run folder and
    ``seed`` parameter; the held-out folds get the paired family off when the parameters declare the key."""
    monkeypatch.setenv("FFDV_OUTPUTS", str(tmp_path / "out"))
    calls = []

    def fake_fit(params, run):
        calls.append(dict(params))
        names = pd.read_csv(params["split_csv"]).query("part == 'eval'")
        rng = np.random.default_rng(params["seed"])
        val = pd.DataFrame({"video_name": names.video_name, "target": names.target,
                            "score": names.target * 0.5 + rng.random(len(names))})
        val.to_csv(run.path("val_predictions.csv"), index=False)
        return FitResult({"train_time_s": 0.1, "best_epoch": 1}, val)

    monkeypatch.setattr("ffdv_utils.experiments.protocols.fit", fake_fit)
    cand = [{"name": "tiny", "model_type": "audio", "model": "test_resnet"}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no 03 record: the training defaults
        results = run_protocols("seeds", tiny_root, cand, ["plain", "held_out_kind"],
                                kinds_csv=tmp_path / "manipulations.csv", shared={PSEUDO_OFF_KEY: []}, seeds=2)
    assert len(calls) == 2 * 4  # (plain + 3 held-out kinds) x 2 seeds
    assert sorted({c["seed"] for c in calls}) == [42, 43]
    assert {c["run_name"] for c in calls if c["seed"] == 43} >= {"seeds-tiny-s43-plain", "seeds-tiny-s43-holdout-audio"}
    assert "seeds-tiny-plain" in {c["run_name"] for c in calls}  # the own seed keeps today's folder name
    for c in calls:
        kind = c["run_name"].rsplit("holdout-", 1)[-1] if "holdout-" in c["run_name"] else None
        assert c[PSEUDO_OFF_KEY] == (list(HELD_OUT_PAIRING[kind]) if kind else [])
    assert sorted(results.seed.unique()) == [42, 43] and results.predictions.nunique() == 8
    assert set(results.loc[results.protocol == "held_out_kind", "pseudo_fakes_off"]) == \
        {",".join(v) for v in HELD_OUT_PAIRING.values()}
    board = protocol_leaderboard(results, folder=tmp_path / "out" / "seeds").iloc[0]
    assert board["n_seeds"] == 2 and np.isfinite(board["plain auc sd"]) and np.isfinite(board["plain auc lo"])
    # without a pseudo-fake stage (no such key in the training parameters) the same loop leaves them alone
    from ffdv_utils.experiments import protocols

    plain_base = protocols.base_train_params
    monkeypatch.setattr(protocols, "base_train_params", lambda *a: {k: v for k, v in plain_base(*a).items()
                                                                     if k != PSEUDO_OFF_KEY})
    calls.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        run_protocols("plain1", tiny_root, cand, ["held_out_kind"], kinds_csv=tmp_path / "manipulations.csv")
    assert len(calls) == 3 and all(PSEUDO_OFF_KEY not in c and c["seed"] == 42 for c in calls)


def test_a_joined_score_reports_its_parts_as_rows_of_their_own(tiny_root, tmp_path, monkeypatch) -> None:
    """A run with a real-only score writes model_score and real_only_score beside the joined score: the protocol
    loop turns them into ``<label>[model]`` and ``<label>[real_only]`` rows with their own predictions, from the same
    training (no second fit)."""
    monkeypatch.setenv("FFDV_OUTPUTS", str(tmp_path / "out"))
    calls = []

    def fake_fit(params, run):
        calls.append(params["run_name"])
        names = pd.read_csv(params["split_csv"]).query("part == 'eval'")
        rng = np.random.default_rng(params["seed"])
        model, ro = names.target * 0.3 + rng.random(len(names)), names.target * 0.9 + 0.1 * rng.random(len(names))
        val = pd.DataFrame({"video_name": names.video_name, "target": names.target, "score": 0.5 * model + 0.5 * ro,
                            "model_score": model, "real_only_score": ro})
        val.to_csv(run.path("val_predictions.csv"), index=False)
        return FitResult({"train_time_s": 0.1, "best_epoch": 1}, val)

    monkeypatch.setattr("ffdv_utils.experiments.protocols.fit", fake_fit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        results = run_protocols("parts", tiny_root, [{"name": "j", "real_only_weight": 0.5}], ["plain"], seeds=2)
    assert calls == ["parts-j-plain", "parts-j-s43-plain"]  # one training per seed for three rows
    assert list(results.name) == ["j", "j[model]", "j[real_only]"] * 2  # the parts of both seeds share a name
    assert list(results.seed) == [42] * 3 + [43] * 3
    folder = tmp_path / "out" / "parts"
    assert results.predictions.nunique() == 6
    results = results[results.seed == 42]
    preds = {n: pd.read_csv(folder / p) for n, p in zip(results.name, results.predictions)}
    val = pd.read_csv(folder.parent / "parts-j-plain" / "val_predictions.csv")
    for name, col in (("j", "score"), ("j[model]", "model_score"), ("j[real_only]", "real_only_score")):
        assert np.allclose(preds[name].set_index("video_name").score, val.set_index("video_name")[col]
                           .loc[preds[name].video_name])
    auc = dict(zip(results.name, results.auc))
    assert auc["j[real_only]"] > auc["j[model]"]  # each row scored on its own part
    board = protocol_leaderboard(pd.read_csv(folder / "protocol_results.csv"), folder=folder)
    assert set(board.name) == {"j", "j[model]", "j[real_only]"} and board["plain auc lo"].notna().all()
    assert (board.n_seeds == 2).all()


def test_two_seed_protocol_run_on_the_sample_data(sample, session_outputs) -> None:
    """The real loop (training included) on the 24-clip sample: two seeds train two different models."""
    shared = {"model": "test_resnet", "image_size": 64, "batch_size": 8, "epochs": 1, "feature_workers": 1,
              "face_frames": 2, "face_size": 32}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        results = run_protocols("seeds2", sample["data_root"], [{"name": "a", "model_type": "audio"}], ["plain"],
                                shared=shared, seeds=[1, 2])
    assert "error" not in results or results.error.isna().all(), results.get("error")
    assert list(results.seed) == [1, 2] and results.run.nunique() == 2
    preds = [pd.read_csv(session_outputs / "seeds2" / p).score.to_numpy() for p in results.predictions]
    assert not np.allclose(preds[0], preds[1])  # the seed reached training
    board = protocol_leaderboard(results, folder=session_outputs / "seeds2").iloc[0]
    assert board["n_seeds"] == 2 and board["plain auc"] == pytest.approx(results.auc.mean())
    assert board["plain auc sd"] == pytest.approx(results.auc.std(ddof=1))
    assert board["plain auc lo"] <= board["plain auc hi"] and math.isnan(board["plain tpr@fpr=1e-2"])  # < 100 reals
