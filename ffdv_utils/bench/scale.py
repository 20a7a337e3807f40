"""``python -m ffdv_utils bench scale``: how each stage's cost grows with the number of clips, and a projection.

A data root of N clips is built from a few sample clips under new names (symlinks), with a fresh feature cache and
outputs folder, and every stage runs on it in a process of its own: mel extraction and face extraction (every
split, as notebook 02), the frozen backbone's embeddings (train and validation clips), one training epoch (03 with
``epochs: 1``; its profile part included) and the scoring of the test table (06's ``predict_runs``). The same is
done at 4N. For each stage: seconds per clip at N and 4N (the stage's own work, timed inside its process after the
imports), the growth exponent ``log(t4N / tN) / log(clips4N / clipsN)`` of its time (1 = linear), the peak resident
memory of the stage's whole process tree (polled from ``/proc`` every ``poll_s``; the sum of the processes' RSS, so
pages shared by forked workers count once per process) and its ratio at 4N, and the bytes the stage added to the
cache per clip. Stages over the targets (exponent > 1.1, RSS ratio > 1.2) are flagged.

Then a projection to 250,000 training and 100,000 test clips from the 4N figures: on this machine (measured CPU
seconds per clip x clips / cores), on a Kaggle GPU box (4 cores and one T4 or P100) and on one H100 box. No GPU was
measured here: in the GPU rows the embeddings take an assumed GPU throughput (``GPU_ASSUMPTIONS``, stated in the
output), every other stage is taken as CPU-bound on the box's cores (conservative for the stages a GPU would help).

The test split has max(64, N / 5) clips at N unless ``--test-clips`` says otherwise (4x at 4N): scoring reads 64
clips per batch, so its memory at N and 4N compares only from 64 test clips at N on (a smaller split shows the batch
filling up, not growth). ``--embedding-memory K`` adds the peak RSS of a process
reading K and 4K cached face embeddings, through ``embed_dataset`` and stacked in memory as before (issue 26).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..core.config import load_params
from ..core.files import atomic_write
from ..core.paths import params_dir
from ..core.schema import FEATURES, TRAINING, notebook_defaults, with_defaults
from ..data.labels import clips_for_splits, read_labels
from ..features.cache import entry_file
from ..features.clips import clip_features
from ..sample_data.generate import make_sample_dataset

STAGES = ("mel", "faces", "embeddings", "train", "score")
EXPONENT_TARGET = 1.1  # a stage's time may grow at most as N^1.1 between N and 4N
RSS_RATIO_TARGET = 1.2  # and its peak tree RSS at 4N at most 1.2x that at N
PROJECT_TRAIN, PROJECT_TEST = 250_000, 100_000
# Assumed, not measured (no GPU was lent): images per second of a frozen EfficientNet-Lite0 forward pass at 112-128
# px in fp16 with large batches, per GPU, and the CPU cores of each box. The CPU-bound stages scale with the cores.
GPU_ASSUMPTIONS: dict[str, dict[str, Any]] = {
    "kaggle_t4": {"label": "Kaggle: 4 cores + 1 T4", "cores": 4, "gpu_images_per_s": 2500},
    "kaggle_p100": {"label": "Kaggle: 4 cores + 1 P100", "cores": 4, "gpu_images_per_s": 1500},
    "h100": {"label": "1 H100 + 16 cores", "cores": 16, "gpu_images_per_s": 20000},
}
# a Kaggle session's disk as its status panel shows it (20 GB of it /kaggle/working): reported, not verified here
KAGGLE_DISK_GB = 73.0
SCORE_BATCH = 64  # clips per batch of inference.score.predict_clips: the default test split holds at least one batch


# ---------------------------------------------------------------------------------------------------------------
# data roots of N clips


def make_root(source: Path, dest: Path, n: int, seed: int = 0, n_test: int | None = None) -> dict[str, int]:
    """A data root of ``n`` training clips, ``max(2, n // 5)`` validation and as many test clips (or ``n_test``) at
    ``dest``.

    Every clip is a symlink to a labelled clip of the data root ``source`` (its train and val splits), under a new
    name, so the cache sees ``n`` distinct clips; real and fake sources alternate, so every split holds both.

    Returns:
        The number of clips per split.
    """
    pool = []
    for split, folder in (("train_label.txt", "trainset"), ("val_label.txt", "valset")):
        if (source / split).is_file():
            labels = read_labels(source / split)
            pool += [(source / folder / v, int(t)) for v, t in zip(labels.video_name, labels.target)
                     if (source / folder / v).is_file()]
    reals, fakes = [p for p in pool if p[1] == 0], [p for p in pool if p[1] == 1]
    if not reals or not fakes:
        raise FileNotFoundError(f"{source}: needs labelled real and fake clips in trainset/ or valset/")
    rng = random.Random(seed)
    rng.shuffle(reals)
    rng.shuffle(fakes)
    order = [x for pair in zip(reals * (len(fakes) // len(reals) + 1), fakes * (len(reals) // len(fakes) + 1))
             for x in pair]
    sizes = {"train": n, "val": max(2, n // 5), "test": max(2, n // 5) if n_test is None else int(n_test)}
    k = 0
    for split, folder in (("train", "trainset"), ("val", "valset"), ("test", "testset")):
        (dest / folder).mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(sizes[split]):
            src, target = order[k % len(order)]
            k += 1
            name = f"{split}{i:07d}{src.suffix}"
            (dest / folder / name).symlink_to(src.resolve())
            rows.append(f"{name},{target}" if split != "test" else f"{name},")
        header = "video_name,target" if split != "test" else "video_name,score"
        text = "\n".join([header, *rows]) + "\n"
        (dest / ("test_template.csv" if split == "test" else f"{split}_label.txt")).write_text(text, encoding="utf-8")
    return sizes


def sample_source(folder: Path, n: int = 24, seed: int = 0, progress: bool = False) -> Path:
    """The data root of a small sample dataset in ``folder`` (generated once, reused next time)."""
    data = folder / "data"
    if not (data / "train_label.txt").is_file():
        make_sample_dataset(folder, n=n, seed=seed, progress=progress)
    return data


# ---------------------------------------------------------------------------------------------------------------
# memory of a process tree


def tree_usage(pid: int) -> tuple[int, dict[int, float]]:
    """Resident bytes of ``pid`` and every descendant, and each one's CPU seconds so far (``/proc``; nothing where
    there is no ``/proc``)."""
    parents: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0, cpu
    tick = os.sysconf("SC_CLK_TCK")
    for e in entries:
        if not e.isdigit():
            continue
        try:
            with open(f"/proc/{e}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        parents.setdefault(int(fields[1]), []).append(int(e))
        cpu[int(e)] = (int(fields[11]) + int(fields[12])) / tick
    page = os.sysconf("SC_PAGE_SIZE")
    total, todo, tree = 0, [pid], {}
    while todo:
        p = todo.pop()
        todo += parents.get(p, [])
        tree[p] = cpu.get(p, 0.0)
        try:
            with open(f"/proc/{p}/statm", "rb") as fh:
                total += int(fh.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            pass
    return total, tree


def tree_rss_bytes(pid: int) -> int:
    """Resident bytes of ``pid`` and every descendant (the sum of their RSS)."""
    return tree_usage(pid)[0]


class TreePeak:
    """Polls a process tree in a thread: ``peak`` is the highest sum of its resident memory seen, ``cpu_s`` the CPU
    seconds of every process seen in it (each at its last poll, so a process's last ``poll_s`` may be missed)."""

    def __init__(self, pid: int, poll_s: float = 0.5) -> None:
        self.pid, self.poll_s, self.peak = pid, poll_s, 0
        self.cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, cpu = tree_usage(self.pid)
            self.peak = max(self.peak, rss)
            self.cpu.update(cpu)
            self._stop.wait(self.poll_s)

    @property
    def cpu_s(self) -> float:
        return sum(self.cpu.values())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def folder_bytes(folder: Path) -> int:
    """Bytes of every file under ``folder`` (0 when it does not exist)."""
    total = 0
    for dirpath, _, files in os.walk(folder):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


# ---------------------------------------------------------------------------------------------------------------
# one stage, in its own process


def stage_params(root: Path, preset: str | os.PathLike | None, run_name: str,
                 overrides: Mapping[str, Any] | None = None) -> dict:
    """03's parameters from ``preset`` for the data root ``root`` (one epoch; the test table of ``make_root``)."""
    over = {"data_root": str(root), "run_name": run_name, "epochs": 1, "test_template": "test_template.csv",
            "test_dir": "testset", **(overrides or {})}
    return load_params([preset] if preset else [], over, base=notebook_defaults("03_train"))


def run_stage(stage: str, root: Path, preset: str | None, run_name: str,
              overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Runs an extraction stage (``mel`` or ``faces``) on the data root ``root`` in this process, which holds what
    notebook 02 imports and no more (no torch; the other stages run in ``bench.scale_stages``); its work's wall and
    CPU seconds and the clips processed. The cache is this process's ($FFDV_CACHE).
    """
    if stage not in ("mel", "faces"):
        raise ValueError(f"{stage!r} is not an extraction stage (mel, faces); the others are in bench.scale_stages")
    p = stage_params(root, preset, run_name, overrides)
    c0, t0 = os.times(), time.perf_counter()
    clips = clips_for_splits(root, ("train", "val", "test"), "testset", "test_template.csv")
    clips = clips[clips.exists].reset_index(drop=True)
    clip_features(p, clips, [stage], progress=False)
    return stage_figures({"stage": stage, "clips": len(clips)}, c0, t0)


def stage_figures(out: dict[str, Any], c0: Any, t0: float) -> dict[str, Any]:
    """``out`` with the work's wall seconds since ``t0``, CPU seconds since ``c0`` (``os.times()``), and this
    process's own CPU at the start and the end (the parent subtracts the imports from the tree's CPU)."""
    c1 = os.times()
    out.update(seconds=time.perf_counter() - t0, cpu_s=sum(c1[:4]) - sum(c0[:4]),
               cpu_before_work_s=c0.user + c0.system, cpu_after_work_s=c1.user + c1.system)
    return out


def stage_main(argv: Sequence[str] | None = None) -> int:
    """``python -m ffdv_utils.bench.scale mel|faces --root DIR --run NAME [--preset FILE] [--set JSON]``: one
    extraction stage, its figures as one JSON line on stdout (the last line)."""
    ap = argparse.ArgumentParser(prog="ffdv_utils.bench.scale")
    ap.add_argument("stage", choices=("mel", "faces"))
    ap.add_argument("--root", required=True, type=Path)
    ap.add_argument("--run", default="scale")
    ap.add_argument("--preset", default=None)
    ap.add_argument("--set", default="{}", help="parameter overrides as JSON")
    args = ap.parse_args(argv)
    print(json.dumps(run_stage(args.stage, args.root, args.preset, args.run, json.loads(args.set))), flush=True)
    return 0


def stage_command(stage: str) -> list[str]:
    """The command line that runs ``stage`` in a fresh interpreter: ``stage_main`` here for the extraction stages
    (free of torch), ``bench.scale_stages.main`` for the others. Through ``python -c``, not ``-m``: a worker that
    multiprocessing spawns re-imports the main module, and these modules import more than a worker needs."""
    module, func = ("scale", "stage_main") if stage in ("mel", "faces") else ("scale_stages", "main")
    return [sys.executable, "-c", f"import sys; from ffdv_utils.bench.{module} import {func}; "
                                  f"sys.exit({func}(sys.argv[1:]))", stage]


# ---------------------------------------------------------------------------------------------------------------
# memory of the embedding stack alone (issue 26, point 3)

EMBEDDING_SHAPE = (8, 1280)  # one clip's face embeddings: 8 frames of EfficientNet-Lite0 features, float16 (20 KB)


def entry_names(n: int) -> list[str]:
    """The clip names of ``write_entries``."""
    return [f"clip{i:07d}.mp4" for i in range(n)]


def write_entries(folder: Path, n: int, shape: tuple[int, ...] = EMBEDDING_SHAPE) -> None:
    """``n`` cached embedding entries (float16, ``shape``) in the layout of ``features.embeddings``."""
    rng = np.random.default_rng(0)
    for name in entry_names(n):
        path = folder / "entries" / entry_file(name, ".npy")
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, rng.standard_normal(shape).astype(np.float16))


def embedding_memory(n: int, work: Path, log: Callable[[str], Any] = print) -> list[dict]:
    """Peak RSS of a fresh process reading ``n`` and ``4 n`` cached face embeddings (``EMBEDDING_SHAPE``): through
    ``embed_dataset`` (streamed into a memory-mapped stack) and stacked in memory as before; one row each."""
    folder = work / "emb-memory"
    write_entries(folder, 4 * n)
    rows = []
    for legacy in (False, True):
        for k in (n, 4 * n):
            cmd = stage_command("stack") + ["--root", str(folder), "--n", str(k)]
            done = subprocess.run(cmd + ["--legacy"] * legacy, capture_output=True, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
            if done.returncode != 0:
                raise RuntimeError(f"bench scale: reading {k} embeddings failed:\n{done.stderr[-3000:]}")
            r = json.loads(done.stdout.strip().splitlines()[-1])
            r["added_mib"] = round(r["peak_rss_mib"] - r["rss_before_mib"], 1)
            rows.append(r)
            log(f"  {'stacked in memory (before)' if legacy else 'streamed, memory-mapped'}: {k} clips "
                f"({r['stack_mib']:.0f} MiB of embeddings): peak RSS {r['peak_rss_mib']:.0f} MiB "
                f"(+{r['added_mib']:.0f} MiB over the process before reading), {r['seconds']:.1f} s")
    return rows


# ---------------------------------------------------------------------------------------------------------------
# the benchmark


def measure_size(n: int, work: Path, source: Path, stages: Sequence[str], preset: str | None,
                 overrides: Mapping[str, Any], poll_s: float, log: Callable[[str], Any],
                 partial: Path | None = None, n_test: int | None = None) -> dict[str, dict]:
    """Builds the N-clip root in ``work`` and runs each stage in a subprocess with a fresh cache; figures per stage
    (also written to ``partial`` after each stage, when given)."""
    root = work / f"root-{n}"
    sizes = make_root(source, root, n, n_test=n_test)
    env = {**os.environ, "FFDV_CACHE": str(work / f"cache-{n}"), "FFDV_OUTPUTS": str(work / f"outputs-{n}"),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    log(f"N = {n}: {sizes['train']} train, {sizes['val']} val, {sizes['test']} test clips in {root}")
    results: dict[str, dict] = {}
    for stage in stages:
        before = folder_bytes(work / f"cache-{n}")
        cmd = stage_command(stage) + ["--root", str(root), "--run", f"scale{n}",
               "--set", json.dumps(dict(overrides))] + (["--preset", str(preset)] if preset else [])
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        poller = TreePeak(proc.pid, poll_s)
        stdout, stderr = proc.communicate()
        peak = poller.stop()
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"bench scale: stage {stage} at N={n} failed ({proc.returncode}):\n{stderr[-3000:]}")
        res = json.loads(stdout.strip().splitlines()[-1])
        poller.cpu[proc.pid] = max(poller.cpu.get(proc.pid, 0.0), res["cpu_after_work_s"])
        # the tree's CPU (workers included) less what the stage's process spent importing before its clock started
        res.update(process_wall_s=round(wall, 2), tree_cpu_s=round(poller.cpu_s, 2),
                   work_cpu_s=round(max(0.0, poller.cpu_s - res["cpu_before_work_s"]), 2),
                   peak_tree_rss_mib=round(peak / 2 ** 20, 1),
                   cache_bytes=folder_bytes(work / f"cache-{n}") - before)
        res["s_per_clip"] = res["seconds"] / max(1, res["clips"])
        res["cpu_s_per_clip"] = res["work_cpu_s"] / max(1, res["clips"])
        res["cache_bytes_per_clip"] = res["cache_bytes"] / max(1, res["clips"])
        results[stage] = res
        if partial is not None:
            atomic_write(partial, json.dumps({"n": n, "stages": results}, indent=1))
        log(f"  {stage:<10} {res['clips']:>5} clips  {res['seconds']:8.1f} s  ({res['s_per_clip']:.4f} s/clip, "
            f"CPU {res['cpu_s_per_clip']:.4f} s/clip)  peak tree RSS {res['peak_tree_rss_mib']:.0f} MiB  "
            f"cache +{res['cache_bytes'] / 2 ** 20:.1f} MiB")
    return results


def growth_table(small: Mapping[str, dict], large: Mapping[str, dict], n: int) -> list[dict]:
    """One row per stage: s/clip at N and 4N, growth exponent, peak tree RSS and its ratio, flags."""
    rows = []
    for stage, a in small.items():
        b = large[stage]
        exp = math.log(max(b["seconds"], 1e-9) / max(a["seconds"], 1e-9)) / math.log(b["clips"] / a["clips"])
        ratio = b["peak_tree_rss_mib"] / max(a["peak_tree_rss_mib"], 1e-9)
        flags = [f"exponent {exp:.2f} > {EXPONENT_TARGET}"] if exp > EXPONENT_TARGET else []
        flags += [f"RSS x{ratio:.2f} > {RSS_RATIO_TARGET}"] if ratio > RSS_RATIO_TARGET else []
        rows.append({"stage": stage, "clips_n": a["clips"], "clips_4n": b["clips"],
                     "s_per_clip_n": round(a["s_per_clip"], 4), "s_per_clip_4n": round(b["s_per_clip"], 4),
                     "cpu_s_per_clip_4n": round(b["cpu_s_per_clip"], 4), "exponent": round(exp, 3),
                     "rss_mib_n": a["peak_tree_rss_mib"], "rss_mib_4n": b["peak_tree_rss_mib"],
                     "rss_ratio": round(ratio, 3), "cache_kb_per_clip": round(b["cache_bytes_per_clip"] / 1e3, 1),
                     "flags": "; ".join(flags) or "ok"})
    return rows


def projection(large: Mapping[str, dict], params: Mapping[str, Any], cores: int) -> dict[str, Any]:
    """Hours and disk for ``PROJECT_TRAIN`` training and ``PROJECT_TEST`` test clips from the 4N figures.

    The clips each stage sees: extraction every clip; embeddings the training clips; training the training clips
    for ``epochs`` epochs (the measured epoch's time per clip x epochs, plus the rest of the stage once); scoring
    the test clips. This machine: measured CPU s/clip x clips / ``cores``. GPU boxes: the embeddings at the assumed
    GPU rate (``GPU_ASSUMPTIONS``; images per clip: 1 mel image + ``face_frames`` crops), the rest CPU-bound on
    the box's cores.
    """
    resolved = with_defaults(params, FEATURES, TRAINING)
    epochs = max(1, int(resolved["epochs"]))
    frames = int(resolved["face_frames"])
    counts = {"mel": PROJECT_TRAIN + PROJECT_TEST, "faces": PROJECT_TRAIN + PROJECT_TEST,
              "embeddings": PROJECT_TRAIN, "train": PROJECT_TRAIN, "score": PROJECT_TEST}

    def cpu_seconds(stage: str) -> float:
        r = large[stage]
        if stage == "train" and "epoch_s" in r and r["seconds"] > 0:
            # the CPU time split like the wall time: the epoch's share x epochs, the rest (datasets, validation
            # of the last epoch, the profile part's fit) once
            share = min(1.0, r["epoch_s"] / r["seconds"])
            return r["work_cpu_s"] * (share * epochs + (1 - share)) / max(1, r["clips"])
        return r["cpu_s_per_clip"]

    boxes = {"this_machine": {"label": f"this machine ({cores} cores, CPU only)", "cores": cores,
                              "gpu_images_per_s": None}, **GPU_ASSUMPTIONS}
    table: list[dict] = []
    for stage, r in large.items():
        row: dict[str, Any] = {"stage": stage, "clips": counts[stage], "cpu_s_per_clip": round(cpu_seconds(stage), 4),
                               "disk_gb": round(r["cache_bytes_per_clip"] * counts[stage] / 1e9, 2)}
        for key, box in boxes.items():
            gpu = box["gpu_images_per_s"]
            if stage == "embeddings" and gpu:
                hours, how = counts[stage] * (1 + frames) / gpu / 3600, "assumed GPU rate"
            else:
                hours, how = counts[stage] * cpu_seconds(stage) / box["cores"] / 3600, "measured CPU s/clip / cores"
            row[f"{key}_h"] = round(hours, 2)
            row[f"{key}_basis"] = how
        table.append(row)
    totals = {f"{k}_h": round(sum(r[f"{k}_h"] for r in table), 2) for k in boxes}
    return {"rows": table, "totals": totals, "disk_gb": round(sum(r["disk_gb"] for r in table), 1),
            "boxes": {k: dict(v) for k, v in boxes.items()}, "epochs": epochs, "face_frames": frames,
            "train_clips": PROJECT_TRAIN, "test_clips": PROJECT_TEST}


def format_growth(rows: Sequence[Mapping[str, Any]], n: int) -> str:
    """The growth table as Markdown."""
    lines = [f"| stage | clips N / 4N | s/clip at N={n} | s/clip at 4N={4 * n} | exponent | peak tree RSS N (MiB) "
             "| at 4N (MiB) | ratio | cache KB/clip | flags |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['clips_n']} / {r['clips_4n']} | {r['s_per_clip_n']:.4f} | "
                     f"{r['s_per_clip_4n']:.4f} | {r['exponent']:.2f} | {r['rss_mib_n']:.0f} | {r['rss_mib_4n']:.0f} "
                     f"| {r['rss_ratio']:.2f} | {r['cache_kb_per_clip']:.1f} | {r['flags']} |")
    return "\n".join(lines)


def format_memory(rows: Sequence[Mapping[str, Any]]) -> str:
    """The embedding-memory rows as Markdown."""
    lines = ["| embeddings read | clips | embeddings (MiB) | peak RSS (MiB) | added by reading (MiB) | memory map |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {'stacked in memory (before)' if r['legacy'] else 'streamed (embed_dataset)'} | {r['n']:,} | "
                     f"{r['stack_mib']:.0f} | {r['peak_rss_mib']:.0f} | {r['added_mib']:.0f} | {r['memmap']} |")
    return "\n".join(lines)


def format_projection(proj: Mapping[str, Any]) -> str:
    """The projection table as Markdown, with what is measured and what assumed."""
    boxes = proj["boxes"]
    head = "| stage | clips | CPU s/clip (measured) | " + " | ".join(b["label"] + " (h)" for b in boxes.values())
    lines = [head + " | disk (GB) |", "|---" * (4 + len(boxes)) + "|"]
    for r in proj["rows"]:
        cells = " | ".join(f"{r[f'{k}_h']:.2f}" + (" (assumed GPU)" if r[f"{k}_basis"] == "assumed GPU rate" else "")
                           for k in boxes)
        lines.append(f"| {r['stage']} | {r['clips']:,} | {r['cpu_s_per_clip']:.4f} | {cells} | {r['disk_gb']:.1f} |")
    lines.append("| **total** | | | " + " | ".join(f"**{proj['totals'][f'{k}_h']:.1f}**" for k in boxes)
                 + f" | **{proj['disk_gb']:.1f}** |")
    notes = [f"{proj['train_clips']:,} training + {proj['test_clips']:,} test clips; training = {proj['epochs']} "
             f"epochs (the measured epoch x {proj['epochs']}, the rest of the stage once).",
             "Measured: CPU seconds per clip at 4N on this machine; cache bytes per clip. Assumed (no GPU was lent): "
             + "; ".join(f"{b['label']}: {b['cores']} cores, embeddings at {b['gpu_images_per_s']:,} images/s"
                         for k, b in boxes.items() if b["gpu_images_per_s"])
             + f" ({1 + proj['face_frames']} images per clip). Every other stage is taken as CPU-bound on the box's "
             "cores (MTCNN on CUDA and the GPU scoring path were not measured: an upper bound for those rows).",
             f"Disk: the cache's bytes per clip x clips, {proj['disk_gb']:.0f} GB in all (a Kaggle session shows "
             f"about {KAGGLE_DISK_GB:.0f} GB of disk, 20 GB of it /kaggle/working: reported, not verified here)."
             + (" Over it." if proj["disk_gb"] > KAGGLE_DISK_GB else "")]
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {x}" for x in notes)


def bench_scale(n: int = 100, stages: Sequence[str] = STAGES, preset: str | os.PathLike | None = None,
                source: str | os.PathLike | None = None, source_n: int = 24, work: str | os.PathLike | None = None,
                overrides: Mapping[str, Any] | None = None, poll_s: float = 0.5, out: str | os.PathLike | None = None,
                embedding_memory_n: int = 0, test_clips: int | None = None,
                log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Runs ``stages`` at ``n`` and ``4 n`` clips and returns (and prints) the growth table and the projection.

    Args:
        n: Training clips of the small root (the large one has 4 n; validation and test n // 5 each).
        stages: Stages to run, in order (``STAGES``; train needs embeddings' features, score needs train).
        preset: Parameter file (default ``params/best.yaml``).
        source: A data root whose labelled clips are linked under new names (default: a sample dataset of
            ``source_n`` clips, generated in ``work``).
        work: Folder for the roots, caches and outputs (default: a temporary folder, removed at the end).
        overrides: Parameter overrides for every stage.
        poll_s: Seconds between two polls of the process tree's memory.
        out: Write ``scale.json`` and ``growth.csv`` / ``projection.csv`` here.
        embedding_memory_n: Also measure the peak RSS of reading this many and 4x as many cached face embeddings,
            streamed and stacked in memory (``embedding_memory``; 0: skip).
        test_clips: Test clips of the small root (4x in the large one; default max(``SCORE_BATCH``, n // 5)).
            Scoring reads 64 clips per batch, so its memory is comparable between the sizes only from 64 on.
        log: Where progress lines go.
    """
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; use {', '.join(STAGES)}")
    stages = [s for s in STAGES if s in stages]
    if test_clips is None:
        test_clips = max(SCORE_BATCH, n // 5)
    preset = str(preset) if preset else str(params_dir() / "best.yaml")
    overrides = dict(overrides or {})
    tmp = None
    if work is None:
        tmp = tempfile.TemporaryDirectory(prefix="ffdv_bench_scale_")
        work = tmp.name
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    try:
        src = Path(source) if source else sample_source(work / "sample", source_n)
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        load0 = os.getloadavg() if hasattr(os, "getloadavg") else None
        log(f"bench scale: stages {', '.join(stages)}; preset {preset}; N = {n} and {4 * n}; "
            f"{os.cpu_count()} cores; load {load0}")
        partial = (lambda k: Path(out) / f"stages-{k}.json") if out else (lambda k: None)
        memory = embedding_memory(embedding_memory_n, work, log) if embedding_memory_n > 0 else []
        small, large = {}, {}
        if stages:
            small = measure_size(n, work, src, stages, preset, overrides, poll_s, log, partial(n), test_clips)
            large = measure_size(4 * n, work, src, stages, preset, overrides, poll_s, log, partial(4 * n),
                                 None if test_clips is None else 4 * test_clips)
        rows = growth_table(small, large, n)
        params = {"face_frames": stage_params(work, preset, "x", overrides).get("face_frames"),
                  "epochs": _preset_epochs(preset, overrides)}
        proj = projection(large, params, os.cpu_count() or 1)
        result = {"n": n, "stages": stages, "preset": preset, "started": started, "cores": os.cpu_count(),
                  "load_start": load0, "load_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
                  "small": small, "large": large, "growth": rows, "projection": proj, "embedding_memory": memory,
                  "targets": {"exponent": EXPONENT_TARGET, "rss_ratio": RSS_RATIO_TARGET}}
        if memory:
            log("\n" + format_memory(memory))
        if rows:
            log("\n" + format_growth(rows, n))
            log("\nProjection:\n" + format_projection(proj))
        if out:
            _write_outputs(Path(out), result)
        return result
    finally:
        if tmp is not None:
            tmp.cleanup()


def _preset_epochs(preset: str, overrides: Mapping[str, Any]) -> int:
    """The preset's own number of epochs (the stages run one)."""
    loaded = load_params([preset], dict(overrides), base=notebook_defaults("03_train"))
    return max(1, int(with_defaults(loaded, TRAINING)["epochs"]))


def _write_outputs(out: Path, result: Mapping[str, Any]) -> None:
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "scale.json", json.dumps(result, indent=1, default=str))
    atomic_write(out / "growth.csv", pd.DataFrame(result["growth"]).to_csv(index=False))
    atomic_write(out / "projection.csv", pd.DataFrame(result["projection"]["rows"]).to_csv(index=False))


if __name__ == "__main__":
    sys.exit(stage_main())
