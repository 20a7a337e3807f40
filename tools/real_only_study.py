"""Which statistics and which combination make the real-only score (training.real_only) generalise?

The real-only score never sees a fake, so every fake kind of the validation split is unseen by it: its AUC per
validation kind is a held-out-kind figure on train/val only. This study fits on the real training clips of a run's
feature cache and prints, for the validation split only (never the test split):

- each statistic's own AUC per kind (two-sided: |z| from the real training clips);
- the score's AUC per kind for column sets (the groups of ``STAT_GROUPS``) and combinations (one Gaussian over all
  columns, or one per group joined by the max or the sum of their tail probabilities).

    python tools/real_only_study.py --run NAME -f params/best.yaml --data-root SAMPLE/data \
        --kinds SAMPLE/answers/manipulations.csv [--out FILE.csv]

The features come from the cache (extracted when missing); the statistics table is written to
``outputs/NAME/real_only_stats.csv`` and reused (delete it after changing the statistics).
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
from ffdv_utils.training.real_only import STAT_GROUPS, RealOnlyModel, clip_statistics


def statistics_table(run: str, params_file: Path, data_root: Path, kinds_csv: Path) -> pd.DataFrame:
    folder = run_dir(run)
    cached = folder / "real_only_stats.csv"
    if cached.is_file():
        return pd.read_csv(cached)
    params = {**TRAIN_DEFAULTS, **read_yaml(params_file), "data_root": str(data_root)}
    clips = labelled_frame(data_root)
    kinds = pd.read_csv(kinds_csv)[["video_name", "kind"]]
    clips = clips.drop(columns="kind", errors="ignore").merge(kinds, on="video_name", how="left")
    table = clip_statistics(params, clips, progress=True)
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="folder under outputs/ for the statistics table")
    ap.add_argument("-f", dest="params", required=True, type=Path, help="parameter file (the features' settings)")
    ap.add_argument("--data-root", required=True, type=Path)
    ap.add_argument("--kinds", required=True, type=Path)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    table = statistics_table(a.run, a.params, a.data_root, a.kinds)
    train, val = table[table.split == "train"], table[table.split == "val"]
    fake_kinds = sorted(val.loc[val.target == 1, "kind"].dropna().unique())

    def per_kind(score: np.ndarray) -> dict[str, float]:
        kinds = metrics.per_kind(val.target, score, val.kind)
        return {"all": metrics.auc(val.target, score), **kinds, "mean_kind": float(np.mean(list(kinds.values())))}

    rows = []
    real = train[train.target == 0]
    for col in [c for g in STAT_GROUPS.values() for c in g]:
        x = real[col].to_numpy(float)
        mu, sd = np.nanmean(x), np.nanstd(x) + 1e-9
        v = val[col].to_numpy(float)
        z = np.abs(np.where(np.isfinite(v), v, mu) - mu) / sd
        rows.append({"design": f"stat {col}", **per_kind(z)})
    groups = list(STAT_GROUPS)
    base = ["sync", "motion", "voice", "face"]
    sets = {"base": base, "base+prosody": base + ["prosody"], "base+consistency": base + ["consistency"],
            "all": groups}
    sets.update({f"all-{g}": [h for h in groups if h != g] for g in groups})
    sets.update({"base+prosody-motion": ["sync", "voice", "face", "prosody"],
                 "sync+voice+prosody": ["sync", "voice", "prosody"],
                 "sync+face+prosody": ["sync", "face", "prosody"]})
    for name, gs in sets.items():
        cols = [c for g in gs for c in STAT_GROUPS[g]]
        joint = RealOnlyModel(columns=cols).fit(train)
        rows.append({"design": f"{name} joint", **per_kind(joint.score(val))})
        by_group = {g: RealOnlyModel(columns=list(STAT_GROUPS[g])).fit(train) for g in gs}
        for how in ("max", "sum"):
            rows.append({"design": f"{name} group-{how}", **per_kind(group_scores(by_group, val, how))})
    out = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print(f"validation split: {int((val.target == 0).sum())} real, "
          + ", ".join(f"{k} {int((val.kind == k).sum())}" for k in fake_kinds))
    print(out.round(3).to_string(index=False))
    if a.out:
        out.to_csv(a.out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
