"""Run records: one folder per run (``outputs/<run_name>``) holding the resolved parameters of every notebook that
worked in it, the environment that produced it and, later, its results. ``start_run`` is where a notebook (or
``python -m ffdv_utils train``) begins: it records the parameters and resolves ``data_root`` once.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .config import read_yaml, save_params
from .errors import ConfigError
from .files import write_json
from .paths import PACKAGE_DIR, check_run_name, find_data_root, run_dir
from .schema import RUN, TRAIN_DEFAULTS, with_defaults

# What a training leaves in its run folder, and what 06 derives from its model: moved together into
# ``superseded/<time>/`` when a later training of the same run name will not continue it (``supersede``). The split,
# the features and the executed notebooks stay (made from the data, not from the model; papermill may be writing one).
TRAINING_RESULTS = ("metrics.json", "history.csv", "val_predictions.csv", "real_only.json", "checkpoints/best.pt",
                    "figures/training_curves.png", "figures/val_roc.png", "figures/val_scores.png",
                    "figures/gradcam.png", "prediction.csv", "prediction_sources.json", "prediction_issues.csv",
                    "prediction_errors.csv", "test_metrics.csv", "figures/test_roc.png", "figures/test_scores.png")
# Parameters whose change never makes a training's results stale: how it runs, how long (a run resumed with more
# epochs extends its results), and the joined parts' settings (fitted after training, joined anew at the end). The
# training's own resume key (training.loop) leaves out the same keys, ``data_root`` apart (the data is compared on
# its own there, by content).
RESULT_NEUTRAL = frozenset({"progress", "num_workers", "resume", "device", "run_name", "epochs", "compile",
                            "dist_timeout_min", "feature_workers", "real_only_weight", "real_only_groups",
                            "profile_weight", "profile_mel_preset"})
TRAINING_NOTEBOOK = "03_train"
KEEP_SUPERSEDED = 3  # the most recent sets of superseded results a run folder keeps


def environment_info() -> dict:
    """What produced a result: versions, machine, git commit (when in a clone)."""
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    for mod in ("torch", "timm", "numpy", "librosa", "av"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # a missing optional package is information, not an error
            info[mod] = None
    try:
        import torch

        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        info["cuda"] = None
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PACKAGE_DIR, capture_output=True,
                                            text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info


@dataclass
class Run:
    """One run folder and the resolved parameters of the notebook working in it."""

    name: str
    dir: Path
    params: dict = field(default_factory=dict)
    notebook: str = ""
    data_root: Path | None = None  # resolved once by start_run; every stage receives this Path

    def __post_init__(self) -> None:
        given = self.params.get("data_root")
        if self.data_root is None and given not in (None, "") and Path(str(given)).is_dir():
            self.data_root = Path(str(given)).resolve()

    def path(self, *parts: str) -> Path:
        p = self.dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


def start_run(params: Mapping[str, Any], notebook: str) -> Run:
    """Create ``outputs/<run_name>`` and record the notebook's resolved parameters there.

    Writes ``params/<notebook>.yaml`` (this notebook's values) and merges them into ``params.yaml``
    (the whole run), plus ``environment.json``. ``data_root`` is resolved here, once (the parameter,
    ``$FFDV_DATA_ROOT``, or a Kaggle input folder), recorded as that absolute path and handed to the stages as
    ``run.data_root``; a ``data_root`` that names no folder, or none given and none to be found, is an error now
    rather than deep inside a notebook. Everything is checked before anything is written, so a run that cannot start
    leaves the record of the run before it (its ``params.yaml`` beside its results) as it was.
    """
    params = dict(params)
    name = check_run_name(str(with_defaults(params, RUN)["run_name"]))
    root: Path | None = None
    if "data_root" in params:
        root = find_data_root(params["data_root"])  # raises ConfigError naming the value or what was tried
    if root is not None:
        params["data_root"] = str(root)
    folder = run_dir(name)
    own_path = folder / "params" / f"{notebook}.yaml"
    merged_path = folder / "params.yaml"
    if notebook == TRAINING_NOTEBOOK and own_path.is_file():
        changed = changed_keys(read_yaml(own_path), params)
        if changed:  # the earlier training's results will not be continued: they leave with their parameters
            supersede(folder, "parameters changed: " + ", ".join(changed))
    save_params(own_path, params)
    merged = read_yaml(merged_path) if merged_path.is_file() else {}
    merged.update(params)
    save_params(merged_path, merged)
    write_json(folder / "environment.json", {**environment_info(),
                                             "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    return Run(name=name, dir=folder, params=params, notebook=notebook, data_root=root)


def changed_keys(before: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """The training parameters that differ between two records (defaults filled in on both sides, so a value given
    explicitly equals the same value left to its default), leaving out ``RESULT_NEUTRAL``."""
    a, b = with_defaults(before, TRAIN_DEFAULTS), with_defaults(now, TRAIN_DEFAULTS)
    keys = sorted((set(a) | set(b)) - RESULT_NEUTRAL)
    fresh = [] if b["resume"] else ["resume: false"]  # a training that starts from scratch whatever it finds
    return fresh + [f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def supersede(folder: Path, reason: str) -> Path | None:
    """Move a run folder's training results (``TRAINING_RESULTS``) with the parameters that made them into
    ``superseded/<UTC time>/`` (and a ``why.txt``), so the folder never shows results beside parameters they were not
    made with (the last ``KEEP_SUPERSEDED`` sets are kept). ``checkpoints/last.pt`` stays: it records its own parameters and data, and the training decides from
    them whether to continue it. Returns the new folder, None when there was nothing to move."""
    present = [rel for rel in TRAINING_RESULTS if (folder / rel).is_file()]
    if not present:
        return None
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    dest = folder / "superseded" / stamp
    for rel in present:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(folder / rel, dest / rel)
    for rel in ("params.yaml", f"params/{TRAINING_NOTEBOOK}.yaml"):
        if (folder / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(folder / rel, dest / rel)
    (dest / "why.txt").write_text(reason + "\n", encoding="utf-8")
    for old in sorted((folder / "superseded").iterdir())[:-KEEP_SUPERSEDED]:  # bounded: checkpoints are large
        shutil.rmtree(old, ignore_errors=True)
    print(f"run {folder.name}: {reason}; the earlier results moved to {dest}", flush=True)
    return dest


def load_run_params(name_or_dir: str | os.PathLike) -> dict:
    """The merged parameters a run recorded (``outputs/<name>/params.yaml``)."""
    folder = Path(name_or_dir)
    if not folder.is_dir():
        folder = run_dir(str(name_or_dir), create=False)
    path = folder / "params.yaml"
    if not path.is_file():
        raise ConfigError(f"run {name_or_dir!r} has no params.yaml at {path}; was it trained?")
    return read_yaml(path)
