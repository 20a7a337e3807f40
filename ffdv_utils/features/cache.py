"""The on-disk feature cache: one folder per parameter set, so a changed parameter never reads a stale feature::

    <cache_root>/mel-<params_hash>/
        params.json              the resolved parameters (what the hash was taken of)
        manifest.csv             one row per processed clip (video_name, has_audio, status, error, note, ...)
        manifest.shard-K-of-N.csv   the rows written by a sharded extraction (``--shard K/N``); read together with
                                 manifest.csv, merged into it by the next unsharded extraction (``merge_manifests``)
        entries/<2 hex>/<name>.npy   one uint8 array per clip whose status is "ok"
        packed/packed-<hash>.npy     fixed-size stacks made by MelStore.packed() (memory-mapped); the
                                     PACKED_KEEP most recently used are kept, older ones removed (prune_packed)
    <cache_root>/faces-<params_hash>/   the same for face crops (entries are .npz: faces + found flags;
                                        mtcnn adds mouths, landmarks, landmarks_frame; with face_codec png or
                                        jpeg the crop arrays are stored encoded: ``encode_crops``)

Every file is written through ``core.files.atomic_write``, so a run killed at any moment leaves only whole files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import cv2
import numpy as np
import pandas as pd

from ..core.files import atomic_path, atomic_write, file_stamp
from ..core.progress import progress_bar
from ..core.shards import Shard
from .mel import fallback_shape
from .params import face_params

# ---------------------------------------------------------------------------------------------------------------
# how face crops are stored (face_codec)

CODED_ARRAYS = ("faces", "mouths")  # the crop arrays of a face entry that face_codec png / jpeg compresses
_MAX_ROWS = 65000  # JPEG images are at most 65,535 pixels high: longer stacks are encoded in several parts


def encode_crops(entry: Mapping[str, np.ndarray], codec: str = "raw", quality: int = 90) -> dict[str, np.ndarray]:
    """A face entry as the cache stores it.

    ``raw`` leaves it as it is. ``png`` and ``jpeg`` replace each crop array ``<key>`` of CODED_ARRAYS, uint8
    (T, S, S, 3) RGB, by ``<key>_encoded`` (uint8 bytes: the T crops stacked into one (T*S, S, 3) image, encoded with
    OpenCV; a very long stack in several images), ``<key>_offsets`` (where each image starts and ends in those bytes)
    and ``<key>_shape``. The crops are stacked whole, so with S a multiple of 16 (112, 48) no JPEG block straddles two
    frames. Everything else (found, landmarks) is kept as it is.

    Args:
        entry: What ``features.faces.face_entry`` returns.
        codec: "raw", "png" (lossless, zlib level 3) or "jpeg".
        quality: JPEG quality, 1-100.

    Returns:
        The arrays to write with ``np.savez``; ``decode_crops`` gives ``entry`` back (exactly for raw and png).
    """
    if codec == "raw":
        return dict(entry)
    if codec == "png":
        flags, ext = [cv2.IMWRITE_PNG_COMPRESSION, 3], ".png"  # 9: 4 % smaller, 5x slower
    elif codec == "jpeg":
        flags, ext = [cv2.IMWRITE_JPEG_QUALITY, int(quality)], ".jpg"
    else:
        raise ValueError(f"unknown face codec {codec!r} (raw, png or jpeg)")
    out: dict[str, np.ndarray] = {}
    for key, arr in entry.items():
        if key not in CODED_ARRAYS or arr.ndim != 4 or arr.shape[-1] != 3 or not arr.size:
            out[key] = arr
            continue
        t, s = arr.shape[0], arr.shape[1]
        step = max(1, _MAX_ROWS // s)
        parts = []
        for start in range(0, t, step):
            img = cv2.cvtColor(np.ascontiguousarray(arr[start:start + step]).reshape(-1, arr.shape[2], 3),
                               cv2.COLOR_RGB2BGR)
            ok, buf = cv2.imencode(ext, img, flags)
            if not ok:
                raise ValueError(f"OpenCV could not encode the {key} crops as {codec}")
            parts.append(buf.reshape(-1))
        out[f"{key}_encoded"] = np.concatenate(parts).astype(np.uint8)
        out[f"{key}_offsets"] = np.cumsum([0] + [len(p) for p in parts]).astype(np.int64)
        out[f"{key}_shape"] = np.array(arr.shape, np.int64)
    return out


def decode_crops(stored: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The face entry back from what ``encode_crops`` stored (an entry without encoded arrays is returned as is).

    Raises:
        ValueError: The bytes of an encoded array do not decode (a damaged entry).
    """
    out: dict[str, np.ndarray] = {}
    for key, arr in stored.items():
        if key.endswith("_encoded"):
            base = key[: -len("_encoded")]
            shape = tuple(int(v) for v in stored[f"{base}_shape"])
            offsets = stored[f"{base}_offsets"]
            parts = []
            for a, b in zip(offsets[:-1], offsets[1:]):
                img = cv2.imdecode(arr[int(a):int(b)], cv2.IMREAD_COLOR)
                if img is None:
                    raise ValueError(f"the {base} crops of this entry do not decode")
                parts.append(img)
            out[base] = cv2.cvtColor(np.concatenate(parts), cv2.COLOR_BGR2RGB).reshape(shape)
        elif not (key.endswith(("_offsets", "_shape")) and f"{key.rsplit('_', 1)[0]}_encoded" in stored):
            out[key] = arr
    return out


