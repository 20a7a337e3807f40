"""Benchmarks: ``python -m ffdv_utils bench <what>``.

``bench extraction`` times the public baseline's audio path (moviepy writes a wav, librosa reads it back) against
the workspace's PyAV path, plus face crops, on the same clips. Other benchmarks (``bench train``) plug in by
listing their module (which offers ``main(argv)``) in ``BENCHES``.

This module also holds :func:`make_clip`, a tiny H.264/AAC clip writer (PyAV only) used by the tests and by
the benchmark when no videos are given.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Mapping

import av
import numpy as np

__all__ = ["make_clip", "make_clips", "bench_extraction", "add_bench_parser", "BENCHES"]


def make_clip(path: str | os.PathLike, seconds: float = 1.0, width: int = 160, height: int = 120, fps: int = 25,
              audio: bool = True, sample_rate: int = 44100, channels: int = 2, video: bool = True,
              vcodec: str = "libx264", acodec: str = "aac", seed: int = 0, silent: bool = False,
              face: bool = True, preset: str = "veryfast") -> Path:
    """Writes a small synthetic clip with PyAV.

    The picture is a drifting gradient with noise and (``face``) a skin-toned ellipse with two dark "eyes" and a
    "mouth", enough for a Haar cascade to have something to look at; the sound is a few harmonics with a
    syllable-like envelope plus noise, so spectrograms have structure.

    Args:
        path: Output file (.mp4 recommended).
        seconds: Duration.
        width: Frame width (even).
        height: Frame height (even).
        fps: Frame rate.
        audio: Write an audio stream.
        sample_rate: Audio sample rate.
        channels: 1 or 2.
        video: Write a video stream.
        vcodec: Video encoder (libx264, mpeg4, ...).
        acodec: Audio encoder.
        seed: Random seed for the content.
        silent: Write digital silence instead of sound.
        face: Draw the face-like ellipse.
        preset: x264 preset (ignored by other encoders).

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with av.open(str(path), mode="w") as out:
        vs = as_ = None
        if video:
            vs = out.add_stream(vcodec, rate=fps)
            vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
            if vcodec == "libx264":
                vs.options = {"preset": preset, "crf": "23"}
        if audio:
            as_ = out.add_stream(acodec, rate=sample_rate)
            as_.layout = "stereo" if channels == 2 else "mono"
        n_frames = int(round(seconds * fps)) if video else 0
        if vs is not None:
            for i, img in enumerate(_frames(n_frames, width, height, face, rng)):
                for pkt in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    out.mux(pkt)
            for pkt in vs.encode(None):
                out.mux(pkt)
        if as_ is not None:
            n = int(round(seconds * sample_rate))
            t = np.arange(n) / sample_rate
            f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t + seed)
            phase = 2 * np.pi * np.cumsum(f0) / sample_rate
            env = 0.5 * (1 + np.sin(2 * np.pi * 3.1 * t)) ** 2 / 4
            sig = sum(np.sin(k * phase) / k for k in range(1, 12)) * env * 0.3
            sig = sig + rng.normal(0, 0.01, n)
            if silent:
                sig = np.zeros(n)
            block = 1024
            pts = 0
            for start in range(0, n, block):
                chunk = sig[start:start + block].astype(np.float32)
                data = np.tile(chunk, (channels, 1)) if channels == 2 else chunk[None]
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format="fltp",
                                                   layout="stereo" if channels == 2 else "mono")
                frame.sample_rate = sample_rate
                frame.pts = pts
                frame.time_base = Fraction(1, sample_rate)
                pts += chunk.shape[0]
                for pkt in as_.encode(frame):
                    out.mux(pkt)
            for pkt in as_.encode(None):
                out.mux(pkt)
    return path


