"""The real-only weight sweep of a finished 05 run (``experiments.joins.weight_sweep``), from its saved predictions.

    python tools/join_sweep.py --run NAME --model CANDIDATE[model] --real-only CANDIDATE[real_only] [--out FILE.csv]
    python tools/join_sweep.py --folder docs/runs/select600 --model pf_all_l5 --real-only real_only   (a recorded run)

``--model`` / ``--real-only`` name leaderboard rows: the two parts of a joined candidate, or a candidate trained with
``real_only_weight: 0`` and one with ``1``. Prints, per weight, each protocol's AUC (mean and sd over seeds; the test
protocol is left out) and the held-out mean the weight is chosen by, and the weight where that mean is highest.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from ffdv_utils.core.paths import run_dir
from ffdv_utils.experiments.joins import plot_weight_sweep, weight_sweep


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--run", help="the 05 run (folder under outputs/)")
    where.add_argument("--folder", type=Path, help="a folder with protocol_results.csv and protocol_predictions/")
    ap.add_argument("--model", required=True, help="leaderboard row with the model's own scores")
    ap.add_argument("--real-only", required=True, help="leaderboard row with the real-only scores")
    ap.add_argument("--out", type=Path, help="write the table here (and a .png beside it)")
    a = ap.parse_args(argv)
    folder = a.folder if a.folder is not None else run_dir(a.run, create=False)
    sweep = weight_sweep(pd.read_csv(folder / "protocol_results.csv"), folder, a.model, a.real_only)
    pd.set_option("display.width", 200)
    print(sweep.round(4).to_string(index=False))
    if "held-out mean" in sweep:
        best = sweep.loc[sweep["held-out mean"].idxmax()]
        print(f"\nhighest held-out mean: {best['held-out mean']:.4f} at real_only_weight {best.weight:g}")
    if a.out:
        sweep.to_csv(a.out, index=False)
        plot_weight_sweep(sweep, a.out.with_suffix(".png"), title=f"{a.run or a.folder.name}: {a.model} + {a.real_only}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