def encode_mel(img: np.ndarray, codec: str = "raw") -> np.ndarray:
    """The array a mel entry's ``.npy`` holds: the uint8 image itself (``raw``) or its PNG bytes as a 1-D uint8 array
    (``png``: lossless, about half the bytes on realworld-dev's clips). ``decode_mel`` reverses both."""
    if codec == "raw":
        return img
    if codec != "png":
        raise ValueError(f"unknown mel codec {codec!r}")
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(img), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise ValueError(f"could not PNG-encode a mel image of shape {img.shape}")
    return buf.reshape(-1)


def decode_mel(stored: np.ndarray) -> np.ndarray:
    """A mel entry's image from what its ``.npy`` holds (a 2-D image is raw; a 1-D array is PNG bytes)."""
    if stored.ndim == 2:
        return stored
    img = cv2.imdecode(stored, cv2.IMREAD_UNCHANGED)
    if img is None or img.ndim != 2:
        raise ValueError("a mel entry that is neither an image nor PNG bytes of one")
    return img


def as_stored(entry: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """What ``FaceStore.entry`` returns for a clip whose ``face_entry`` is ``entry`` under the resolved face
    ``params`` (their ``codec`` / ``quality``): for a path that crops a clip without the cache, so its crops match
    those a model was trained on."""
    codec = params.get("codec", "raw")
    return dict(entry) if codec == "raw" else decode_crops(encode_crops(entry, codec, params.get("quality", 90)))


# ---------------------------------------------------------------------------------------------------------------
# cache stores

_MANIFEST_COLUMNS = ["video_name", "has_audio", "status", "error", "note", "seconds", "shape", "source"]


def entry_file(name: str, suffix: str) -> str:
    """Relative path of a clip's entry: a 2-hex-char subfolder (spreads files) and a filesystem-safe name."""
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:150]
    if safe != name:  # keep names unique after sanitising
        safe = f"{safe}-{digest[:8]}"
    return f"{digest[:2]}/{safe}{suffix}"


class _Store:
    """Shared part of MelStore and FaceStore: manifest, entry paths, statuses."""

    kind = ""
    suffix = ".npy"

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        if not (self.root / "params.json").is_file():
            raise FileNotFoundError(f"{self.root} is not a {self.kind} cache (no params.json)")
        self.params: dict[str, Any] = json.loads((self.root / "params.json").read_text(encoding="utf-8"))
        self.key = self.root.name.split("-", 1)[-1]
        self.stats: dict[str, Any] = {}
        self.reload()

    def reload(self) -> None:
        """Re-reads the manifest (another process may have extended the cache)."""
        rows = read_manifest(self.root)
        self.table = pd.DataFrame(list(rows.values()), columns=_MANIFEST_COLUMNS)
        self.table["has_audio"] = self.table["has_audio"].astype(bool)
        self._status = dict(zip(self.table["video_name"], self.table["status"]))
        self._source = dict(zip(self.table["video_name"], self.table["source"]))

    @property
    def names(self) -> list[str]:
        """Every clip the cache has a manifest row for (any status)."""
        return list(self._status)

    def __contains__(self, name: object) -> bool:
        return name in self._status

    def __len__(self) -> int:
        return len(self._status)

    def status(self, name: str) -> str:
        """'ok', 'no_audio', 'error', or 'missing' for a clip the cache has not seen."""
        return self._status.get(name, "missing")

    def path(self, name: str) -> Path:
        """Where the clip's entry lives (whether or not it exists)."""
        return self.root / "entries" / entry_file(name, self.suffix)

    def __repr__(self) -> str:
        counts = self.table["status"].value_counts().to_dict() if len(self.table) else {}
        return f"{type(self).__name__}({str(self.root)!r}, clips={len(self)}, {counts})"