def _frames(n: int, width: int, height: int, face: bool, rng: np.random.Generator):
    """Yields synthetic RGB frames. A dozen distinct frames (3 noise patterns x 4 mouth openings) are drawn once
    and then cycled and shifted sideways, so a 1080p clip costs the encoder's time, not numpy's."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([60 + 80 * xx / width, 80 + 60 * yy / height, 120 - 30 * xx / width], -1)
    layer = None
    if face:
        cy, cx, ry, rx = height * 0.45, width * 0.5, height * 0.28, height * 0.21
        ell = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
        eyes = [((xx - cx - ex * rx) / (rx * 0.18)) ** 2 + ((yy - cy + 0.25 * ry) / (ry * 0.09)) ** 2 <= 1
                for ex in (-0.38, 0.38)]
        layer = (ell, eyes, [((xx - cx) / (rx * 0.4)) ** 2 + ((yy - cy - 0.45 * ry) / (ry * m)) ** 2 <= 1
                             for m in (0.06, 0.08, 0.1, 0.11)])
    bank = []
    for k in range(3):
        noisy = base + rng.normal(0, 6, base.shape).astype(np.float32)
        for m in range(4 if face else 1):
            img = noisy.copy()
            if layer is not None:
                ell, eyes, mouths = layer
                img[ell] = np.array((205, 160, 135), np.float32) + (img[ell] - base[ell])
                for eye in eyes:
                    img[eye] = (40, 30, 30)
                img[mouths[m]] = (120, 40, 50)
            bank.append(np.clip(img, 0, 255).astype(np.uint8))
    del yy, xx, base
    per = 4 if face else 1
    for i in range(n):
        img = bank[(i % 3) * per + (int(abs(np.sin(i / 3.0)) * 3.99) if face else 0)]
        yield np.roll(img, int(round(3 * np.sin(i / 7.0))), axis=1)


# ---------------------------------------------------------------------------------------------------------------
# clips for benchmarks

# (width, height, seconds): 320p to 1080p, 5 to 10 s, the spread of the FFDV clips.
BENCH_SHAPES = [(568, 320, 5.0), (640, 360, 6.0), (854, 480, 8.0), (1280, 720, 10.0), (1920, 1080, 10.0),
                (640, 360, 10.0), (854, 480, 5.0), (1280, 720, 7.0)]


def make_clips(folder: str | os.PathLike, n: int, progress: bool = True) -> list[Path]:
    """Writes ``n`` H.264 + AAC benchmark clips (shapes cycle through BENCH_SHAPES); existing ones are reused."""
    from tqdm.auto import tqdm

    folder = Path(folder)
    out = []
    for i in tqdm(range(n), desc="make clips", unit="clip", disable=not progress):
        w, h, s = BENCH_SHAPES[i % len(BENCH_SHAPES)]
        path = folder / f"bench_{i:03d}_{h}p_{s:g}s.mp4"
        if not path.is_file():
            tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.mp4")
            make_clip(tmp, seconds=s, width=w, height=h, seed=i)
            os.replace(tmp, path)
        out.append(path)
    return out


# ---------------------------------------------------------------------------------------------------------------
# bench extraction


def _peak_rss_mib() -> dict[str, float]:
    """Peak resident memory (MiB) of this process and of its largest finished child.

    ``self`` is the kernel's high-water mark of this process's memory (VmHWM): getrusage's RUSAGE_SELF figure
    survives exec, so a process started by a bigger one (the CLI after importing torch) would report its parent's
    peak. ``children`` is getrusage(RUSAGE_CHILDREN).ru_maxrss: forked workers count the pages they share with
    this process, so self + children is an upper bound of what was really resident.
    """
    unit = 1024 if sys.platform != "darwin" else 1024 * 1024  # ru_maxrss is KiB on Linux, bytes on macOS
    self_ = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / unit / 1024
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                self_ = int(line.split()[1]) / 1024
    except OSError:
        pass
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / unit / 1024
    return {"self": round(self_, 1), "children": round(kids, 1), "total": round(self_ + kids, 1)}


def _cpu() -> float:
    """CPU seconds used so far by this process and its waited-for children (robust to a busy machine)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 4) if values else 0.0


