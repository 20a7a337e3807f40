"""``python -m ffdv_utils bench api``: what one call of the test API costs (``score_video``: one path in, one
probability out, the way the final phase calls it) with an empty feature cache and with one that has seen thousands of
clips -- the in-memory path (``VideoScorer``, what ``score_video`` runs) against the cached path (what it ran before
issue 26: ``score_table(..., in_memory=False)`` per file).

Per call it splits the wall time into the work -- decoding and computing the clip's features
(``features.extract.compute_mel`` / ``compute_faces``), the network (``predict_loader``) and the parts' own
statistics (a part's time less fetching its features) -- and the bookkeeping, everything else (manifest reads and
writes, cache scans, packed stacks, tables, loaders, the header probe). It counts manifest reads and writes and files
written per call, projects the bookkeeping of 100,000 calls, and judges the targets: under 1 hour for 100,000 calls,
and flat from the empty cache to the full one.

Each call scores a clip under a name no earlier call used (a symlink), so the cached path computes it as a new test
clip, as it would in the final phase. The full cache is fabricated: manifest rows and empty entry files for each
feature kind the run reads, which is all the bookkeeping looks at.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pandas as pd

from ..core.config import params_hash
from ..core.schema import TRAIN_DEFAULTS
from ..detector import Detector, scorers_from_params
from ..detector import profile_part as profile_mod
from ..features import cache as cache_mod
from ..features import extract as extract_mod
from ..features import statistics as statistics_mod
from ..features.cache import entry_file
from ..features.params import face_params, mel_params
from ..inference import score as score_mod
from ..models.checkpoint import Checkpoint, checkpoint_path
from ..models.registry import build_model, model_inputs
from ..sample_data.clips import make_clips

# the bench checkpoint: a small fusion network (mel images and face crops) with a real-only and a profile part, so a
# call computes every kind of feature and every part a run can have
BENCH_PARAMS = {**TRAIN_DEFAULTS, "model": "test_resnet", "model_type": "fusion", "image_size": 64,
                "face_frames": 4, "face_size": 64, "face_detector": "center", "feature_workers": 1,
                "real_only_weight": 0.3, "profile_weight": 0.2, "profile_mel_preset": "seed", "device": "cpu"}
CLIP_SHAPE = [(320, 240, 2.0, 16000, 1)]  # short, small clips: the fixed cost of a call shows most
TARGET_HOURS = 1.0  # bookkeeping of 100,000 calls on 2 cores (issue 26)
FLAT_RATIO = 1.25  # "flat within noise": bookkeeping per call with the full cache at most this times the empty's


class _Meter:
    """Wraps the functions that do a call's work and the cache's manifest functions; sums their time and counts."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.decode = self.model = self.parts = self.fetch = 0.0
        self.cpu = {"decode": 0.0, "model": 0.0, "parts": 0.0, "fetch": 0.0}
        self.reads = self.writes = 0

    @contextmanager
    def installed(self) -> Iterator["_Meter"]:
        saved: list[tuple[Any, str, Any]] = []

        def patch(owner: Any, name: str, wrapper: Callable[[Callable], Callable]) -> None:
            old = getattr(owner, name)
            saved.append((owner, name, old))
            setattr(owner, name, wrapper(old))

        def timed(attr: str) -> Callable[[Callable], Callable]:
            def wrap(fn: Callable) -> Callable:
                def run(*a: Any, **kw: Any) -> Any:
                    t0, c0, f0, g0 = time.perf_counter(), time.process_time(), self.fetch, self.cpu["fetch"]
                    try:
                        return fn(*a, **kw)
                    finally:  # a part's own work: its time less fetching its features (decode, cache reads)
                        parts = attr == "parts"
                        spent = time.perf_counter() - t0 - (self.fetch - f0 if parts else 0)
                        setattr(self, attr, getattr(self, attr) + spent)
                        self.cpu[attr] += time.process_time() - c0 - (self.cpu["fetch"] - g0 if parts else 0)
                return run
            return wrap

        def counted(attr: str) -> Callable[[Callable], Callable]:
            def wrap(fn: Callable) -> Callable:
                def run(*a: Any, **kw: Any) -> Any:
                    setattr(self, attr, getattr(self, attr) + 1)
                    return fn(*a, **kw)
                return run
            return wrap

        patch(extract_mod, "compute_mel", timed("decode"))
        patch(extract_mod, "compute_faces", timed("decode"))
        patch(score_mod, "predict_loader", timed("model"))
        patch(Detector, "part_scores", timed("parts"))
        for mod in (score_mod, profile_mod, statistics_mod):
            patch(mod, "clip_features", timed("fetch"))
        for mod in (cache_mod, extract_mod):
            patch(mod, "read_manifest_files", counted("reads"))  # every manifest read goes through it
            patch(mod, "write_manifest", counted("writes"))
        try:
            yield self
        finally:
            for owner, name, old in reversed(saved):
                setattr(owner, name, old)