# packed stacks kept per mel cache folder (MelStore.packed): a run packs a few lists (train, val, test); older ones
# are removed when a new one is written and rebuilt from the entries if asked for again. Small, because a stack of
# every clip costs image_size**2 bytes per clip (4 GB at 128 px for 250,000 clips, 16 GB at 256 px)
PACKED_KEEP = 4


class MelStore(_Store):
    """Read access to a mel cache folder (``mel-<hash>``).

    ``get`` returns the stored uint8 image, or zeros of ``fallback_shape`` for a clip without usable audio, a
    failed or an unknown clip; ``has_audio`` is True only for clips with a real image.
    """

    kind = "mel"

    @property
    def fallback_shape(self) -> tuple[int, int]:
        return fallback_shape(self.params)

    def get(self, name: str) -> np.ndarray:
        """uint8 2-D mel image of a clip (zeros fallback when it has none)."""
        if self._status.get(name) == "ok":
            try:
                return decode_mel(np.load(self.path(name)))
            except (OSError, ValueError, cv2.error):
                pass  # entry deleted or damaged behind our back: fall back rather than stop a training run
        return np.zeros(self.fallback_shape, np.uint8)

    def has_audio(self, name: str) -> bool:
        """True when the clip has a real spectrogram."""
        return self._status.get(name) == "ok"

    def packed(self, names: Iterable[str], height: int, width: int, progress: bool = False) -> np.ndarray:
        """All ``names`` resized to (height, width) once, as one memory-mapped uint8 array (N, height, width).

        The stack is written once to ``packed/packed-<hash of names and size>.npy`` (atomically) and opened
        read-only with ``mmap_mode='r'`` afterwards, so a training loader indexes rows instead of decoding files.
        Each use renews the stack's modification time; writing a new one removes all but the PACKED_KEEP most
        recently used stacks of the folder (``prune_packed``: safe for readers that have one mapped).

        Args:
            names: Clip names, in the order of the rows.
            height: Row height.
            width: Row width.
            progress: Show a progress bar while building.

        Returns:
            Read-only memmap (N, height, width) uint8.
        """
        names = list(names)
        payload: list = [names, int(height), int(width)]
        stamps = [f"{self._status.get(n, '')}|{self._source.get(n, '')}" for n in names]
        if any(self._source.get(n) for n in names):  # a recomputed entry must not be read from an old stack
            payload.append(stamps)
        key = hashlib.sha1(json.dumps(payload).encode("utf-8")).hexdigest()[:12]
        path = self.root / "packed" / f"packed-{key}.npy"
        if path.is_file():
            try:
                os.utime(path)  # its last use: what prune_packed keeps the most recent stacks by
            except OSError:
                pass  # removed meanwhile (handled below), or a read-only cache
            try:
                return np.load(path, mmap_mode="r")
            except FileNotFoundError:
                pass  # just removed by another process's prune_packed: build it again
        with atomic_path(path, ".tmp.npy") as tmp:
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(names), height, width))
            for i, name in enumerate(progress_bar(names, desc="pack mels", unit="clip", disable=not progress)):
                img = self.get(name)
                if img.shape != (height, width):
                    img = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
                arr[i] = img
            arr.flush()
            del arr
            atomic_write(path.with_suffix(".json"), json.dumps({"names": names, "height": height, "width": width}))
        packed = np.load(path, mmap_mode="r")
        prune_packed(self.root / "packed", keep=PACKED_KEEP, protect=(path,))
        return packed


def packed_files(folder: str | os.PathLike) -> list[Path]:
    """The packed stacks of a ``packed/`` folder (``packed-<hash>.npy``) or of an embedding folder's ``stacks/``
    (``stack-<hash>.npy``, features.embeddings), most recently used first."""
    stacks = []
    for entry in os.scandir(folder) if Path(folder).is_dir() else ():
        if entry.name.startswith(("packed-", "stack-")) and entry.name.endswith(".npy"):
            try:
                stacks.append((entry.stat().st_mtime_ns, entry.name, Path(entry.path)))
            except FileNotFoundError:
                continue  # removed meanwhile
    return [p for _, _, p in sorted(stacks, reverse=True)]


