"""Leave-source-out AUC of the self-supervised scorers (``ffdv_utils.selfsup``) on a labelled folder.

The folder is laid out like ``realworld-dev``: ``labels.csv`` (video_name, target with 1 = fake, and a group column,
``source`` by default) and the clips in ``clips/``. Folds: StratifiedGroupKFold(5, shuffle=True, random_state=0)
over the rows in file order, grouped by source; each fold trains on the real clips of its training sources only and
scores its test sources; repeated per seed. Prints and writes two CSVs to ``--out``: ``folds.csv`` (one row per
model, seed and fold, plus a pooled row per seed) and ``summary.csv`` (mean +- sd over seeds of the mean fold AUC,
and of the pooled AUC). Per-clip scores are not written (they are derived from the clips).

    python tools/selfsup_study.py --pool ../shared/realworld-dev --out docs/runs/selfsup_realworld \
        --models voice sync --seeds 0 1 2

Windows and crops are cached under the workspace cache (``FFDV_CACHE`` or outputs/cache), keyed by their parameters.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from ffdv_utils.selfsup import MODELS
from ffdv_utils.selfsup.evaluate import leave_source_out, read_pool, summarise


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pool", required=True, type=Path, help="labelled folder (labels.csv + clips/)")
    ap.add_argument("--out", required=True, type=Path, help="folder for folds.csv and summary.csv")
    ap.add_argument("--models", nargs="+", default=["voice"], choices=sorted(MODELS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--group", default="source", help="labels.csv column that forms the groups")
    ap.add_argument("--params", default="{}",
                    help='JSON: parameters for every model, or {"voice": {...}, "sync": {...}} per model')
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    extra = json.loads(args.params)
    labels, paths = read_pool(args.pool, args.group)
    args.out.mkdir(parents=True, exist_ok=True)
    tables = []
    t0 = time.time()
    for name in args.models:
        p = extra.get(name, {}) if any(k in MODELS for k in extra) else extra
        p = {"threads": args.threads, "progress": args.progress, **p}
        folds = leave_source_out(MODELS[name].fit, labels, paths, seeds=args.seeds, params=p, n_splits=args.folds,
                                 group=args.group, name=name, log=print)
        tables.append(folds)
        pd.concat(tables).to_csv(args.out / "folds.csv", index=False)
        summary = summarise(pd.concat(tables))
        summary.to_csv(args.out / "summary.csv", index=False)
        print(summary.to_string(index=False), flush=True)
    print(f"wall time {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