def bench_extraction(videos: str | os.PathLike | None = None, workers: int | None = None, limit: int | None = None,
                     make_n: int = 8, clips_dir: str | os.PathLike | None = None, faces: bool = True,
                     progress: bool = True, log: Callable[[str], Any] = print, min_mel_tasks: int = 200,
                     min_face_tasks: int = 24) -> dict:
    """Times the public baseline's audio feature against the workspace's, and face crops, on the same clips.

    (a) the baseline as written (moviepy wav + librosa + JPEG, one process); (b) the workspace default preset with
    one worker and (c) with ``workers``; (d) face crops (default face params) with one worker, i.e. per core.
    Imports and first calls are warmed up on one clip first, so the figures are per-clip steady state.

    Args:
        videos: Folder of video files (None: generate ``make_n`` clips).
        workers: Processes for (c) (None: os.cpu_count()).
        limit: Use at most this many clips.
        make_n: Clips to generate when ``videos`` is None.
        clips_dir: Keep generated clips here (reused next time); None: a temporary folder.
        faces: Also time face crops.
        progress: Progress bars.
        log: Where the human-readable lines go.
        min_mel_tasks: Workspace mel runs cycle through the clips until at least this many (baseline: one pass).
        min_face_tasks: The same for face crops.

    Returns:
        Dict of the figures (also what the CLI prints as its last line, as JSON).
    """
    import pandas as pd

    from .features import baseline_mel_image, extract_faces, extract_mels, mel_params
    from .media import load_audio

    workers = workers or os.cpu_count() or 1
    rss_start = _peak_rss_mib()["self"]
    with tempfile.TemporaryDirectory(prefix="ffdv_bench_") as tmp:
        tmp = Path(tmp)
        if videos is None:
            folder = Path(clips_dir) if clips_dir else tmp / "clips"
            paths = make_clips(folder, make_n if limit is None else min(make_n, limit), progress)
        else:
            exts = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"}
            paths = sorted(p for p in Path(videos).iterdir() if p.suffix.lower() in exts)
        paths = paths[:limit] if limit else paths
        if not paths:
            raise FileNotFoundError(f"no video files to benchmark in {videos}")
        clips = pd.DataFrame({"video_name": [p.name for p in paths], "path": [str(p) for p in paths]})

        def repeated(min_tasks: int) -> pd.DataFrame:
            # The same files under several names (separate cache entries), so a run lasts long enough for
            # steady-state throughput: pool start-up is a fixed cost, which 250,000 clips make negligible.
            reps = max(1, -(-min_tasks // len(clips)))
            return pd.concat([clips.assign(video_name=clips.video_name + (f"#{r}" if r else ""))
                              for r in range(reps)], ignore_index=True)

        mel_clips, face_clips = repeated(min_mel_tasks), repeated(min_face_tasks)
        audio_s = sum(load_audio(p, 16000).size for p in paths) / 16000
        log(f"{len(paths)} clips, {audio_s:.1f} s of audio in all; workers for the parallel run: {workers}; "
            f"workspace runs cycle through them: {len(mel_clips)} mel tasks, {len(face_clips)} face tasks")

        # Warm-up: library imports and first-call setup are paid once per process, not per clip.
        baseline_mel_image(paths[0], tmp)
        extract_mels(clips[:1], {}, tmp / "warm", workers=1, progress=False)

        base_times = []
        base_errors = 0
        c0 = _cpu()
        t0 = time.perf_counter()
        for p in paths:
            t = time.perf_counter()
            try:
                baseline_mel_image(p, tmp)
            except Exception:  # the baseline fails on clips without audio; count, do not stop the benchmark
                base_errors += 1
            base_times.append(time.perf_counter() - t)
        base_total = time.perf_counter() - t0
        base_cpu = (_cpu() - c0) / len(paths)
        base_rate = len(paths) / base_total
        log(f"(a) baseline (moviepy wav + librosa + jpg), 1 process: {base_rate:.2f} clips/s, "
            f"median {_pct(base_times, 50):.3f} s, p90 {_pct(base_times, 90):.3f} s per clip")

        c0 = _cpu()
        one = extract_mels(mel_clips, {}, tmp / "one", workers=1, progress=progress).stats
        one_cpu = (_cpu() - c0) / len(mel_clips)
        log(f"(b) workspace default preset, 1 worker: {one['clips_per_s']:.2f} clips/s "
            f"({one['clips_per_s'] / base_rate:.1f}x), median {one.get('clip_median_s', 0):.3f} s, "
            f"p90 {one.get('clip_p90_s', 0):.3f} s per clip")
        log(f"    CPU time per clip: baseline {base_cpu:.3f} s (incl. its ffmpeg subprocesses), workspace "
            f"{one_cpu:.3f} s: {base_cpu / max(one_cpu, 1e-9):.1f}x less")
        seed = extract_mels(mel_clips, {"mel_preset": "seed"}, tmp / "seed", workers=1, progress=progress).stats
        log(f"    seed preset (baseline image), 1 worker: {seed['clips_per_s']:.2f} clips/s "
            f"({seed['clips_per_s'] / base_rate:.1f}x)")
        par = extract_mels(mel_clips, {}, tmp / "par", workers=workers, progress=progress).stats
        log(f"(c) workspace default preset, {par['workers']} workers: {par['clips_per_s']:.2f} clips/s "
            f"({par['clips_per_s'] / base_rate:.1f}x)")
        result: dict[str, Any] = {
            "clips": len(paths), "mel_tasks": len(mel_clips), "face_tasks": len(face_clips),
            "audio_seconds": round(audio_s, 1), "cpu_count": os.cpu_count(),
            "baseline_clips_per_s": round(base_rate, 3), "baseline_median_s": _pct(base_times, 50),
            "baseline_p90_s": _pct(base_times, 90), "baseline_errors": base_errors,
            "default_1w_clips_per_s": one["clips_per_s"], "default_1w_median_s": one.get("clip_median_s", 0.0),
            "default_1w_p90_s": one.get("clip_p90_s", 0.0), "ratio_1w": round(one["clips_per_s"] / base_rate, 2),
            "seed_1w_clips_per_s": seed["clips_per_s"], "ratio_seed_1w": round(seed["clips_per_s"] / base_rate, 2),
            "workers": par["workers"], "default_par_clips_per_s": par["clips_per_s"],
            "ratio_par": round(par["clips_per_s"] / base_rate, 2), "mel_errors": one["error"],
            "mel_params": mel_params({})["preset"], "baseline_cpu_s_per_clip": round(base_cpu, 4),
            "default_1w_cpu_s_per_clip": round(one_cpu, 4), "ratio_cpu": round(base_cpu / max(one_cpu, 1e-9), 2),
            "rss_at_start_mib": rss_start,
        }
        if faces:
            c0 = _cpu()
            f1 = extract_faces(face_clips, {}, tmp / "faces1", workers=1, progress=progress)
            face_cpu = (_cpu() - c0) / len(face_clips)
            found = float(np.mean([f1.face_found(n).mean() for n in face_clips["video_name"]]))
            fs = f1.stats
            log(f"(d) face crops ({f1.params['frames']} frames, {f1.params['detector']}), 1 worker = per core: "
                f"{fs['clips_per_s']:.2f} clips/s, median {fs.get('clip_median_s', 0):.3f} s, "
                f"p90 {fs.get('clip_p90_s', 0):.3f} s per clip, CPU {face_cpu:.3f} s per clip "
                f"({1 / max(face_cpu, 1e-9):.2f} clips per CPU-second); faces found in {100 * found:.0f}% of frames")
            result.update(faces_clips_per_s_per_core=fs["clips_per_s"], faces_median_s=fs.get("clip_median_s", 0.0),
                          faces_p90_s=fs.get("clip_p90_s", 0.0), faces_found_fraction=round(found, 3),
                          faces_errors=fs["error"], faces_cpu_s_per_clip=round(face_cpu, 4))
            if workers > 1:
                fp = extract_faces(face_clips, {}, tmp / "facesp", workers=workers, progress=progress).stats
                log(f"    face crops, {fp['workers']} workers: {fp['clips_per_s']:.2f} clips/s")
                result["faces_par_clips_per_s"] = fp["clips_per_s"]
    rss = _peak_rss_mib()
    log(f"peak RSS: parent {rss['self']:.0f} MiB + largest child {rss['children']:.0f} MiB = {rss['total']:.0f} MiB "
        "(an upper bound: forked children count pages shared with the parent)")
    result.update(peak_rss_self_mib=rss["self"], peak_rss_children_mib=rss["children"],
                  peak_rss_total_mib=rss["total"])
    # 250,000 clips on 4 cores, from the 1-worker rate (x4: workers scale with cores when nothing else runs) and
    # from CPU seconds per clip (the same, but immune to other load on the machine while benchmarking).
    n, h = 250_000, 3600.0
    proj = {"baseline_1_process_h": round(n / base_rate / h, 2),
            "mels_4_cores_h": round(n / (one["clips_per_s"] * 4) / h, 2),
            "mels_4_cores_cpu_based_h": round(n * one_cpu / 4 / h, 2)}
    if faces:
        proj.update(faces_4_cores_h=round(n / (fs["clips_per_s"] * 4) / h, 2),
                    faces_4_cores_cpu_based_h=round(n * face_cpu / 4 / h, 2))
    result["projection_250k"] = proj
    log("projection for 250,000 clips: baseline as written (1 process) {baseline_1_process_h} h; mels on 4 cores "
        "{mels_4_cores_h} h ({mels_4_cores_cpu_based_h} h from CPU time)".format(**proj)
        + (" ; faces on 4 cores {faces_4_cores_h} h ({faces_4_cores_cpu_based_h} h from CPU time)".format(**proj)
           if faces else ""))
    result["targets"] = extraction_targets(result)
    for name, t in result["targets"].items():
        log(f"target {name}: {t['value']} (want {t['target']}): {'met' if t['met'] else 'NOT met'}")
    return result


def extraction_targets(r: Mapping[str, Any]) -> dict[str, dict]:
    """Issue #3's targets judged on a run's figures (those the run measured): mels >= 10x the baseline on one
    worker and >= 20x with the parallel workers, faces >= 2 clips/s per core, peak RSS < 1.5 GiB."""
    checks = [("audio_1_worker", "ratio_1w", ">= 10x", lambda v: v >= 10),
              ("audio_default_workers", "ratio_par", ">= 20x", lambda v: v >= 20),
              ("faces_per_core", "faces_clips_per_s_per_core", ">= 2 clips/s", lambda v: v >= 2),
              ("peak_rss", "peak_rss_total_mib", "< 1536 MiB", lambda v: v < 1536)]
    return {name: {"value": r[key], "target": want, "met": bool(ok(r[key]))}
            for name, key, want, ok in checks if key in r}


def _extraction_cmd(args: argparse.Namespace) -> int:
    if "torch" in sys.modules:
        # The CLI imported torch (about 1 GB) before we got here; forked workers would inherit and report it, so
        # the figures come from a fresh interpreter that holds only what extraction needs.
        import subprocess

        argv = ["extraction", "--make-clips", str(args.make_clips)]
        for flag, value in (("--videos", args.videos), ("--workers", args.workers), ("--limit", args.limit),
                            ("--clips-dir", args.clips_dir)):
            if value is not None:
                argv += [flag, str(value)]
        argv += ["--no-faces"] * args.no_faces + ["--quiet"] * args.quiet
        return subprocess.call([sys.executable, "-m", "ffdv_utils.bench", *argv])
    result = bench_extraction(args.videos, args.workers, args.limit, make_n=args.make_clips,
                              clips_dir=args.clips_dir, faces=not args.no_faces, progress=not args.quiet)
    print(json.dumps(result, sort_keys=True))
    return 0


def _add_extraction(bench_sub: Any, help_: str) -> None:
    p = bench_sub.add_parser("extraction", help=help_)
    p.add_argument("--videos", default=None, help="folder of clips (default: generate --make-clips clips)")
    p.add_argument("--workers", type=int, default=None, help="processes for the parallel run (default: all cores)")
    p.add_argument("--limit", type=int, default=None, help="use at most N clips")
    p.add_argument("--make-clips", type=int, default=8, metavar="N", help="clips to generate without --videos")
    p.add_argument("--clips-dir", default=None, help="keep generated clips here and reuse them next time")
    p.add_argument("--no-faces", action="store_true", help="skip the face-crop timing")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_extraction_cmd)


def _pass_through(module: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        import importlib

        return int(importlib.import_module(module).main(args.rest) or 0)

    return run


# `bench <name>` sub-subcommands: name -> (module, help). This module's own benchmark gets its full parser;
# any other module must offer ``main(argv)`` and is imported only when its benchmark runs (bench_train imports
# torch: about 1 GB and seconds that every other CLI command, and every forked feature worker, would pay).
# A module that is not there is skipped, so a new benchmark plugs in with one line here.
BENCHES: dict[str, tuple[str, str]] = {
    "extraction": ("ffdv_utils.bench", "baseline vs workspace audio features, and face crops: clips/s"),
    "train": ("ffdv_utils.bench_train", "training images/s: baseline JPEG loader vs the feature cache"),
}


def add_bench_parser(subparsers: Any) -> None:
    """Adds ``bench`` with one sub-subcommand per entry of BENCHES to the CLI's subparsers."""
    import importlib.util

    p = subparsers.add_parser("bench", help="benchmarks: " + ", ".join(f"bench {n}" for n in BENCHES))
    bench_sub = p.add_subparsers(dest="bench", required=True)
    for name, (module, help_) in BENCHES.items():
        if module == __name__:
            _add_extraction(bench_sub, help_)
        elif importlib.util.find_spec(module) is not None:
            # No option prefix of its own, so every argument (--help included) reaches the module's parser.
            q = bench_sub.add_parser(name, help=help_, add_help=False, prefix_chars="\x01")
            q.add_argument("rest", nargs=argparse.REMAINDER)
            q.set_defaults(func=_pass_through(module))


def main(argv: list[str] | None = None) -> int:
    """``python -m ffdv_utils.bench extraction ...`` (the same as ``python -m ffdv_utils bench extraction``)."""
    ap = argparse.ArgumentParser(prog="python -m ffdv_utils.bench")
    sub = ap.add_subparsers(dest="bench", required=True)
    _add_extraction(sub, BENCHES["extraction"][1])
    args = ap.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