def prune_packed(folder: str | os.PathLike, keep: int = 0, protect: Iterable[Path] = ()) -> list[tuple[Path, int]]:
    """Removes all but the ``keep`` most recently used packed stacks of a ``packed/`` folder (and their .json).

    Safe while other processes read them: on Linux (and any POSIX system) unlinking a file removes its name only;
    a process that has it memory-mapped (``np.load(mmap_mode='r')``) keeps reading the same bytes until it drops
    the map, and the disk space is freed then. A process that asks for a removed stack afterwards rebuilds it
    (``MelStore.packed``). Where the system refuses to unlink an open file (Windows), that stack is left for later.

    Args:
        folder: A cache folder's ``packed/``.
        keep: How many of the most recently used stacks stay (their use renews their modification time).
        protect: Stacks never removed here (the one just built).

    Returns:
        (path, bytes) of every stack removed.
    """
    protected = {Path(p) for p in protect}
    removed = []
    stacks = packed_files(folder)
    for path in stacks[keep:]:
        if path in protected:
            continue
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError:
            continue  # held open where that forbids unlinking: left for a later prune
        path.with_suffix(".json").unlink(missing_ok=True)
        removed.append((path, size))
    kept = {p.with_suffix(".json").name for p in stacks} - {p.with_suffix(".json").name for p, _ in removed}
    for entry in os.scandir(folder) if Path(folder).is_dir() else ():  # a .json whose stack is gone
        if entry.name.startswith("packed-") and entry.name.endswith(".json") and entry.name not in kept:
            if not Path(entry.path).with_suffix(".npy").exists():
                Path(entry.path).unlink(missing_ok=True)
    return removed


class FaceStore(_Store):
    """Read access to a face-crop cache folder (``faces-<hash>``).

    Every entry holds ``faces`` and ``found`` (stored encoded with ``face_codec`` png / jpeg, decoded on read);
    an ``mtcnn`` cache's entries also hold ``mouths``, ``landmarks``
    (face-crop pixels) and ``landmarks_frame`` (decoded-frame pixels). ``mouths`` and ``landmarks`` return None
    when the cache stores none (``haar`` and ``center``: ``has_landmarks`` False), and zeros for a failed or unknown
    clip of an ``mtcnn`` cache (its ``face_found`` is all False then), like ``get``.
    """

    kind = "faces"
    suffix = ".npz"

    @property
    def fallback_shape(self) -> tuple[int, int, int, int]:
        fp = face_params(self.params)
        return fp["frames"], fp["size"], fp["size"], 3

    @property
    def has_landmarks(self) -> bool:
        """True when the entries carry mouth crops and landmarks (detector ``mtcnn``)."""
        return self.params.get("detector") == "mtcnn"

    def entry(self, name: str, keys: Iterable[str] | None = None) -> dict[str, np.ndarray] | None:
        """The arrays of the clip's entry (None when the clip failed, is unknown or is damaged).

        Args:
            name: Clip name.
            keys: Only these arrays (e.g. ``("faces",)``): the others are neither read nor decoded. Default: all.
        """
        if self._status.get(name) != "ok":
            return None
        try:
            with np.load(self.path(name)) as z:
                if keys is None:
                    members = z.files
                else:
                    wanted = {f"{k}{tail}" for k in keys for tail in ("", "_encoded", "_offsets", "_shape")}
                    members = [m for m in z.files if m in wanted]
                return decode_crops({k: z[k] for k in members})
        except (OSError, ValueError, KeyError, cv2.error):
            return None  # entry deleted or damaged behind our back: fall back rather than stop a training run

    def get(self, name: str) -> np.ndarray:
        """uint8 (T, S, S, 3) RGB crops (zeros when the clip failed or is unknown)."""
        got = self.entry(name, ("faces",))
        return got["faces"] if got is not None else np.zeros(self.fallback_shape, np.uint8)

    def face_found(self, name: str) -> np.ndarray:
        """bool (T,): True where the detector found a face in that frame."""
        got = self.entry(name, ("found",))
        return got["found"] if got is not None else np.zeros(self.fallback_shape[0], bool)

    def mouths(self, name: str) -> np.ndarray | None:
        """uint8 (T, M, M, 3) RGB mouth crops (mtcnn caches; zeros for a failed clip), None for haar / center."""
        if not self.has_landmarks:
            return None
        got = self.entry(name, ("mouths",))
        if got is None or "mouths" not in got:
            m = int(self.params["mouth_size"])
            return np.zeros((self.fallback_shape[0], m, m, 3), np.uint8)
        return got["mouths"]

    def landmarks(self, name: str, frame: bool = False) -> np.ndarray | None:
        """float32 (T, 5, 2) MTCNN landmarks: left eye, right eye, nose, left and right mouth corner, as (x, y).

        In face-crop pixels (``frame=False``: where they lie in ``get``'s crops) or in pixels of the decoded frame
        (shorter side ``work_size``). Zeros for a failed clip of an mtcnn cache; None for haar / center.
        """
        if not self.has_landmarks:
            return None
        key = "landmarks_frame" if frame else "landmarks"
        got = self.entry(name, (key,))
        if got is None or key not in got:
            return np.zeros((self.fallback_shape[0], 5, 2), np.float32)
        return got[key]


