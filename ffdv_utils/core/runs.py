"""Run records: one folder per run (``outputs/<run_name>``) holding the resolved parameters of every notebook that
worked in it, the environment that produced it and, later, its results. ``start_run`` is where a notebook (or
``python -m ffdv_utils train``) begins: it records the parameters and resolves ``data_root`` once.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .config import read_yaml, save_params
from .errors import ConfigError
from .files import write_json
from .paths import PACKAGE_DIR, check_run_name, find_data_root, run_dir
from .schema import RUN, with_defaults


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
    save_params(folder / "params" / f"{notebook}.yaml", params)
    merged_path = folder / "params.yaml"
    merged = read_yaml(merged_path) if merged_path.is_file() else {}
    merged.update(params)
    save_params(merged_path, merged)
    write_json(folder / "environment.json", {**environment_info(),
                                             "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    return Run(name=name, dir=folder, params=params, notebook=notebook, data_root=root)


def load_run_params(name_or_dir: str | os.PathLike) -> dict:
    """The merged parameters a run recorded (``outputs/<name>/params.yaml``)."""
    folder = Path(name_or_dir)
    if not folder.is_dir():
        folder = run_dir(str(name_or_dir), create=False)
    path = folder / "params.yaml"
    if not path.is_file():
        raise ConfigError(f"run {name_or_dir!r} has no params.yaml at {path}; was it trained?")
    return read_yaml(path)
