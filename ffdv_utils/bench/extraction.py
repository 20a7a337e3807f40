"""``python -m ffdv_utils bench extraction``: the public baseline's audio path (moviepy writes a wav, librosa reads it
back) against the workspace's PyAV path and against a floor (the least code that decodes, resamples and takes a mel
spectrogram), plus face crops (Haar, and MTCNN in a process of its own), on the same clips; clips/s, CPU time and
peak memory.
"""

from __future__ import annotations

import multiprocessing as mp_
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..features.extract import extract_faces, extract_mels
from ..features.mel import baseline_mel_image
from ..features.params import mel_params
from ..media.decode import audio_decoders, load_audio
from ..sample_data.clips import SHORT_SHAPES, make_clips

# ---------------------------------------------------------------------------------------------------------------
# bench extraction


def peak_rss_mib() -> dict[str, float]:
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


def _load() -> list[float]:
    """Load averages (1, 5, 15 min) of the machine: how busy it was while a figure was taken."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return []


class _Floor:
    """The floor: the least code that turns a clip into a mel image, with none of the workspace around it.

    PyAV opens the container for its audio alone (no video decoder) and decodes packet by packet; each frame's
    channels are averaged straight from its planes; libsoxr resamples once (FFmpeg's swresample, frame by frame,
    measured 2.5 ms slower per 3-6 s clip here); numpy frames the signal, scipy's pocketfft takes the STFT, one
    matrix product applies librosa's mel filterbank, and 10 log10 (80 dB below the peak) goes to uint8. No cache,
    no file written, no manifest, no error handling, no worker: what any faster path would still pay.
    """

    def __init__(self, mp: Mapping[str, Any]) -> None:
        import librosa  # already imported by the baseline; used for the filterbank, built once
        import scipy.fft
        import scipy.signal
        import soxr

        self.fft, self.soxr = scipy.fft, soxr
        self.sr, self.n_fft, self.hop = int(mp["sr"]), int(mp["n_fft"]), int(mp["hop_length"])
        self.window = scipy.signal.get_window("hann", self.n_fft).astype(np.float32)
        self.basis = librosa.filters.mel(sr=self.sr, n_fft=self.n_fft, n_mels=int(mp["n_mels"]), fmin=mp["fmin"],
                                         fmax=mp["fmax"] or self.sr / 2).astype(np.float32)
        self.options = {"codec_whitelist": audio_decoders()}
        self.limit = int(mp["max_seconds"] * self.sr) if mp["max_seconds"] else None

    def __call__(self, path: str) -> np.ndarray | None:
        import av

        with av.open(path, options=self.options) as c:
            if not c.streams.audio:
                return None
            stream = c.streams.audio[0]
            rate = stream.codec_context.sample_rate
            # one buffer for the whole clip, the frames' channels averaged into it as they decode (keeping views
            # of the frames instead stops FFmpeg reusing its buffers: measured 0.6-0.9 ms more per clip)
            y, n, to_float = np.empty(int((stream.duration or 0) * stream.time_base * rate) + 4096, np.float32), 0, None
            for packet in c.demux(stream):
                for frame in packet.decode():
                    if frame.format.name != "fltp":  # AAC decodes to float planar; anything else is converted
                        to_float = to_float or av.AudioResampler(format="fltp", layout="stereo", rate=rate)
                        frames = to_float.resample(frame)
                    else:
                        frames = [frame]
                    for f in frames:
                        k, planes = f.samples, f.planes
                        if n + k > y.size:
                            y = np.concatenate([y, np.empty(max(y.size, k), np.float32)])
                        np.copyto(y[n:n + k], np.frombuffer(planes[0], np.float32, count=k))
                        if len(planes) > 1:
                            y[n:n + k] += np.frombuffer(planes[1], np.float32, count=k)
                            y[n:n + k] *= 0.5
                        n += k
        y = y[:n]
        if rate != self.sr:
            y = self.soxr.resample(y, rate, self.sr)
        y = np.pad(y[: self.limit], self.n_fft // 2)
        frames = np.lib.stride_tricks.sliding_window_view(y, self.n_fft)[:: self.hop]
        spec = self.fft.rfft(frames * self.window, axis=-1)
        db = 10 * np.log10(np.maximum(((spec.real ** 2 + spec.imag ** 2) @ self.basis.T).T, 1e-10))
        return np.clip((db - (db.max() - 80.0)) * (255 / 80.0), 0, 255).astype(np.uint8)

    def time(self, paths: list[str]) -> dict:
        """Runs the floor over ``paths`` in this process on one thread: clips/s, CPU s per clip, per-clip times."""
        from threadpoolctl import threadpool_limits

        times = []
        with threadpool_limits(1):  # one core, as one workspace worker (BLAS would take every core otherwise)
            c0, t0 = time.process_time(), time.perf_counter()
            for p in paths:
                t = time.perf_counter()
                self(p)
                times.append(time.perf_counter() - t)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        return {"clips_per_s": len(paths) / wall, "cpu": cpu / len(paths), "median": _pct(times, 50)}


def _mtcnn_timing(clips: list[dict], root: str, frames: int) -> dict:
    """MTCNN face crops with one worker, run in a process of its own so torch (which MTCNN imports) stays out of
    the benchmark's own memory figures; the first clip warms up the imports and the model."""
    import pandas as pd

    df = pd.DataFrame(clips)
    fp = {"face_detector": "mtcnn", "face_frames": frames}
    extract_faces(df[:1], fp, Path(root) / "mtcnn-warm", workers=1, progress=False)
    c0 = sum(os.times()[:2])
    store = extract_faces(df, fp, Path(root) / "mtcnn", workers=1, progress=False)
    cpu = (sum(os.times()[:2]) - c0) / len(df)
    found = float(np.mean([store.face_found(n).mean() for n in df["video_name"]]))
    return {"stats": store.stats, "cpu": cpu, "found": found, "rss": peak_rss_mib()["self"]}