MANIFEST = "manifest.csv"
_SHARD_MANIFEST = re.compile(r"^manifest\.shard-(\d+)-of-(\d+)\.csv$")


def shard_manifest_name(shard: Shard) -> str:
    """``manifest.shard-K-of-N.csv``: the manifest a sharded extraction writes (never ``manifest.csv``)."""
    return f"manifest.shard-{shard.tag}.csv"


def manifest_files(root: Path) -> list[Path]:
    """``manifest.csv`` and every shard manifest of a cache folder, oldest first (by modification time, then name):
    the order in which their rows are applied, so a clip's row comes from the newest file that has it."""
    found = []
    if Path(root).is_dir():
        for f in os.scandir(root):
            if f.is_file() and (f.name == MANIFEST or _SHARD_MANIFEST.match(f.name)):
                try:
                    found.append((f.stat().st_mtime_ns, f.name, Path(f.path)))
                except FileNotFoundError:  # merged and deleted meanwhile
                    pass
    return [p for _, _, p in sorted(found)]


def read_manifest_files(root: Path) -> tuple[dict[str, dict], dict[Path, str]]:
    """The union of a cache folder's manifests (``manifest_files``) and the stamp of each file read.

    A shard manifest deleted while it is read (a merge has just put its rows into ``manifest.csv``) makes the
    whole folder be read again, so no row is missed.
    """
    for attempt in range(5):
        rows: dict[str, dict] = {}
        read: dict[Path, str] = {}
        try:
            for path in manifest_files(root):
                stamp = file_stamp(path)
                try:
                    df = pd.read_csv(path, dtype=str, keep_default_na=False)
                except pd.errors.EmptyDataError:
                    df = pd.DataFrame(columns=_MANIFEST_COLUMNS)
                except (pd.errors.ParserError, UnicodeDecodeError) as exc:
                    raise ValueError(f"{path}: not a readable manifest ({exc})") from None
                for rec in df.to_dict("records"):
                    rec["has_audio"] = rec.get("has_audio") == "True"
                    rows[rec["video_name"]] = {c: rec.get(c, "") for c in _MANIFEST_COLUMNS}
                read[path] = stamp
            return rows, read
        except FileNotFoundError:
            if attempt == 4:
                raise
    return rows, read


def read_manifest(root: Path) -> dict[str, dict]:
    """{clip: row} of a cache folder: ``manifest.csv`` and the shard manifests together (``read_manifest_files``)."""
    return read_manifest_files(root)[0]


def write_manifest(root: Path, rows: Mapping[str, dict], shard: Shard | None = None) -> None:
    """Write ``rows`` to ``manifest.csv``, or with ``shard`` to that shard's own manifest (atomically)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_MANIFEST_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows.values())
    atomic_write(root / (shard_manifest_name(shard) if shard is not None else MANIFEST), buf.getvalue())


def drop_shard_manifests(read: Mapping[Path, str]) -> list[Path]:
    """Delete the shard manifests among ``read`` (path: stamp when read) that are unchanged since: their rows are in
    ``manifest.csv`` now. One that a running shard has rewritten meanwhile is kept. Returns the files deleted."""
    dropped = []
    for path, stamp in read.items():
        if path.name != MANIFEST and file_stamp(path) == stamp:
            path.unlink(missing_ok=True)
            dropped.append(path)
    return dropped


def merge_manifests(root: Path) -> dict[str, int]:
    """Compact a cache folder's shard manifests into ``manifest.csv`` (no entry is read or recomputed).

    Returns the number of shard files merged and of rows in ``manifest.csv`` afterwards. Run it (or an unsharded
    extraction, which does the same) once no shard is writing to the folder any more.
    """
    rows, read = read_manifest_files(Path(root))
    shards = [p for p in read if p.name != MANIFEST]
    if shards:
        write_manifest(Path(root), rows)
        drop_shard_manifests(read)
    return {"shard_files": len(shards), "rows": len(rows)}
