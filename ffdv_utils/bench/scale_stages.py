"""The stages of ``bench scale`` that hold torch and the models (``python -m ffdv_utils.bench.scale_stages``): the
frozen backbone's embeddings, one training epoch, the scoring of the test table, and the reading of cached
embeddings for ``--embedding-memory``. ``bench.scale`` runs each in a process of its own; the extraction stages stay
in ``bench.scale``, free of torch like notebook 02.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..core.runs import start_run
from ..data.labels import list_test, read_labels
from ..features.batches import ClipDataset, clip_datasets
from ..features.cache import entry_file
from ..features.embeddings import attach_embeddings, embed_dataset
from ..inference.score import predict_runs
from ..models.registry import create_model, model_inputs
from ..training.loop import fit
from .extraction import peak_rss_mib
from .scale import entry_names, stage_figures, stage_params

MODEL_STAGES = ("embeddings", "train", "score")


def run_model_stage(stage: str, root: Path, preset: str | None, run_name: str,
                    overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Runs ``embeddings``, ``train`` or ``score`` on the data root ``root`` in this process; its work's wall and CPU
    seconds and the clips processed (and for ``train`` the epoch's seconds from ``history.csv``).

    The cache and outputs folders are this process's ($FFDV_CACHE, $FFDV_OUTPUTS); ``score`` scores with the run
    ``train`` wrote.
    """
    if stage not in MODEL_STAGES:
        raise ValueError(f"unknown stage {stage!r}; use {', '.join(MODEL_STAGES)}")
    p = stage_params(root, preset, run_name, overrides)
    c0, t0 = os.times(), time.perf_counter()
    out: dict[str, Any] = {"stage": stage}
    if stage == "embeddings":
        model = create_model(p)
        train_ds, val_ds = clip_datasets(p, model_inputs(model), progress=False)
        attach_embeddings(model, p, [train_ds, val_ds], progress=False)
        out["clips"] = len(train_ds) + len(val_ds)
    elif stage == "train":
        run = start_run(p, "03_train")
        fit(p, run)
        out["epoch_s"] = float(pd.read_csv(run.path("history.csv")).train_time_s.sum())
        out["train_clips"] = len(read_labels(root / "train_label.txt"))
        out["clips"] = out["train_clips"] + len(read_labels(root / "val_label.txt"))
    else:
        clips = list_test(root, "testset", "test_template.csv")
        predict_runs([run_name], clips, progress=False)
        out["clips"] = len(clips)
    return stage_figures(out, c0, t0)


def read_embeddings(folder: Path, n: int, legacy: bool = False) -> dict[str, Any]:
    """In this process: the first ``n`` entries of ``folder`` (``bench.scale.write_entries``) through
    ``embed_dataset`` (a memory-mapped stack), or with ``legacy`` loaded and stacked in memory as before issue 26;
    seconds and this process's peak RSS (VmHWM) before and after."""
    names = entry_names(n)
    ds = ClipDataset(names, np.zeros(n, np.float32))
    before = peak_rss_mib()["self"]
    t0 = time.perf_counter()
    if legacy:
        arr = np.stack([np.load(folder / "entries" / entry_file(x, ".npy")) for x in names])
    else:
        arr = embed_dataset(ds, "faces", torch.nn.Identity(), folder, progress=False)
    seconds = time.perf_counter() - t0
    return {"n": n, "legacy": legacy, "seconds": round(seconds, 2), "rss_before_mib": before,
            "peak_rss_mib": peak_rss_mib()["self"], "stack_mib": round(arr.nbytes / 2 ** 20, 1),
            "memmap": isinstance(arr, np.memmap)}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ffdv_utils.bench.scale_stages embeddings|train|score --root DIR --run NAME [--preset FILE]
    [--set JSON]``: one stage; ``stack --root DIR --n N [--legacy]``: reading N cached embeddings. Figures as one
    JSON line on stdout (the last line)."""
    ap = argparse.ArgumentParser(prog="ffdv_utils.bench.scale_stages")
    ap.add_argument("stage", choices=(*MODEL_STAGES, "stack"))
    ap.add_argument("--root", required=True, type=Path)
    ap.add_argument("--run", default="scale")
    ap.add_argument("--preset", default=None)
    ap.add_argument("--set", default="{}", help="parameter overrides as JSON")
    ap.add_argument("--n", type=int, default=0, help="stack: entries to read")
    ap.add_argument("--legacy", action="store_true", help="stack: every entry loaded and stacked in memory")
    args = ap.parse_args(argv)
    if args.stage == "stack":
        res = read_embeddings(args.root, args.n, args.legacy)
    else:
        res = run_model_stage(args.stage, args.root, args.preset, args.run, json.loads(args.set))
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
