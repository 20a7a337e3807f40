"""The media index: probe results per clip (duration, fps, size, audio stream), probed in parallel and cached by file
stamp, and the leading silence of each clip's audio (a known shortcut in audio-visual deepfake datasets).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

import pandas as pd

from ..core.files import atomic_path, file_stamp
from ..core.progress import progress_bar
from ..media.decode import MediaError, load_audio, probe_video


def media_index(clips: pd.DataFrame, cache: Path | None = None, workers: int | None = None,
                progress: bool = True) -> pd.DataFrame:
    """Probe results (duration, fps, size, audio presence, sample rate, channels...) per clip, cached.

    ``clips`` needs ``video_name`` and ``path``. Probing runs in a thread pool (PyAV releases the GIL while
    it parses containers). The cache is a CSV keyed by path, file size and modification time, so a changed
    file is probed again; it is rewritten atomically.
    """


    cached = pd.DataFrame()
    if cache is not None and Path(cache).is_file():
        try:
            cached = pd.read_csv(cache, keep_default_na=False)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError):
            cached = pd.DataFrame()

    stamps = [file_stamp(p) or "missing" for p in clips.path]
    known = {}
    if not cached.empty and {"path", "stamp"} <= set(cached.columns):
        known = {(r["path"], r["stamp"]): r for r in cached.to_dict("records")}
    rows: list[dict | None] = [known.get((p, s)) for p, s in zip(clips.path, stamps)]
    todo = [i for i, r in enumerate(rows) if r is None]
    if todo:
        workers = workers or min(8, (os.cpu_count() or 1) * 2)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = pool.map(lambda i: probe_video(clips.path.iloc[i]), todo)
            bar = progress_bar(zip(todo, results), total=len(todo), desc="probe", unit="clip", disable=not progress)
            for i, info in bar:
                info = dict(info)
                info["path"], info["stamp"] = clips.path.iloc[i], stamps[i]
                rows[i] = info
    df = pd.DataFrame(rows)
    df["video_name"] = list(clips.video_name)
    if cache is not None:
        with atomic_path(cache) as tmp:
            df.to_csv(tmp, index=False)
    front = [c for c in ("video_name", "duration", "fps", "width", "height", "has_audio", "sample_rate", "channels")
             if c in df.columns]
    return df[front + [c for c in df.columns if c not in front]]


def leading_silence(path: str | os.PathLike, sr: int = 16000, threshold_db: float = -35.0,
                    frame_s: float = 0.02) -> float:
    """Seconds before the audio first rises within ``threshold_db`` of its loudest frame (NaN: no audio).

    Fakes that start with a short silence are a known shortcut in other audio-visual datasets; this measures it.
    """
    import numpy as np


    try:
        y = load_audio(path, sr)
    except MediaError:
        return float("nan")
    hop = max(1, int(sr * frame_s))
    if len(y) < hop:
        return float("nan")
    frames = y[: len(y) // hop * hop].reshape(-1, hop)
    rms_db = 20 * np.log10(np.sqrt((frames ** 2).mean(1)) + 1e-10)
    loud = np.flatnonzero(rms_db >= rms_db.max() + threshold_db)
    return float(loud[0] * frame_s) if len(loud) else float("nan")


def leading_silence_column(paths: Iterable[str], workers: int | None = None) -> list[float]:
    """``leading_silence`` for many files in a thread pool (PyAV decodes without holding the GIL)."""
    paths = list(paths)
    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 1) * 2)) as pool:
        return list(pool.map(leading_silence, paths))
