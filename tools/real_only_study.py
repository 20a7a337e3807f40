"""Which statistics and which combination make the real-only score (detector.real_only) generalise?

The real-only score never sees a fake, so every fake kind of the validation split is unseen by it, and so is every
pseudo-fake family (``ffdv_utils.pseudo``): its AUC per kind is a held-out figure on train/val only. This study fits
on the real training clips of a run's feature cache and scores, never the test split:

- the validation split's own fake kinds against its real clips;
- pseudo-fakes made from the validation split's real clips, one set per family, on the whole clip and (``partial``)
  confined to one segment -- every axis a deepfake can break, whole or in part, including those the validation
  kinds do not cover (partial manipulations);

and prints, per design (a set of groups of ``STAT_GROUPS``; one Gaussian over all their columns, or one per group
joined by the max or the sum of their tail probabilities), the AUC per kind, the mean over the validation kinds, the
mean over the pseudo-fake sets and ``mean_all``, the mean over both (the criterion ``real_only_groups`` is chosen
by). Each statistic's own AUC (two-sided: |z| from the real training clips) is listed first.

    python tools/real_only_study.py --run NAME -f params/best.yaml --data-root SAMPLE/data \
        --kinds SAMPLE/answers/manipulations.csv [--out FILE.csv]

The features come from the cache (extracted when missing); the statistics tables are written to
``outputs/NAME/real_only_stats.csv`` and ``real_only_pseudo_stats.csv`` and reused (delete them after changing the
statistics or the families).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from ffdv_utils.core import metrics
from ffdv_utils.core.config import read_yaml
from ffdv_utils.core.paths import run_dir
from ffdv_utils.core.schema import TRAIN_DEFAULTS
from ffdv_utils.data.labels import labelled_frame
from ffdv_utils.pseudo import FAMILIES, PseudoFakes
from ffdv_utils.detector.real_only import RealOnlyModel
from ffdv_utils.features.statistics import STAT_GROUPS, clip_statistics


def _params(params_file: Path, data_root: Path) -> dict:
    return {**TRAIN_DEFAULTS, **read_yaml(params_file), "data_root": str(data_root)}


def statistics_table(run: str, params_file: Path, data_root: Path, kinds_csv: Path) -> pd.DataFrame:
    cached = run_dir(run) / "real_only_stats.csv"
    if cached.is_file():
        return pd.read_csv(cached)
    clips = labelled_frame(data_root)
    kinds = pd.read_csv(kinds_csv)[["video_name", "kind"]]
    clips = clips.drop(columns="kind", errors="ignore").merge(kinds, on="video_name", how="left")
    table = clip_statistics(_params(params_file, data_root), clips, progress=True)
    table.to_csv(cached, index=False)
    return table


def pseudo_table(run: str, params_file: Path, data_root: Path) -> pd.DataFrame:
    """Statistics of pseudo-fakes of the validation split's real clips: per family, whole and partial (kind
    ``pf:<family>`` and ``pf:<family>/partial``), target 1."""
    cached = run_dir(run) / "real_only_pseudo_stats.csv"
    if cached.is_file():
        return pd.read_csv(cached)
    clips = labelled_frame(data_root, splits=("val",))
    real = clips[clips.target == 0].reset_index(drop=True)
    params, parts = _params(params_file, data_root), []
    for family in FAMILIES:
        for local, suffix in ((0.0, ""), (1.0, "/partial")):
            t = clip_statistics(params, real, pseudo=PseudoFakes({family: 1.0}, seed=0, variants=4, local=local))
            t["kind"], t["target"], t["split"] = f"pf:{family}{suffix}", 1, "val"
            parts.append(t)
    table = pd.concat(parts, ignore_index=True)
    table.to_csv(cached, index=False)
    return table


def group_scores(model_by_group: dict[str, RealOnlyModel], table: pd.DataFrame, how: str) -> np.ndarray:
    """Per group: the chi-squared tail probability of its distance (k = its columns); joined by max or sum of
    -log tail."""
    logs = []
    for m in model_by_group.values():
        d = m.distance(table)
        tail = -sps.chi2.logsf(d, df=len(m.columns))
        logs.append(np.where(np.isfinite(tail), tail, d / 2))  # far out, -log tail grows like d / 2
    logs = np.stack(logs)
    return logs.max(0) if how == "max" else logs.sum(0)


def design_sets() -> dict[str, list[str]]:
    """The sets of groups the study compares."""
    groups = list(STAT_GROUPS)
    current = ["sync", "voice", "face", "prosody"]
    sets = {"all": groups, "current": current}
    sets.update({f"all-{g}": [h for h in groups if h != g] for g in groups})
    sets.update({f"current+{g}": current + [g] for g in groups if g not in current})
    sets.update({f"current-{g}": [h for h in current if h != g] for g in current})
    sets["current+local-face"] = ["sync", "voice", "prosody", "local"]
    return sets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="folder under outputs/ for the statistics tables")
    ap.add_argument("-f", dest="params", required=True, type=Path, help="parameter file (the features' settings)")
    ap.add_argument("--data-root", required=True, type=Path)
    ap.add_argument("--kinds", required=True, type=Path)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    run_dir(a.run).mkdir(parents=True, exist_ok=True)
    table = statistics_table(a.run, a.params, a.data_root, a.kinds)
    train = table[table.split == "train"]
    val = pd.concat([table[table.split == "val"], pseudo_table(a.run, a.params, a.data_root)], ignore_index=True)
    val_kinds = sorted(table.loc[(table.split == "val") & (table.target == 1), "kind"].dropna().unique())
    pf_kinds = sorted(k for k in val.kind.dropna().unique() if str(k).startswith("pf:"))

    def per_kind(score: np.ndarray) -> dict[str, float]:
        kinds = metrics.per_kind(val.target, score, val.kind)
        return {**{k: kinds[k] for k in val_kinds + pf_kinds},
                "mean_val": float(np.mean([kinds[k] for k in val_kinds])),
                "mean_pseudo": float(np.mean([kinds[k] for k in pf_kinds])),
                "mean_all": float(np.mean([kinds[k] for k in val_kinds + pf_kinds]))}

    rows = []
    real = train[train.target == 0]
    for col in [c for g in STAT_GROUPS.values() for c in g]:
        x = real[col].to_numpy(float)
        mu, sd = np.nanmean(x), np.nanstd(x) + 1e-9
        v = val[col].to_numpy(float)
        z = np.abs(np.where(np.isfinite(v), v, mu) - mu) / sd
        rows.append({"design": f"stat {col}", **per_kind(z)})
    for name, gs in design_sets().items():
        cols = [c for g in gs for c in STAT_GROUPS[g]]
        joint = RealOnlyModel(columns=cols).fit(train)
        rows.append({"design": f"{name} joint", **per_kind(joint.score(val))})
        by_group = {g: RealOnlyModel(columns=list(STAT_GROUPS[g])).fit(train) for g in gs}
        for how in ("max", "sum"):
            rows.append({"design": f"{name} group-{how}", **per_kind(group_scores(by_group, val, how))})
    out = pd.DataFrame(rows)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 40)
    n_real = int((val.target == 0).sum())
    print(f"validation split: {n_real} real clips; fakes: "
          + ", ".join(f"{k} {int((val.kind == k).sum())}" for k in val_kinds + pf_kinds))
    print(out.round(3).to_string(index=False))
    best = out[~out.design.str.startswith("stat ")].sort_values("mean_all", ascending=False).head(5)
    print("\nhighest mean_all:\n" + best[["design", "mean_val", "mean_pseudo", "mean_all"]].round(4).to_string(index=False))
    if a.out:
        out.to_csv(a.out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