def _files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def bench_checkpoint(folder: Path, clips: Sequence[Path], params: dict | None = None) -> Path:
    """An untrained ``BENCH_PARAMS`` network with its parts fitted on ``clips`` under alternating labels (the cost of
    a call is measured, not its score), saved as ``folder/best.pt``. The fit fills the cache ``FFDV_CACHE`` names."""
    import torch

    p = {**BENCH_PARAMS, **(params or {})}
    torch.manual_seed(0)
    detector = Detector(build_model(p), p, scorers_from_params(p))
    table = pd.DataFrame({"video_name": [c.name for c in clips], "path": [str(c) for c in clips],
                          "target": [i % 2 for i in range(len(clips))]})
    detector.fit_parts(table)
    path = Path(folder) / "best.pt"
    detector.save(path, Checkpoint(network={}, params=p, epoch=1))
    return path


def fill_cache(params: dict, n: int) -> None:
    """A cache that has seen ``n`` clips, as far as bookkeeping can tell: for each feature kind ``params`` read (the
    network's mel and faces, the profile part's mel preset), ``n`` manifest rows and ``n`` empty entry files."""
    kinds = [("mel", mel_params(params), ".npy"), ("faces", face_params(params), ".npz")]
    if params.get("profile_weight"):
        kinds.append(("mel", mel_params({**params, "mel_preset": params["profile_mel_preset"]}), ".npy"))
    names = [f"seen_{i:07d}.mp4" for i in range(n)]
    for kind, resolved, suffix in kinds:
        folder = Path(os.environ["FFDV_CACHE"]) / f"{kind}-{params_hash(resolved)}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "params.json").write_text(json.dumps(resolved, indent=2, sort_keys=True) + "\n")
        rows = {}
        for i, name in enumerate(names):
            rel = folder / "entries" / entry_file(name, suffix)
            rel.parent.mkdir(parents=True, exist_ok=True)
            rel.touch()
            rows[name] = {"video_name": name, "has_audio": kind == "mel", "status": "ok", "error": "", "note": "",
                          "seconds": "2.0", "shape": "", "source": f"{100000 + i}:{i}"}
        cache_mod.write_manifest(folder, rows)


