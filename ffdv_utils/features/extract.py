"""Parallel, resumable extraction into the cache (``extract_mels``, ``extract_faces``).

Workers decode, compute and write their own entries; the parent receives one small row per clip, so memory does
not grow with the number of clips. A restarted run skips clips whose entry exists (or that the manifest lists as
finished); a clip that fails is recorded with its error and the run goes on; a full disk stops the run cleanly
with the finished entries kept. Workers start from a forkserver and use one thread each. With ``shard`` (part K of
N, ``core.shards``) a run extracts only that part's clips and writes its rows to its own manifest file, so several
processes or machines fill one cache folder at once; an unsharded run merges those files into ``manifest.csv``.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing as mp_
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import cv2
import numpy as np
import pandas as pd

from ..core.config import params_hash
from ..core.files import atomic_write, file_stamp, is_disk_full
from ..core.progress import progress_bar
from ..core.shards import Shard
from ..media.decode import MediaError, load_audio, load_frames
from .cache import (
    FaceStore,
    MelStore,
    as_stored,
    drop_shard_manifests,
    encode_crops,
    encode_mel,
    entry_file,
    read_manifest_files,
    write_manifest,
)
from .faces import face_entry, load_mtcnn
from .mel import audio_status, mel_image
from .params import face_params, mel_params

# ---------------------------------------------------------------------------------------------------------------
# extraction engine (shared by mels and faces)

_W: dict[str, Any] = {}  # per-worker state set by _init_worker


def _limit_threads() -> None:
    """One thread per library inside a fresh (spawn / forkserver) worker: the pool already uses every core."""
    cv2.setNumThreads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    if "torch" in sys.modules:  # only if something imported it; importing it here would cost ~200 MB per worker
        sys.modules["torch"].set_num_threads(1)


class _parent_single_threaded:
    """Before forking: one thread for OpenCV, BLAS and torch in this process, restored when the pool is done.

    Forked workers inherit the setting. Changing it inside a forked child is not safe: cv2.setNumThreads() there
    hangs for good when the parent had already used OpenCV's thread pool (found by the test suite).
    """

    def __enter__(self) -> None:
        self.cv2 = cv2.getNumThreads()
        cv2.setNumThreads(1)
        # torch's count is read before threadpoolctl limits OpenMP, which torch reports as its own count
        self.torch = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
        self.blas = None
        try:
            from threadpoolctl import threadpool_limits

            self.blas = threadpool_limits(1)
        except ImportError:
            pass
        if self.torch is not None:
            sys.modules["torch"].set_num_threads(1)

    def __exit__(self, *exc: Any) -> None:
        cv2.setNumThreads(self.cv2)
        if self.blas is not None:
            self.blas.restore_original_limits()
        if self.torch is not None:
            sys.modules["torch"].set_num_threads(self.torch)


def _init_worker(kind: str, params: dict, root: str, limit_threads: bool = True, in_worker: bool = True) -> None:
    if limit_threads:
        _limit_threads()
    if kind == "faces" and params["detector"] == "mtcnn":
        # One MTCNN per process, built before the first clip; it imports torch, which _limit_threads could not see.
        had_torch = "torch" in sys.modules
        load_mtcnn(params["device"])
        if in_worker and (limit_threads or not had_torch):  # a forked child inherits the parent's 1 when it had torch
            sys.modules["torch"].set_num_threads(1)  # measured: 2 threads on a loaded 2-core machine was 15x slower
    _W.update(kind=kind, params=params, root=Path(root), suffix=".npy" if kind == "mel" else ".npz")


def compute_mel(path: str, mp: Mapping[str, Any]) -> tuple[dict, np.ndarray | None]:
    """One clip's mel image as extraction makes it: (its manifest fields: status ok or no_audio, has_audio, seconds,
    note, shape; the uint8 image, None when the clip has no usable audio). ``mp``: resolved mel parameters
    (``mel_params``). Raises MediaError when the file cannot be decoded."""
    audio = load_audio(path, mp["sr"], mp["max_seconds"] or None, resampler=mp["resampler"])
    reason = audio_status(audio, mp)
    row = {"seconds": round(audio.size / mp["sr"], 3)}
    if reason:
        return {**row, "status": "no_audio", "has_audio": False, "note": reason}, None
    img = mel_image(audio, mp)
    return {**row, "status": "ok", "has_audio": True, "shape": "x".join(map(str, img.shape))}, img


def compute_faces(path: str, fp: Mapping[str, Any]) -> tuple[dict, dict[str, np.ndarray]]:
    """One clip's face entry as extraction makes it: (its manifest fields; the arrays of ``features.faces.face_entry``).
    ``fp``: resolved face parameters (``face_params``). Raises MediaError when the file cannot be decoded."""
    frames = load_frames(path, fp["frames"], fp["work_size"] or None, threads=1)
    entry = face_entry(frames, fp)  # haar / center: faces, found; mtcnn: also mouths, landmarks, landmarks_frame
    found = entry["found"]
    note = f"{int(found.sum())}/{found.size} frames with a face"
    return {"status": "ok", "has_audio": False, "note": note, "shape": "x".join(map(str, entry["faces"].shape))}, entry


def compute_entry(kind: str, name: str, path: str | None, params: Mapping[str, Any]) -> tuple[dict, Any]:
    """One clip's features in this process, nothing written: (its manifest row, as ``extract_mels`` /
    ``extract_faces`` would record it; the mel image or face entry, None when there is none). A clip that cannot be
    decoded gets status ``error`` and the error the cache would record, never an exception."""
    row = {"video_name": name, "has_audio": False, "status": "error", "error": "", "note": "", "seconds": "",
           "shape": "", "source": ""}
    try:
        if not isinstance(path, str) or not path:
            raise MediaError(str(path), "no path for this clip")
        result, arrays = (compute_mel if kind == "mel" else compute_faces)(path, params)
    except MediaError as e:
        return {**row, "error": e.message}, None
    except Exception as e:  # one bad clip must not end the call: reported in its row, as extraction does
        return {**row, "error": f"{type(e).__name__}: {e}"}, None
    if kind == "faces":  # the crops as the cache returns them (decoded from the stored codec)
        arrays = as_stored(arrays, params)
    return {**row, **result}, arrays


def _mel_task(path: str) -> tuple[dict, Callable | None]:
    row, img = compute_mel(path, _W["params"])
    if img is None:
        return row, None
    stored = encode_mel(img, _W["params"].get("codec", "raw"))
    return row, (lambda f: np.save(f, stored))


def _face_task(path: str) -> tuple[dict, Callable | None]:
    fp = _W["params"]
    row, entry = compute_faces(path, fp)
    stored = encode_crops(entry, fp.get("codec", "raw"), fp.get("quality", 90))
    return row, (lambda f: np.savez(f, **stored))


def _work(task: tuple[str, str]) -> dict:
    """Runs one clip in a worker; writes its entry; returns only a small row (never the array)."""
    name, path = task
    t0, c0 = time.perf_counter(), time.process_time()
    row = {"video_name": name, "has_audio": False, "status": "error", "error": "", "note": "", "seconds": "",
           "shape": "", "stage": "", "source": file_stamp(path)}
    stage = "decode"
    try:
        if not isinstance(path, str) or not path:
            raise MediaError(str(path), "no path for this clip")
        fn = _mel_task if _W["kind"] == "mel" else _face_task
        stage = "decode"
        result, writer = fn(path)
        row.update(result)
        if writer is not None:
            stage = "write"
            atomic_write(_W["root"] / "entries" / entry_file(name, _W["suffix"]), writer)
    except MediaError as e:
        row.update(status="error", stage=stage, error=e.message)
    except OSError as e:
        if is_disk_full(e):  # not the clip's fault (ENOSPC, or numpy's short write): the parent stops the run
            row.update(status="disk_full", stage="write", error=f"{type(e).__name__}: {e}")
        else:
            row.update(status="error", stage=stage if stage == "write" else _W["kind"],
                       error=f"{type(e).__name__}: {e}")
    except Exception as e:  # one bad clip must not end the run: record it and go on
        row.update(status="error", stage=stage if stage == "write" else _W["kind"], error=f"{type(e).__name__}: {e}")
    row["elapsed"], row["cpu"] = time.perf_counter() - t0, time.process_time() - c0
    return row


def _existing_entries(root: Path, suffix: str, clean: bool = True) -> set[str]:
    """Relative paths of whole entries on disk (temporary files are never counted; with ``clean`` those of dead
    processes are deleted)."""
    found = set()
    entries = root / "entries"
    if not entries.is_dir():
        return found
    for sub in os.scandir(entries):
        if not sub.is_dir():
            continue
        for f in os.scandir(sub.path):
            if f.name.endswith(suffix) and not f.name.startswith("."):
                found.add(f"{sub.name}/{f.name}")
            elif clean and f.name.endswith(".tmp") and f.name.startswith("."):
                _remove_stale_tmp(Path(f.path))
    return found


def _remove_stale_tmp(path: Path) -> None:
    """Deletes a temporary file left by a killed process (its pid is in the name); a live writer's stays."""
    try:
        pid = int(path.name.rsplit(".", 2)[-2])
        os.kill(pid, 0)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
    except (ValueError, IndexError, PermissionError, OSError):
        pass


