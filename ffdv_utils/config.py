"""The one place that knows where things are: project root, Kaggle, data root, outputs, parameters.

Every other module asks this one for a path, so nothing depends on the working directory.
Resolution order (first hit wins):

- project root: ``$FFDV_PROJECT_ROOT``; the folder holding ``pyproject.toml`` and ``notebooks/`` above this
  package (a clone with an editable install); on Kaggle ``/kaggle/working``; else the current folder.
- outputs: ``$FFDV_OUTPUTS``, else ``<project root>/outputs``.
- data root: the ``data_root`` parameter; ``$FFDV_DATA_ROOT``; on Kaggle, the first folder under
  ``/kaggle/input`` (three levels deep at most) that holds ``train_label.txt`` or ``testset/``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

PACKAGE_DIR = Path(__file__).resolve().parent
KAGGLE_INPUT = Path("/kaggle/input")
KAGGLE_WORKING = Path("/kaggle/working")
NOTEBOOKS = ("01_eda", "02_features", "03_train", "04_augment", "05_compare", "06_submission")
RUN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class ConfigError(ValueError):
    """A parameter, path or file that the workspace cannot use; the message says which and why."""


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


def find_kaggle_data_root(base: Path | None = None, depth: int = 3) -> Path | None:
    """The first folder under Kaggle's input mount that looks like an FFDV data root."""
    base = KAGGLE_INPUT if base is None else base
    if not base.is_dir():
        return None
    level = [base]
    for _ in range(depth + 1):
        nxt = []
        for folder in level:
            if _looks_like_data_root(folder):
                return folder
            try:
                nxt.extend(sorted(p for p in folder.iterdir() if p.is_dir()))
            except OSError:
                continue
        level = nxt
    return None


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
    raise ConfigError("no data root: pass data_root (parameter or --data-root); tried " + "; ".join(tried))


# ----------------------------------------------------------------------------------------------------------------
# Parameters


def read_yaml(path: str | os.PathLike) -> dict:
    """A YAML mapping, or ConfigError naming the file and line of a syntax error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"cannot read parameter file {path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: YAML error: {getattr(exc, 'problem', exc)}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of parameter names to values, got {type(data).__name__}")
    return data


def parse_value(text: str) -> Any:
    """A command-line value read as YAML (``3.0e-3`` -> float, ``[a, b]`` -> list, ``null`` -> None)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def load_params(files: Iterable[str | os.PathLike] = (), overrides: Mapping[str, Any] | None = None,
                base: Mapping[str, Any] | None = None) -> dict:
    """Merge ``base``, then each YAML file in order, then ``overrides`` (later wins, keys replaced whole)."""
    params: dict = dict(base or {})
    for f in files:
        path = resolve_path(f) if not Path(f).is_file() else Path(f).resolve()
        params.update(read_yaml(path))
    params.update(overrides or {})
    return params


def params_hash(params: Mapping[str, Any], length: int = 12) -> str:
    """Stable hash of a parameter mapping (key order does not matter)."""
    canonical = json.dumps(params, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha1(canonical.encode("utf-8")).hexdigest()[:length]


def _literal(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_literal(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _literal(v) for k, v in value.items())
    return False


def collect_params(namespace: Mapping[str, Any]) -> dict:
    """The literal parameters of a notebook: its public globals holding plain values.

    Called in the cell right after ``parameters`` (and papermill's injected cell), before any other variable
    is defined, so what it returns is exactly the run's parameters. UPPER_CASE names are constants, not
    parameters.
    """
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in namespace.items()
            if not k.startswith("_") and not k.isupper() and k not in {"In", "Out", "exit", "quit", "get_ipython"}
            and _literal(v)}


def save_params(path: Path, params: Mapping[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, yaml.safe_dump(dict(params), sort_keys=True, allow_unicode=True))
    return path


def atomic_write_text(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> Path:
    atomic_write_text(Path(path), json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    return Path(path)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


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

    def path(self, *parts: str) -> Path:
        p = self.dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def data_root(self) -> Path:
        return find_data_root(self.params.get("data_root"))


def start_run(params: Mapping[str, Any], notebook: str) -> Run:
    """Create ``outputs/<run_name>`` and record the notebook's resolved parameters there.

    Writes ``params/<notebook>.yaml`` (this notebook's values) and merges them into ``params.yaml``
    (the whole run), plus ``environment.json``.
    """
    params = dict(params)
    name = check_run_name(str(params.get("run_name") or "default"))
    folder = run_dir(name)
    save_params(folder / "params" / f"{notebook}.yaml", params)
    merged_path = folder / "params.yaml"
    merged = read_yaml(merged_path) if merged_path.is_file() else {}
    merged.update(params)
    save_params(merged_path, merged)
    write_json(folder / "environment.json", {**environment_info(),
                                             "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    return Run(name=name, dir=folder, params=params, notebook=notebook)


def load_run_params(name_or_dir: str | os.PathLike) -> dict:
    """The merged parameters a run recorded (``outputs/<name>/params.yaml``)."""
    folder = Path(name_or_dir)
    if not folder.is_dir():
        folder = run_dir(str(name_or_dir), create=False)
    path = folder / "params.yaml"
    if not path.is_file():
        raise ConfigError(f"run {name_or_dir!r} has no params.yaml at {path}; was it trained?")
    return read_yaml(path)