def _call(path_kind: str, ckpt: Path, link: Path, meter: _Meter) -> dict:
    """One scored clip: its wall and CPU time, the work in both, the manifest reads and writes, the files written."""
    cache = Path(os.environ["FFDV_CACHE"])
    before = _files(cache) if cache.is_dir() else 0
    meter.reset()
    t0, c0 = time.perf_counter(), time.process_time()
    if path_kind == "memory":
        score_mod.score_video(link, ckpt, device="cpu")
    else:
        score_mod.score_table([link], ckpt, device="cpu", in_memory=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    work = meter.decode + meter.model + meter.parts
    work_cpu = meter.cpu["decode"] + meter.cpu["model"] + meter.cpu["parts"]
    return {"wall": wall, "work": work, "decode": meter.decode, "model": meter.model, "parts": meter.parts,
            "bookkeeping": wall - work, "cpu": cpu, "bookkeeping_cpu": cpu - work_cpu, "reads": meter.reads,
            "writes": meter.writes, "files": (_files(cache) if cache.is_dir() else 0) - before}


def bench_api(videos: str | os.PathLike | None = None, run: str | None = None, calls: int = 30,
              cached: Sequence[int] = (0, 4800), make_n: int = 8, old_path: bool = True,
              log: Callable[[str], None] = print) -> dict:
    """Per-call cost of the test API at each cache size in ``cached``; returns the figures (see the module)."""
    import torch

    result: dict[str, Any] = {"calls": calls, "cached": list(cached), "torch_threads": torch.get_num_threads(),
                              "cpus": os.cpu_count(), "load_start": [round(x, 2) for x in os.getloadavg()]}
    old_env = os.environ.get("FFDV_CACHE")
    with tempfile.TemporaryDirectory(prefix="ffdv_bench_api_") as tmp_:
        tmp = Path(tmp_)
        try:
            if videos is None:
                clips = make_clips(tmp / "clips", make_n, progress=False, shapes=CLIP_SHAPE)
            else:
                clips = sorted(p for p in Path(videos).iterdir() if p.suffix.lower() in {".mp4", ".mov", ".mkv"})
            if not clips:
                raise FileNotFoundError(f"no video files to benchmark in {videos}")
            os.environ["FFDV_CACHE"] = str(tmp / "cache-fit")
            if run is None:
                ckpt = bench_checkpoint(tmp, clips)
                result["checkpoint"] = "bench (untrained network, parts fitted on the bench clips)"
            else:
                ckpt = checkpoint_path(run)
                result["checkpoint"] = str(run)
            detector = Detector.load(ckpt, "cpu")
            params = dict(detector.params)
            result.update(model=params.get("model"), model_type=params.get("model_type"),
                          inputs=list(model_inputs(detector.network)), parts=detector.weights,
                          image_size=params.get("image_size"), face_frames=params.get("face_frames"),
                          face_detector=params.get("face_detector"), clips=len(clips))
            log(f"{len(clips)} clips; {result['checkpoint']}: {result['model']} ({result['model_type']}), parts "
                f"{detector.weights or 'none'}; {calls} calls per setting, each a clip under a new name; "
                f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs, load {result['load_start']}")
            meter = _Meter()
            links = tmp / "links"
            links.mkdir()
            rows = []
            counter = [0]

            def next_link() -> Path:  # each call a clip under a name no call used before
                i = counter[0]
                counter[0] += 1
                src = clips[i % len(clips)]
                link = links / f"call_{i:06d}_{src.name}"
                link.symlink_to(src)
                return link

            with meter.installed():
                for path_kind in ("memory", "cache") if old_path else ("memory",):
                    folders = {n: tmp / f"cache-{path_kind}-{n}" for n in cached}
                    for n, folder in folders.items():
                        os.environ["FFDV_CACHE"] = str(folder)
                        if n:
                            t0 = time.perf_counter()
                            fill_cache(params, n)
                            log(f"  fabricated a cache of {n} clips in {time.perf_counter() - t0:.1f} s")
                        for _ in range(2):  # warm-up, not counted
                            _call(path_kind, ckpt, next_link(), meter)
                    per: dict[int, list[dict]] = {n: [] for n in cached}
                    for _ in range(calls):  # the cache sizes take turns, so a change of load hits them alike
                        for n, folder in folders.items():
                            os.environ["FFDV_CACHE"] = str(folder)
                            per[n].append(_call(path_kind, ckpt, next_link(), meter))
                    for n in cached:
                        rows.append(_summary(path_kind, n, per[n]))
                        log(_line(rows[-1]))
        finally:
            if old_env is None:
                os.environ.pop("FFDV_CACHE", None)
            else:
                os.environ["FFDV_CACHE"] = old_env
    result["settings"] = rows
    result["load_end"] = [round(x, 2) for x in os.getloadavg()]
    result["targets"] = api_targets(rows)
    for name, t in result["targets"].items():
        log(f"target {name}: {t['value']} (target {t['target']}): {'met' if t['met'] else 'NOT met'}")
    return result


def _summary(path_kind: str, n: int, per: list[dict]) -> dict:
    med = {k: statistics.median(c[k] for c in per) for k in ("wall", "work", "decode", "model", "parts",
                                                             "bookkeeping", "cpu", "bookkeeping_cpu")}
    mean_book = statistics.fmean(c["bookkeeping"] for c in per)
    return {"path": path_kind, "cached_clips": n, "calls": len(per),
            **{f"{k}_s": round(v, 5) for k, v in med.items()},
            "bookkeeping_mean_s": round(mean_book, 5),
            "bookkeeping_100k_h": round(mean_book * 100_000 / 3600, 3),
            "manifest_reads_per_call": statistics.fmean(c["reads"] for c in per),
            "manifest_writes_per_call": statistics.fmean(c["writes"] for c in per),
            "files_written_per_call": statistics.fmean(c["files"] for c in per)}


def _line(r: dict) -> str:
    ms = {k: r[k] * 1000 for k in ("wall_s", "work_s", "decode_s", "model_s", "parts_s", "bookkeeping_s",
                                   "bookkeeping_mean_s", "cpu_s", "bookkeeping_cpu_s")}
    return (f"{r['path']:>6} path, {r['cached_clips']:>5} cached clips: {ms['wall_s']:7.1f} ms per call (median) = "
            f"work {ms['work_s']:6.1f} ms (decode+features {ms['decode_s']:.1f}, network {ms['model_s']:.1f}, parts "
            f"{ms['parts_s']:.1f}) + bookkeeping {ms['bookkeeping_s']:6.1f} ms (mean {ms['bookkeeping_mean_s']:.1f}: "
            f"100,000 calls {r['bookkeeping_100k_h']:.2f} h); CPU {ms['cpu_s']:.1f} ms, bookkeeping "
            f"{ms['bookkeeping_cpu_s']:.1f}; manifest reads {r['manifest_reads_per_call']:g}, writes "
            f"{r['manifest_writes_per_call']:g}, files written {r['files_written_per_call']:g} per call")


def api_targets(rows: Sequence[dict]) -> dict[str, dict]:
    """The test API's targets on the in-memory path: 100,000 calls' bookkeeping under ``TARGET_HOURS``, and the
    bookkeeping per call with the fullest cache at most ``FLAT_RATIO`` times that with the emptiest (medians of wall
    time; ``cpu_ratio``, the same in CPU time, is printed beside it), with no manifest read and no file written."""
    memory = sorted((r for r in rows if r["path"] == "memory"), key=lambda r: r["cached_clips"])
    if not memory:
        return {}
    worst = max(r["bookkeeping_100k_h"] for r in memory)
    out = {"bookkeeping_100k_calls_h": {"value": worst, "target": f"< {TARGET_HOURS:g}",
                                        "met": worst < TARGET_HOURS}}
    if len(memory) > 1:
        lo, hi = memory[0], memory[-1]
        ratio = round(hi["bookkeeping_s"] / max(lo["bookkeeping_s"], 1e-9), 3)
        cpu_ratio = round(hi["bookkeeping_cpu_s"] / max(lo["bookkeeping_cpu_s"], 1e-9), 3)
        out[f"flat_{lo['cached_clips']}_to_{hi['cached_clips']}"] = {
            "value": ratio, "cpu_ratio": cpu_ratio, "target": f"<= {FLAT_RATIO:g}x", "met": ratio <= FLAT_RATIO
            and hi["manifest_reads_per_call"] == lo["manifest_reads_per_call"] == 0
            and hi["files_written_per_call"] == 0}
    return out
