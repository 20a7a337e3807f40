"""The one place that knows where things are: project root, Kaggle, data root, outputs, the feature cache.

Every other module asks this one for a path, so nothing depends on the working directory.
Resolution order (first hit wins):

- project root: ``$FFDV_PROJECT_ROOT``; the folder holding ``pyproject.toml`` and ``notebooks/`` above this
  package (a clone with an editable install); on Kaggle ``/kaggle/working``; else the current folder.
- outputs: ``$FFDV_OUTPUTS``, else ``<project root>/outputs``.
- data root: the ``data_root`` parameter; ``$FFDV_DATA_ROOT``; on Kaggle, the first folder under
  ``/kaggle/input`` (three levels deep at most) that holds ``train_label.txt`` or ``testset/``.
- a file attached to a Kaggle kernel (weights, a checkpoint): ``find_kaggle_file`` searches ``/kaggle/input``
  by name, folder by folder, three levels deep at most, never descending into media folders.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

from .errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # ffdv_utils/
KAGGLE_INPUT = Path("/kaggle/input")
KAGGLE_WORKING = Path("/kaggle/working")
NOTEBOOKS = ("01_eda", "02_features", "03_train", "04_augment", "05_compare", "06_submission")
# FFDV's layout: each split's clips in a folder of its own under the data root
SPLIT_DIRS = {"train": "trainset", "val": "valset", "test": "testset"}

RUN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def is_kaggle() -> bool:
    """True inside a Kaggle notebook or kernel run."""
    return bool(os.environ.get("KAGGLE_KERNEL_RUN_TYPE")) or (KAGGLE_INPUT.is_dir() and KAGGLE_WORKING.is_dir())


def project_root() -> Path:
    """The workspace folder (holds notebooks/, params/, outputs/)."""
    env = os.environ.get("FFDV_PROJECT_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    candidate = PACKAGE_DIR.parent
    if (candidate / "pyproject.toml").is_file() and (candidate / "notebooks").is_dir():
        return candidate
    if is_kaggle():
        return KAGGLE_WORKING
    return Path.cwd().resolve()


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def params_dir() -> Path:
    return project_root() / "params"


def outputs_dir() -> Path:
    """Root of every run folder; created on first use."""
    env = os.environ.get("FFDV_OUTPUTS")
    path = Path(env).expanduser().resolve() if env else project_root() / "outputs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """Feature caches live here, shared by runs (each cache is keyed by the parameters that made it)."""
    env = os.environ.get("FFDV_CACHE")
    path = Path(env).expanduser().resolve() if env else outputs_dir() / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_run_name(name: str) -> str:
    if not isinstance(name, str) or not RUN_NAME_RE.match(name):
        raise ConfigError(
            f"run name {name!r} is not usable: use letters, digits, '_', '-' and '.', starting with a letter or digit"
        )
    return name


def run_dir(name: str, create: bool = True) -> Path:
    """``outputs/<name>``: everything one run writes."""
    path = outputs_dir() / check_run_name(name)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_path(value: str | os.PathLike | None, base: Path | None = None) -> Path | None:
    """An absolute path for a parameter value; relative values are taken relative to ``base`` (project root)."""
    if value is None or value == "":
        return None
    path = Path(os.path.expandvars(str(value))).expanduser()
    if not path.is_absolute():
        path = (base or project_root()) / path
    return path.resolve()


def _looks_like_data_root(path: Path) -> bool:
    return (path / "train_label.txt").is_file() or (path / "val_label.txt").is_file() or (path / "testset").is_dir()


MEDIA_FOLDERS = frozenset({"trainset", "valset", "testset"})  # hold the clips: never listed by a search


def _search_kaggle_input(found: Callable[[Path], Path | None], base: Path | None = None,
                         depth: int = 3) -> Path | None:
    """Breadth-first over the folders under ``base`` (Kaggle's input mount), at most ``depth`` levels down; the first
    folder for which ``found(folder)`` gives a path wins. Only folders are listed, and never a media folder or the
    inside of a data root, so 250,000 test clips are never walked."""
    base = KAGGLE_INPUT if base is None else Path(base)
    if not base.is_dir():
        return None
    level = [base]
    for d in range(depth + 1):
        nxt: list[Path] = []
        for folder in level:
            hit = found(folder)
            if hit is not None:
                return hit
            if d == depth or _looks_like_data_root(folder):
                continue
            try:
                nxt.extend(sorted(Path(e.path) for e in os.scandir(folder)
                                  if e.is_dir() and e.name not in MEDIA_FOLDERS))
            except OSError:
                continue
        level = nxt
    return None


def find_kaggle_data_root(base: Path | None = None, depth: int = 3) -> Path | None:
    """The first folder under Kaggle's input mount that looks like an FFDV data root."""
    return _search_kaggle_input(lambda f: f if _looks_like_data_root(f) else None, base, depth)


def find_kaggle_file(name: str, base: Path | None = None, depth: int = 3) -> Path | None:
    """A file attached to a Kaggle kernel as a dataset, found by name under ``/kaggle/input`` (None elsewhere),
    so a dataset's mount point may change without breaking the kernel."""
    if base is None and not is_kaggle():
        return None
    return _search_kaggle_input(lambda f: (f / name).resolve() if (f / name).is_file() else None, base, depth)


def data_root_path(data_root: str | os.PathLike | None) -> Path:
    """The data root a stage works on: a ``Path`` is taken as given (``start_run`` resolved it once, and every stage
    receives ``run.data_root``); a string or None (interactive use, a recorded parameter) is resolved here."""
    if isinstance(data_root, Path) and data_root.is_absolute():
        return data_root
    return find_data_root(data_root)


def find_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """Where the labels and media are. Raises ConfigError naming what was tried."""
    tried = []
    if data_root not in (None, ""):
        path = resolve_path(data_root)
        if path is not None and path.is_dir():
            return path
        raise ConfigError(f"data_root {data_root!r} (resolved to {path}) is not a folder")
    env = os.environ.get("FFDV_DATA_ROOT")
    if env:
        path = resolve_path(env)
        if path is not None and path.is_dir():
            return path
        tried.append(f"$FFDV_DATA_ROOT={env} (not a folder)")
    else:
        tried.append("$FFDV_DATA_ROOT (unset)")
    found = find_kaggle_data_root()
    if found is not None:
        return found
    tried.append(f"{KAGGLE_INPUT} (no folder with train_label.txt or testset/)")
    raise ConfigError("no data root: set data_root (the notebook's parameters cell, -p data_root DIR, --data-root DIR) "
                      "or $FFDV_DATA_ROOT; tried " + "; ".join(tried) +
                      ". No data yet? python -m ffdv_utils sample-data --out DIR writes a sample (DIR/data)")
