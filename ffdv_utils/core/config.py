"""Parameter files and values: YAML read with file-and-line errors, merging (defaults, then ``-f`` files, then
``-p`` values), the stable hash that keys caches and checkpoints, and a notebook's literal parameters.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from .errors import ConfigError
from .files import atomic_write
from .paths import resolve_path

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
    atomic_write(path, yaml.safe_dump(dict(params), sort_keys=True, allow_unicode=True))
    return path
