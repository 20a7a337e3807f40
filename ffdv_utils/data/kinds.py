"""Manipulation kinds: a ``video_name, kind`` answers file (``real`` for genuine clips) joined onto a table of clips,
with the clip's ``identity`` (who is shown speaking) when the file has that column (the sample data's does).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..core.paths import resolve_path
from .labels import canonical_name


def read_kinds(path: Any) -> pd.DataFrame:
    """``video_name, kind`` (and ``identity`` when the CSV has it) from a CSV with those columns (``real`` for genuine
    clips); names are canonical."""
    resolved = resolve_path(path)
    if resolved is None or not resolved.is_file():
        raise FileNotFoundError(f"kinds CSV {path!r} not found (resolved to {resolved})")
    df = pd.read_csv(resolved, dtype={"video_name": str})
    missing = {"video_name", "kind"} - set(df.columns)
    if missing:
        raise ValueError(f"{resolved}: needs columns video_name and kind (missing {', '.join(sorted(missing))})")
    out = pd.DataFrame({"video_name": [canonical_name(n) for n in df.video_name], "kind": df.kind.astype(str)})
    if "identity" in df:
        out["identity"] = df.identity.fillna("").astype(str).to_numpy()
    return out


def attach_kinds(clips: pd.DataFrame, kinds: pd.DataFrame | None) -> pd.DataFrame:
    """``clips`` with a ``kind`` column: from ``kinds`` where listed, else ``real`` / ``fake`` from the label; and an
    ``identity`` column ("" where unknown) when ``kinds`` has one."""
    out = clips.copy()
    default = np.where(out.target > 0.5, "fake", "real")
    if kinds is None:
        out["kind"] = default
        return out
    table = dict(zip(kinds.video_name, kinds.kind))
    out["kind"] = [table.get(canonical_name(n), d) for n, d in zip(out.video_name, default)]
    if "identity" in kinds:
        who = dict(zip(kinds.video_name, kinds.identity))
        out["identity"] = [who.get(canonical_name(n), "") for n in out.video_name]
    return out
