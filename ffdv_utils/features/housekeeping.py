"""Keeping the feature cache in bounds: what each folder of ``cache_dir()`` holds, which parameter sets no run or
preset uses any more, and face crops re-stored under another ``face_codec`` without decoding a clip again.

``cache_report`` lists every folder (kind, key, a short parameter summary, clips by status, bytes in entries and in
packed stacks, last use); ``stale_folders`` those whose parameters no run under ``outputs/`` (its ``params.yaml``)
and no preset in ``params/*.yaml`` would read; ``prune`` removes them and every packed stack (packed stacks are
rebuilt on demand). ``python -m ffdv_utils cache`` and ``cache prune`` call these (dry run unless ``--yes``).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import yaml

from ..core.config import params_hash
from ..core.files import atomic_write
from ..core.paths import cache_dir, outputs_dir, params_dir
from .cache import FaceStore, decode_crops, encode_crops, packed_files, read_manifest, write_manifest
from .params import FEATURES_VERSION, face_params, mel_params

# ---------------------------------------------------------------------------------------------------------------
# re-storing face crops under another codec


def recode_faces(source: str | os.PathLike, codec: str, quality: int = 90,
                 cache_root: str | os.PathLike | None = None) -> Path:
    """Writes the face cache of ``source``'s parameters with ``face_codec`` ``codec`` from its entries.

    The crops are decoded from ``source`` and encoded again (``features.cache.encode_crops``): the new folder holds
    exactly what extracting the clips with that codec would write (detection and cropping do not depend on the
    codec), without running the detector again. Clips already in the destination are skipped; the manifest is
    copied with its file stamps, so a later extraction treats the clips as done (an entry whose stamp differs from
    the source's is written again).

    Args:
        source: A ``faces-<hash>`` folder.
        codec: "raw", "png" or "jpeg".
        quality: JPEG quality.
        cache_root: Where the new folder goes (default: beside ``source``).

    Returns:
        The new ``faces-<hash>`` folder.
    """
    store = FaceStore(source)
    if store.params.get("version") != FEATURES_VERSION:
        raise ValueError(f"{store.root}: made by feature version {store.params.get('version')}, not "
                         f"{FEATURES_VERSION}; extract again instead")
    keys = {f"face_{k}": v for k, v in store.params.items() if k not in ("version", "codec", "quality")}
    target = face_params({**keys, "face_codec": codec, "face_quality": quality})
    root = Path(cache_root or store.root.parent) / f"faces-{params_hash(target)}"
    if root == store.root:
        return root
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "params.json").is_file():
        atomic_write(root / "params.json", json.dumps(target, indent=2, sort_keys=True) + "\n")
    rows = read_manifest(store.root)
    done = read_manifest(root)
    for name, row in rows.items():
        if row["status"] != "ok" or (name in done and done[name].get("source") == row.get("source")):
            continue  # failed clips keep their row; an entry made from the same file is already there
        with np.load(store.path(name)) as z:
            entry = decode_crops({k: z[k] for k in z.files})
        stored = encode_crops(entry, target.get("codec", "raw"), target.get("quality", 90))
        buf = io.BytesIO()
        np.savez(buf, **stored)
        atomic_write(root / "entries" / store.path(name).relative_to(store.root / "entries"), buf.getvalue())
    write_manifest(root, {**done, **rows})
    return root


# ---------------------------------------------------------------------------------------------------------------
# what the cache holds

_KEYED = re.compile(r"^(mel|faces|stats|emb-mel|emb-faces)-([0-9a-f]{6,40})$")
REPORT_COLUMNS = ["kind", "folder", "key", "params", "clips", "ok", "no_audio", "error", "entry_bytes",
                  "packed_stacks", "packed_bytes", "last_use", "last_use_ts"]


def _walk(folder: Path) -> tuple[int, int, float]:
    """(files, bytes, newest modification time) under ``folder``."""
    files, size, newest = 0, 0, 0.0
    stack = [folder]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            files += 1
            size += st.st_size
            newest = max(newest, st.st_mtime)
    return files, size, newest


def _read_params(folder: Path) -> dict:
    try:
        return json.loads((folder / "params.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def params_summary(kind: str, params: Mapping[str, Any]) -> str:
    """A few words on what a cache folder's parameters are (the report's ``params`` column)."""
    p = params
    if not p:
        return ""
    if kind == "mel":
        size = f"{p.get('height')}x{p.get('width')}" if p.get("height") else "natural size"
        return f"{p.get('preset')}: {float(p.get('sr', 0)) / 1000:g} kHz, {p.get('n_mels')} mels, {size}"
    if kind == "faces":
        codec = p.get("codec", "raw") + (f" q{p['quality']}" if p.get("codec") == "jpeg" else "")
        return f"{p.get('detector')}: {p.get('frames')} frames of {p.get('size')} px, {codec}"
    if kind.startswith("emb-"):
        size = f", {p['image_size']} px" if p.get("image_size") else ""
        return f"{p.get('backbone')} on {p.get('source')}{size}"
    if kind == "stats":
        return f"{p.get('version')} on {p.get('mel')} + {p.get('faces')}"
    return json.dumps(p, sort_keys=True, default=str)[:80]


def cache_folders(root: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """(kind, folder) of every folder of the cache: ``mel``, ``faces``, ``emb-mel``, ``emb-faces``, ``stats``,
    ``selfsup/<kind>`` (each folder under ``selfsup/``) and ``other``."""
    root = Path(root) if root is not None else cache_dir()
    out: list[tuple[str, Path]] = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name) if root.is_dir() else ():
        if not entry.is_dir():
            continue
        path = Path(entry.path)
        match = _KEYED.match(entry.name)
        if match:
            out.append((match.group(1), path))
        elif entry.name == "selfsup":
            for sub in sorted(os.scandir(path), key=lambda e: e.name):
                if sub.is_dir():
                    out.append((f"selfsup/{sub.name.rsplit('-', 1)[0]}", Path(sub.path)))
        else:
            out.append(("other", path))
    return out


# where a cache folder keeps stacks rebuilt on demand: mel packed stacks, embedding stacks (features.embeddings)
STACK_DIRS = ("packed", "stacks")


def cache_report(root: str | os.PathLike | None = None) -> pd.DataFrame:
    """One row per cache folder (REPORT_COLUMNS): its kind, key, a parameter summary, clips (manifest rows, or
    entry files where a folder has no manifest) by status, bytes outside and inside ``packed/``, and its last use
    (the newest modification time inside: a write, or a packed stack's use; local time, and ``last_use_ts`` in
    seconds since the epoch)."""
    rows = []
    for kind, folder in cache_folders(root):
        params = _read_params(folder)
        _, total, newest = _walk(folder)
        stacks = [f for sub in STACK_DIRS for f in packed_files(folder / sub)]
        packed_bytes = sum(_walk(folder / sub)[1] for sub in STACK_DIRS if (folder / sub).is_dir())
        counts: dict[str, int] = {}
        rows_read = read_manifest(folder)
        if rows_read:
            for row in rows_read.values():
                counts[row["status"]] = counts.get(row["status"], 0) + 1
            clips = sum(counts.values())
        else:
            clips = _walk(folder / "entries")[0] if (folder / "entries").is_dir() else 0
        key = folder.name.rsplit("-", 1)[-1] if kind != "other" else ""
        rows.append({"kind": kind, "folder": folder.name if not kind.startswith("selfsup/") else
                     f"selfsup/{folder.name}", "key": key, "params": params_summary(kind, params), "clips": clips,
                     "ok": counts.get("ok", 0), "no_audio": counts.get("no_audio", 0),
                     "error": counts.get("error", 0), "entry_bytes": total - packed_bytes,
                     "packed_stacks": len(stacks), "packed_bytes": packed_bytes,
                     "last_use": time.strftime("%Y-%m-%d %H:%M", time.localtime(newest)) if newest else "",
                     "last_use_ts": newest})
    return pd.DataFrame(rows, columns=REPORT_COLUMNS)


def report_totals(report: pd.DataFrame) -> pd.DataFrame:
    """The report summed per kind (folders, clips, bytes), with an ``all`` row."""
    cols = ["clips", "entry_bytes", "packed_stacks", "packed_bytes"]
    totals = report.groupby("kind", sort=True)[cols].sum()
    totals.insert(0, "folders", report.groupby("kind", sort=True).size())
    totals.loc["all"] = [len(report), *report[cols].sum().tolist()]
    return totals.astype(int).reset_index()


# ---------------------------------------------------------------------------------------------------------------
# what runs and presets use


def _feature_names(params: Mapping[str, Any]) -> set[str]:
    """The mel and faces folder names a run with ``params`` reads (its profile part's audio image too)."""
    names = {f"mel-{params_hash(mel_params(params))}", f"faces-{params_hash(face_params(params))}"}
    if params.get("profile_mel_preset"):
        names.add(f"mel-{params_hash(mel_params({**params, 'mel_preset': params['profile_mel_preset']}))}")
    return names


def _param_sets(data: Mapping[str, Any]) -> list[dict]:
    """A parameter file's own set plus one per candidate and variant (base + shared + its overrides)."""
    base = {k: v for k, v in data.items() if k not in ("candidates", "variants", "shared")}
    shared = data.get("shared") if isinstance(data.get("shared"), Mapping) else {}
    sets = [base]
    for key in ("candidates", "variants"):
        for cand in data.get(key) or []:
            if isinstance(cand, Mapping):
                sets.append({**base, **shared, **{k: v for k, v in cand.items() if k != "name"}})
    return sets


def parameter_files(outputs: str | os.PathLike | None = None,
                    presets: str | os.PathLike | None = None) -> list[Path]:
    """Every run's ``params.yaml`` (and the per-notebook ``params/*.yaml`` inside it) under ``outputs`` and every
    preset ``*.yaml`` in ``presets`` (defaults: ``outputs_dir()`` and ``params_dir()``)."""
    outputs = Path(outputs) if outputs is not None else outputs_dir()
    presets = Path(presets) if presets is not None else params_dir()
    files = sorted(presets.glob("*.yaml")) if presets.is_dir() else []
    for run in sorted(p for p in outputs.iterdir() if p.is_dir()) if outputs.is_dir() else []:
        if (run / "params.yaml").is_file():
            files.append(run / "params.yaml")
            files.extend(sorted((run / "params").glob("*.yaml")))
    return files


def used_folders(outputs: str | os.PathLike | None = None,
                 presets: str | os.PathLike | None = None) -> dict[str, str]:
    """{mel / faces folder name: the first parameter file that uses it} over ``parameter_files``. A file that does
    not parse, or whose feature parameters do not resolve, is skipped."""
    used: dict[str, str] = {}
    for path in parameter_files(outputs, presets):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        if not isinstance(data, Mapping):
            continue
        for params in _param_sets(data):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    names = _feature_names(params)
            except (ValueError, TypeError, KeyError):
                continue
            for name in names:
                used.setdefault(name, str(path))
    return used


def stale_folders(root: str | os.PathLike | None = None, outputs: str | os.PathLike | None = None,
                  presets: str | os.PathLike | None = None, older_than_days: float | None = None,
                  report: pd.DataFrame | None = None) -> pd.DataFrame:
    """The report's rows of folders no run or preset uses (``used_folders``), with a ``why`` column.

    A ``mel`` or ``faces`` folder is stale when no parameter set resolves to it; an ``emb-*`` folder when its
    source folder is stale or gone; a ``stats`` folder when its mel or faces folder is. ``selfsup`` and other
    folders are never called stale. With ``older_than_days`` only folders last used before then.
    """
    root = Path(root) if root is not None else cache_dir()
    report = cache_report(root) if report is None else report
    used = used_folders(outputs, presets)
    present = set(report.folder)
    why: list[str] = []
    for kind, folder in zip(report.kind, report.folder):
        reason = ""
        if kind in ("mel", "faces") and folder not in used:
            reason = "no run or preset uses these parameters"
        elif kind.startswith("emb-") or kind == "stats":
            params = _read_params(root / folder)
            sources = [params.get("source")] if kind != "stats" else [params.get("mel"), params.get("faces")]
            gone = [s for s in sources if not s or s not in used or s not in present]
            if gone:
                reason = f"made from {', '.join(str(s) for s in gone)}: gone, or no run or preset uses it"
        why.append(reason)
    out = report.assign(why=why)
    out = out[out.why != ""]
    if older_than_days is not None:
        out = out[out.last_use_ts < time.time() - float(older_than_days) * 86400]
    return out.reset_index(drop=True)


def prune(root: str | os.PathLike | None = None, yes: bool = False, older_than_days: float | None = None,
          outputs: str | os.PathLike | None = None, presets: str | os.PathLike | None = None) -> pd.DataFrame:
    """What ``cache prune`` removes: every stale folder (``stale_folders``) and every packed stack of the others
    (rebuilt when next asked for; a reader that has one mapped keeps reading it, see ``prune_packed``).

    Args:
        root: The cache (default ``cache_dir()``).
        yes: Remove them; without it nothing is touched (a dry run).
        older_than_days: Only folders and stacks last used more than this many days ago.
        outputs: Run folders to read (default ``outputs_dir()``).
        presets: Preset folder (default ``params_dir()``).

    Returns:
        One row per item: ``what`` ("stale folder" / "packed stack"), ``path``, ``bytes``, ``why``, ``removed``.
    """
    root = Path(root) if root is not None else cache_dir()
    report = cache_report(root)
    stale = stale_folders(root, outputs, presets, older_than_days, report)
    cutoff = time.time() - float(older_than_days) * 86400 if older_than_days is not None else None
    items: list[dict] = []
    for folder, entry, packed, why in zip(stale.folder, stale.entry_bytes, stale.packed_bytes, stale.why):
        items.append({"what": "stale folder", "path": str(root / folder), "bytes": int(entry + packed), "why": why})
    gone = set(stale.folder)
    for folder in report.folder:
        if folder in gone:
            continue
        for stack in (f for sub in STACK_DIRS for f in packed_files(root / folder / sub)):
            try:
                st = stack.stat()
            except FileNotFoundError:
                continue
            if cutoff is None or st.st_mtime < cutoff:
                items.append({"what": "packed stack", "path": str(stack), "bytes": int(st.st_size),
                              "why": "rebuilt when asked for"})
    for item in items:
        item["removed"] = False
        if not yes:
            continue
        path = Path(item["path"])
        if item["what"] == "stale folder":
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                path.unlink()
            except OSError:
                continue  # gone meanwhile, or held open where that forbids unlinking
            path.with_suffix(".json").unlink(missing_ok=True)
        item["removed"] = not path.exists()
    return pd.DataFrame(items, columns=["what", "path", "bytes", "why", "removed"])