class DiskFullError(OSError):
    """Extraction stopped because the cache's disk is (or would be) full; finished entries are kept."""


def entry_bytes(kind: str, params: Mapping[str, Any]) -> int:
    """Upper estimate of one cache entry's size, for the free-space check before extraction starts."""
    if kind == "mel":
        if params.get("height") and params.get("width"):
            return int(params["height"]) * int(params["width"]) + 256
        seconds = float(params.get("max_seconds") or 20.0)
        frames = int(seconds * float(params["sr"]) / int(params["hop_length"])) + 2
        return int(params["n_mels"]) * frames + 256
    pixels = int(params["size"]) ** 2 * 3
    if params.get("detector") == "mtcnn":  # mouth crop
        pixels += int(params["mouth_size"]) ** 2 * 3
    # encoded crops (face_codec): measured about 1/2 (png) and 1/10 (jpeg at 90) of the raw bytes on real faces
    pixels = {"png": pixels * 3 // 4, "jpeg": pixels // 4}.get(params.get("codec", "raw"), pixels)
    per_frame = pixels + 1 + (80 if params.get("detector") == "mtcnn" else 0)  # found flag, two sets of landmarks
    return int(params["frames"]) * per_frame + 1024


def check_free_space(folder: Path, needed: int, margin: int = 64 * 2**20) -> None:
    """Raise DiskFullError, before any work, when ``folder``'s disk has less than ``needed`` bytes plus a margin."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # cannot tell (some network file systems): the ENOSPC handling still stops cleanly
    if needed + margin > free:
        raise DiskFullError(f"{folder}: about {(needed + margin) / 2**30:.2f} GiB needed for the features of this "
                            f"run but {free / 2**30:.2f} GiB free; free some space or move the cache (FFDV_CACHE)")


def _run(kind: str, clips: pd.DataFrame, params: dict, cache_root: str | os.PathLike, workers: int | None,
         progress: bool, errors_csv: str | os.PathLike | None, retry_errors: bool, chunksize: int | None,
         start_method: str | None, shard: Shard | None = None) -> tuple[Path, dict]:
    missing = {"video_name", "path"} - set(clips.columns)
    if missing:
        raise ValueError(f"clips needs columns video_name and path (missing {sorted(missing)})")
    if shard is not None:  # only this part's clips; its rows go to its own manifest file, never manifest.csv
        clips = clips[shard.mask(clips["video_name"].astype(str))]
    key = params_hash(params)
    root = Path(cache_root) / f"{kind}-{key}"
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "params.json").is_file():
        atomic_write(root / "params.json", json.dumps(params, indent=2, sort_keys=True) + "\n")
    suffix = ".npy" if kind == "mel" else ".npz"
    t0 = time.time()
    rows, manifests_read = read_manifest_files(root)  # manifest.csv and the shard manifests together
    # a shard never deletes temporary files: on a shared file system a live writer's pid may be another machine's
    on_disk = _existing_entries(root, suffix, clean=shard is None)
    seen: set[str] = set()
    pending: list[tuple[str, str]] = []
    for name, path in zip(clips["video_name"].astype(str), clips["path"]):
        if name in seen:
            continue
        seen.add(name)
        rel = entry_file(name, suffix)
        row, stamp = rows.get(name), file_stamp(path)
        if row is not None and row.get("source") and row["source"] != stamp:
            row = None  # the name now points at another (or a changed) file: recompute, never reuse
            on_disk.discard(rel)
        elif row is not None and not row.get("source"):
            row["source"] = stamp  # an entry from before stamps: trusted once, checked from now on
        if rel in on_disk and (row is None or row["status"] == "ok"):
            if row is None:  # finished after the last manifest flush of a killed run
                rows[name] = {"video_name": name, "has_audio": kind == "mel", "status": "ok", "error": "",
                              "note": "recovered from entry", "seconds": "", "shape": "", "source": stamp}
            continue
        if row is not None and (row["status"] == "no_audio" or (row["status"] == "error" and not retry_errors)):
            continue
        pending.append((name, None if pd.isna(path) else str(path)))
    stats = {"kind": kind, "key": key, "clips": len(seen), "cached": len(seen) - len(pending),
             "computed": 0, "ok": 0, "no_audio": 0, "error": 0}
    errors: list[dict] = [{"clip": r["video_name"], "stage": "cached", "message": r["error"]}
                          for n, r in rows.items() if n in seen and r["status"] == "error"]
    check_free_space(root, len(pending) * entry_bytes(kind, params))
    n_workers = max(1, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    n_workers = min(n_workers, max(1, len(pending)))
    bar = progress_bar(total=len(pending), desc=f"{kind} features", unit="clip", disable=not progress, smoothing=0.05)
    last_flush = time.time()

    def save_manifest() -> None:
        if shard is None:
            write_manifest(root, rows)
        else:
            write_manifest(root, {n: rows[n] for n in seen if n in rows}, shard)

    elapsed: list[float] = []  # seconds per computed clip (8 bytes each: fine even for 250,000 clips)
    cpu = [0.0]  # CPU seconds of the workers' clips, all together

    def handle(row: dict) -> None:
        nonlocal last_flush
        if row["status"] == "disk_full":  # keep what is finished, record nothing for this clip, stop
            raise DiskFullError(f"{root}: the disk is full ({row['error']}); {stats['computed']} clip(s) finished "
                                f"in this run are kept and {len(pending) - stats['computed']} remain: free some "
                                "space and run again with the same parameters to continue")
        stage = row.pop("stage", "")
        elapsed.append(row.pop("elapsed", 0.0))
        cpu[0] += row.pop("cpu", 0.0)
        rows[row["video_name"]] = row
        stats["computed"] += 1
        stats[row["status"]] += 1
        if row["status"] == "error":
            errors.append({"clip": row["video_name"], "stage": stage, "message": row["error"]})
            bar.set_postfix(errors=stats["error"], refresh=False)
        bar.update(1)
        if time.time() - last_flush > 30:  # bounded loss if the run is killed; entries themselves are never lost
            save_manifest()
            last_flush = time.time()

    init_args = (kind, params, str(root))
    try:
        if n_workers == 1 or len(pending) <= 1:
            _init_worker(*init_args, limit_threads=False, in_worker=False)
            # one worker means one core, here too (BLAS would take two); entered after _init_worker, so it also
            # limits (and later restores) the torch an MTCNN run has just imported
            with _parent_single_threaded():
                for task in pending:
                    handle(_work(task))
        else:
            ctx = mp_.get_context(start_method or _default_start_method())
            if ctx.get_start_method() == "forkserver":
                # Workers fork from a server that has imported this module (numpy, OpenCV, PyAV, pandas) once,
                # instead of importing it each (about a second apiece). No effect once the server is running.
                ctx.set_forkserver_preload([__name__, "scipy.fft", "soxr"])
            chunk = chunksize or max(1, min(16, len(pending) // (n_workers * 8)))
            forked = ctx.get_start_method() == "fork"
            init_args = (*init_args, not forked)
            with _single_thread_env(), _parent_single_threaded() if forked else _main_script_hidden(), \
                    ctx.Pool(n_workers, initializer=_init_worker, initargs=init_args) as pool:
                for row in pool.imap_unordered(_work, pending, chunksize=chunk):
                    handle(row)
    finally:
        bar.close()
        try:
            save_manifest()
            if shard is None:  # their rows are in manifest.csv now (a shard file rewritten since is kept)
                drop_shard_manifests(manifests_read)
            if errors_csv is not None:
                _write_errors(Path(errors_csv), errors)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            # a full disk: the entries written so far are whole files and the next run recovers them
            warnings.warn(f"{root}: could not write the manifest ({exc}); finished entries are recovered next run",
                          stacklevel=2)
    stats["seconds"] = round(time.time() - t0, 3)
    stats["clips_per_s"] = round(stats["computed"] / stats["seconds"], 3) if stats["seconds"] else 0.0
    stats["workers"] = n_workers
    if elapsed:
        stats["clip_median_s"] = round(float(np.median(elapsed)), 4)
        stats["clip_p90_s"] = round(float(np.percentile(elapsed, 90)), 4)
        stats["clip_cpu_s"] = round(cpu[0] / len(elapsed), 5)  # in the workers, wherever they ran
    return root, stats


class _main_script_hidden:
    """Keeps spawn / forkserver workers from re-running the user's script while the pool starts them.

    Workers only need this module, but multiprocessing re-imports a ``python script.py`` main module in every
    new worker; a script without an ``if __name__ == "__main__":`` guard would then start pools from its
    workers, which die and are replaced without end. Hiding ``__main__.__file__`` for the moment the workers
    start makes them skip that import (notebooks and ``python -m`` are not affected either way).
    """

    def __enter__(self) -> None:
        main = sys.modules.get("__main__")
        self.main, self.file = main, None
        if main is not None and getattr(main, "__spec__", None) is None and hasattr(main, "__file__"):
            self.file = main.__dict__.pop("__file__")

    def __exit__(self, *exc: Any) -> None:
        if self.file is not None:
            self.main.__file__ = self.file


def _default_start_method() -> str:
    # Not fork: a parent that has already used OpenCV, PyAV or torch holds thread pools and locks, and forked
    # workers inherited them locked (seen here: a benchmark hung for 50 minutes in futex waits). forkserver
    # starts workers from a clean single-threaded server, and spawn works everywhere.
    return "forkserver" if "forkserver" in mp_.get_all_start_methods() else "spawn"


class _single_thread_env:
    """Sets OMP/BLAS thread counts to 1 in the environment the workers inherit, restoring it afterwards."""

    VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
            "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")

    def __enter__(self) -> None:
        self.saved = {v: os.environ.get(v) for v in self.VARS}
        os.environ.update({v: "1" for v in self.VARS})

    def __exit__(self, *exc: Any) -> None:
        for v, old in self.saved.items():
            if old is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = old


def _write_errors(path: Path, errors: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["clip", "stage", "message"])
    writer.writeheader()
    writer.writerows(errors)
    atomic_write(path, buf.getvalue())


def extract_mels(clips: pd.DataFrame, mp: Mapping[str, Any], cache_root: str | os.PathLike,
                 workers: int | None = None, progress: bool = True, errors_csv: str | os.PathLike | None = None,
                 *, retry_errors: bool = False, chunksize: int | None = None,
                 start_method: str | None = None, shard: Shard | str | None = None) -> MelStore:
    """Computes mel images for every clip into ``cache_root/mel-<params_hash>/`` (resumable).

    Clips whose entry exists, or that an earlier run found without audio, are skipped; clips that failed are
    skipped too unless ``retry_errors``. Workers decode, compute and write their own files; the parent only
    receives one small row per clip, so memory does not grow with the number of clips.

    Args:
        clips: DataFrame with video_name and path.
        mp: Mel parameters (a run's params with ``mel_*`` keys, or a resolved dict from mel_params).
        cache_root: Folder holding the per-parameter cache folders (e.g. ``cache_dir()``).
        workers: Processes (None: os.cpu_count(); 1: in this process).
        progress: Progress bar (clips/s; a few lines when the output is not a terminal: core.progress).
        errors_csv: Where to write the failed clips (columns clip, stage, message); None: not written.
        retry_errors: Recompute clips that failed before.
        chunksize: Clips per task message (None: chosen from the count).
        start_method: multiprocessing start method (None: forkserver where available).
        shard: Only the clips of part K of N (``core.shards``; ``'K/N'`` or a Shard), whose rows go to the folder's
            ``manifest.shard-K-of-N.csv``: several processes or machines fill one folder at once, each with its own
            part, and the next unsharded extraction merges their manifests into ``manifest.csv``.

    Returns:
        MelStore over the cache folder; ``.stats`` says how many clips were cached, computed, ok, no_audio, error.
    """
    params = mel_params(mp)
    root, stats = _run("mel", clips, params, cache_root, workers, progress, errors_csv, retry_errors, chunksize,
                       start_method, Shard.parse(shard))
    store = MelStore(root)
    store.stats = stats
    return store


def extract_faces(clips: pd.DataFrame, fp: Mapping[str, Any], cache_root: str | os.PathLike,
                  workers: int | None = None, progress: bool = True, errors_csv: str | os.PathLike | None = None,
                  *, retry_errors: bool = False, chunksize: int | None = None,
                  start_method: str | None = None, shard: Shard | str | None = None) -> FaceStore:
    """Computes face crops for every clip into ``cache_root/faces-<params_hash>/`` (resumable).

    Same contract as :func:`extract_mels`; entries hold ``faces`` uint8 (T, S, S, 3) and ``found`` bool (T,);
    with ``face_detector: mtcnn`` also ``mouths`` uint8 (T, M, M, 3), ``landmarks`` float32 (T, 5, 2) in crop pixels
    and ``landmarks_frame`` in decoded-frame pixels (``features.faces.face_entry``). Each worker builds one MTCNN and
    runs torch on one thread.
    """
    params = face_params(fp)
    root, stats = _run("faces", clips, params, cache_root, workers, progress, errors_csv, retry_errors, chunksize,
                       start_method, Shard.parse(shard))
    store = FaceStore(root)
    store.stats = stats
    return store