def bench_extraction(videos: str | os.PathLike | None = None, workers: int | None = None, limit: int | None = None,
                     make_n: int = 8, clips_dir: str | os.PathLike | None = None, faces: bool = True,
                     progress: bool = True, log: Callable[[str], Any] = print, min_mel_tasks: int = 400,
                     min_face_tasks: int = 24, mtcnn: bool = True, mtcnn_frames: int = 16, short: bool = False) -> dict:
    """Times the public baseline's audio feature against the workspace's and a floor, and face crops, on the same clips.

    (a) the baseline as written (moviepy wav + librosa + JPEG, one process); (b) the workspace default preset with
    one worker and (c) with ``workers``; the floor (:class:`_Floor`: bare PyAV decode + resample + STFT/mel, this
    process, one thread), timed just before and just after (b), the faster of the two kept, so every run states
    the workspace's distance from it; (d) face crops (default face params) with one worker, i.e. per core;
    (e) MTCNN face crops (``face_detector: mtcnn``, ``mtcnn_frames`` frames) with one worker in a fresh process,
    with that process's peak memory (the overall peak RSS is taken before it, so it stays free of torch).
    Imports, first calls and the worker pool's server are warmed up first, so the figures are per-clip steady state.
    The machine's load average is recorded at the start and the end (a busy machine lowers every wall-clock rate;
    CPU seconds per clip are immune to it).

    Args:
        videos: Folder of video files (None: generate ``make_n`` clips).
        workers: Processes for (c) (None: os.cpu_count()).
        limit: Use at most this many clips.
        make_n: Clips to generate when ``videos`` is None.
        clips_dir: Keep generated clips here (reused next time); None: a temporary folder.
        faces: Also time face crops.
        mtcnn: With ``faces``, also time MTCNN face crops (e).
        mtcnn_frames: Frames per clip for (e) (the target: >= 1 clip/s per core at 16 frames).
        progress: Progress bars.
        log: Where the human-readable lines go.
        min_mel_tasks: Workspace mel runs (and the floor) cycle through the clips until at least this many
            (baseline: one pass).
        min_face_tasks: The same for face crops.
        short: Generate short clips (``SHORT_SHAPES``: 3-6 s, 320x240 to 640x480, 16-48 kHz) instead of the
            5-10 s ``BENCH_SHAPES``.

    Returns:
        Dict of the figures (also what the CLI prints as its last line, as JSON).
    """
    import pandas as pd

    workers = workers or os.cpu_count() or 1
    rss_start = peak_rss_mib()["self"]
    load_start = _load()
    with tempfile.TemporaryDirectory(prefix="ffdv_bench_") as tmp:
        tmp = Path(tmp)
        if videos is None:
            folder = Path(clips_dir) if clips_dir else tmp / "clips"
            paths = make_clips(folder, make_n if limit is None else min(make_n, limit), progress,
                               shapes=SHORT_SHAPES if short else None)
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
        durations = [load_audio(p, 16000).size / 16000 for p in paths]
        audio_s, clip_s = sum(durations), float(np.median(durations))
        log(f"{len(paths)} clips, {audio_s:.1f} s of audio in all (median {clip_s:.1f} s per clip); workers for the "
            f"parallel run: {workers}; workspace runs cycle through them: {len(mel_clips)} mel tasks, "
            f"{len(face_clips)} face tasks; load average at the start {_fmt_load(load_start)} on {os.cpu_count()} "
            "cores")

        # Warm-up: library imports, first-call setup and the pool's server are paid once per process, not per clip.
        baseline_mel_image(paths[0], tmp)
        extract_mels(clips[:1], {}, tmp / "warm", workers=1, progress=False)
        if workers > 1:
            extract_mels(mel_clips[: 2 * workers], {}, tmp / "warm-par", workers=workers, progress=False)
        floor = _Floor(mel_params({}))
        floor.time([str(p) for p in paths[:2]])

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

        floor_paths = [p for p in mel_clips["path"] if _has_audio(p)]
        floor_runs = [floor.time(floor_paths)]
        c0 = _cpu()
        one = extract_mels(mel_clips, {}, tmp / "one", workers=1, progress=progress).stats
        one_cpu = (_cpu() - c0) / len(mel_clips)
        floor_runs.append(floor.time(floor_paths))
        fl = max(floor_runs, key=lambda r: r["clips_per_s"])
        distance, distance_cpu = fl["clips_per_s"] / one["clips_per_s"], one_cpu / fl["cpu"]
        log(f"(b) workspace default preset, 1 worker: {one['clips_per_s']:.2f} clips/s "
            f"({one['clips_per_s'] / base_rate:.1f}x), median {one.get('clip_median_s', 0):.3f} s, "
            f"p90 {one.get('clip_p90_s', 0):.3f} s per clip")
        log(f"    CPU time per clip: baseline {base_cpu:.3f} s (incl. its ffmpeg subprocesses), workspace "
            f"{one_cpu:.4f} s: {base_cpu / max(one_cpu, 1e-9):.1f}x less")
        log(f"    floor (bare PyAV decode + soxr + STFT/mel, no cache; this process, 1 thread): "
            f"{fl['clips_per_s']:.2f} clips/s ({fl['clips_per_s'] / base_rate:.1f}x the baseline; runs before and "
            f"after (b): {floor_runs[0]['clips_per_s']:.1f}, {floor_runs[1]['clips_per_s']:.1f}), CPU "
            f"{1000 * fl['cpu']:.2f} ms per clip; the workspace (1 worker) is {distance:.2f}x the floor's time "
            f"per clip ({distance_cpu:.2f}x in CPU time: {1000 * (one_cpu - fl['cpu']):+.2f} ms per clip)")
        seed = extract_mels(mel_clips, {"mel_preset": "seed"}, tmp / "seed", workers=1, progress=progress).stats
        log(f"    seed preset (baseline image), 1 worker: {seed['clips_per_s']:.2f} clips/s "
            f"({seed['clips_per_s'] / base_rate:.1f}x)")
        par = extract_mels(mel_clips, {}, tmp / "par", workers=workers, progress=progress).stats
        par_cpu = par.get("clip_cpu_s", 0.0)
        log(f"(c) workspace default preset, {par['workers']} workers: {par['clips_per_s']:.2f} clips/s "
            f"({par['clips_per_s'] / base_rate:.1f}x), CPU {1000 * par_cpu:.2f} ms per clip in the workers "
            f"({1000 * one.get('clip_cpu_s', 0.0):.2f} ms in (b)'s)")
        result: dict[str, Any] = {
            "clips": len(paths), "mel_tasks": len(mel_clips), "face_tasks": len(face_clips),
            "audio_seconds": round(audio_s, 1), "clip_seconds_median": round(clip_s, 2), "cpu_count": os.cpu_count(),
            "baseline_clips_per_s": round(base_rate, 3), "baseline_median_s": _pct(base_times, 50),
            "baseline_p90_s": _pct(base_times, 90), "baseline_errors": base_errors,
            "default_1w_clips_per_s": one["clips_per_s"], "default_1w_median_s": one.get("clip_median_s", 0.0),
            "default_1w_p90_s": one.get("clip_p90_s", 0.0), "ratio_1w": round(one["clips_per_s"] / base_rate, 2),
            "seed_1w_clips_per_s": seed["clips_per_s"], "ratio_seed_1w": round(seed["clips_per_s"] / base_rate, 2),
            "workers": par["workers"], "default_par_clips_per_s": par["clips_per_s"],
            "ratio_par": round(par["clips_per_s"] / base_rate, 2), "default_par_cpu_s_per_clip": round(par_cpu, 5),
            "mel_errors": one["error"], "mel_params": mel_params({})["preset"],
            "baseline_cpu_s_per_clip": round(base_cpu, 4), "default_1w_cpu_s_per_clip": round(one_cpu, 5),
            "ratio_cpu": round(base_cpu / max(one_cpu, 1e-9), 2),
            "floor_clips_per_s": round(fl["clips_per_s"], 3), "floor_cpu_s_per_clip": round(fl["cpu"], 5),
            "floor_runs_clips_per_s": [round(r["clips_per_s"], 3) for r in floor_runs],
            "ratio_floor": round(fl["clips_per_s"] / base_rate, 2), "floor_distance_1w": round(distance, 3),
            "floor_distance_1w_cpu": round(distance_cpu, 3), "rss_at_start_mib": rss_start,
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
        rss = peak_rss_mib()  # before (e): its torch lives in a child, counted on its own
        if faces and mtcnn:
            ctx = mp_.get_context("forkserver" if "forkserver" in mp_.get_all_start_methods() else "spawn")
            with ProcessPoolExecutor(1, mp_context=ctx) as pool:
                m = pool.submit(_mtcnn_timing, face_clips.to_dict("records"), str(tmp), mtcnn_frames).result()
            ms = m["stats"]
            log(f"(e) face crops ({mtcnn_frames} frames, mtcnn), 1 worker = per core: {ms['clips_per_s']:.2f} clips/s, "
                f"median {ms.get('clip_median_s', 0):.3f} s, p90 {ms.get('clip_p90_s', 0):.3f} s per clip, "
                f"CPU {m['cpu']:.3f} s per clip ({1 / max(m['cpu'], 1e-9):.2f} clips per CPU-second); faces found "
                f"in {100 * m['found']:.0f}% of frames; peak RSS of its process {m['rss']:.0f} MiB (torch included)")
            result.update(faces_mtcnn_frames=mtcnn_frames, faces_mtcnn_clips_per_s_per_core=ms["clips_per_s"],
                          faces_mtcnn_median_s=ms.get("clip_median_s", 0.0),
                          faces_mtcnn_p90_s=ms.get("clip_p90_s", 0.0),
                          faces_mtcnn_found_fraction=round(m["found"], 3), faces_mtcnn_errors=ms["error"],
                          faces_mtcnn_cpu_s_per_clip=round(m["cpu"], 4), faces_mtcnn_peak_rss_mib=m["rss"])
    load_end = _load()
    log(f"peak RSS: parent {rss['self']:.0f} MiB + largest child {rss['children']:.0f} MiB = {rss['total']:.0f} MiB "
        "(an upper bound: forked children count pages shared with the parent)")
    log(f"load average at the end {_fmt_load(load_end)} on {os.cpu_count()} cores (above the worker count: other "
        "processes shared the cores and the wall-clock rates are low by up to that share; CPU times are not)")
    result.update(peak_rss_self_mib=rss["self"], peak_rss_children_mib=rss["children"],
                  peak_rss_total_mib=rss["total"], load_avg_start=load_start, load_avg_end=load_end)
    # 250,000 clips on 4 cores, from the 1-worker rate (x4: workers scale with cores when nothing else runs) and
    # from CPU seconds per clip (the same, but immune to other load on the machine while benchmarking).
    n, h = 250_000, 3600.0
    proj = {"baseline_1_process_h": round(n / base_rate / h, 2),
            "mels_4_cores_h": round(n / (one["clips_per_s"] * 4) / h, 2),
            "mels_4_cores_cpu_based_h": round(n * one_cpu / 4 / h, 2)}
    if faces:
        proj.update(faces_4_cores_h=round(n / (fs["clips_per_s"] * 4) / h, 2),
                    faces_4_cores_cpu_based_h=round(n * face_cpu / 4 / h, 2))
    if "faces_mtcnn_clips_per_s_per_core" in result:
        proj.update(faces_mtcnn_4_cores_h=round(n / (result["faces_mtcnn_clips_per_s_per_core"] * 4) / h, 2),
                    faces_mtcnn_4_cores_cpu_based_h=round(n * result["faces_mtcnn_cpu_s_per_clip"] / 4 / h, 2),
                    faces_mtcnn_4_workers_rss_gib=round(4 * result["faces_mtcnn_peak_rss_mib"] / 1024, 2))
    result["projection_250k"] = proj
    log("projection for 250,000 clips: baseline as written (1 process) {baseline_1_process_h} h; mels on 4 cores "
        "{mels_4_cores_h} h ({mels_4_cores_cpu_based_h} h from CPU time)".format(**proj)
        + (" ; faces on 4 cores {faces_4_cores_h} h ({faces_4_cores_cpu_based_h} h from CPU time)".format(**proj)
           if faces else "")
        + (" ; mtcnn faces on 4 cores {faces_mtcnn_4_cores_h} h ({faces_mtcnn_4_cores_cpu_based_h} h from CPU "
           "time; 4 workers hold about {faces_mtcnn_4_workers_rss_gib} GiB)".format(**proj)
           if "faces_mtcnn_4_cores_h" in proj else ""))
    result["targets"] = extraction_targets(result)
    for name, t in result["targets"].items():
        log(f"target {name}: {t['value']} (want {t['target']}): {'met' if t['met'] else 'NOT met'}")
    return result


def _has_audio(path: str) -> bool:
    """True when the file has an audio stream (the floor, like the baseline, has nothing to do without one)."""
    import av

    try:
        with av.open(path, options={"codec_whitelist": audio_decoders()}) as c:
            return bool(c.streams.audio)
    except Exception:
        return False


def _fmt_load(load: list[float]) -> str:
    return " / ".join(f"{x:.2f}" for x in load) + " (1 / 5 / 15 min)" if load else "(unknown)"


# Clips this short or shorter are judged by the short-clip targets; the 5-10 s benchmark clips by the long-clip ones.
SHORT_CLIP_S = 6.0


def extraction_targets(r: Mapping[str, Any]) -> dict[str, dict]:
    """The extraction speed targets judged on a run's figures (only those the run measured).

    Mels: on short clips (median at most ``SHORT_CLIP_S``) >= 12x the baseline on one worker, >= 20x
    with the default workers, and the workspace's time per clip within 2x of the floor's; on the 5-10 s clips
    >= 10x and >= 20x, so they must not fall below what was promised for them (the floor check applies to
    every length). Faces >= 2 clips/s per core; MTCNN faces >= 1 clip/s per core at 16 frames in a
    process below 1.5 GiB; peak RSS of the extraction < 1.5 GiB.
    """
    short = r.get("clip_seconds_median", SHORT_CLIP_S + 1) <= SHORT_CLIP_S
    one = 12 if short else 10
    checks = [("audio_1_worker", "ratio_1w", f">= {one}x", lambda v: v >= one),
              ("audio_default_workers", "ratio_par", ">= 20x", lambda v: v >= 20),
              ("audio_floor_distance", "floor_distance_1w", "<= 2x the floor's time", lambda v: v <= 2),
              ("faces_per_core", "faces_clips_per_s_per_core", ">= 2 clips/s", lambda v: v >= 2),
              ("faces_mtcnn_per_core", "faces_mtcnn_clips_per_s_per_core", ">= 1 clip/s", lambda v: v >= 1),
              ("faces_mtcnn_rss", "faces_mtcnn_peak_rss_mib", "< 1536 MiB", lambda v: v < 1536),
              ("peak_rss", "peak_rss_total_mib", "< 1536 MiB", lambda v: v < 1536)]
    return {name: {"value": r[key], "target": want, "met": bool(ok(r[key]))}
            for name, key, want, ok in checks if key in r}
