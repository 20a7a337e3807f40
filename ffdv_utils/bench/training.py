"""``python -m ffdv_utils bench train``: training images/s, the public baseline's loader against the workspace's.

Three measurements of the same model (fwd + bwd + optimiser step, batch 40 by default):

- ``memory``: the workspace's model stepping on one batch already normalised on the device (no loader, no
  augmentation): the ceiling.
- ``baseline``: the public baseline's input pipeline -- one JPEG file per clip, read with PIL, then torchvision
  ``Resize((256, 256))``, random horizontal and vertical flips, ``ToTensor``, ``Normalize`` -- and its step
  (float32, NCHW memory format).
- ``workspace``: the feature cache (uint8 memory map, sliced once per batch), copied to the device as uint8,
  normalised and flipped there, and the workspace's step (channels-last, mixed precision on GPUs, optional
  ``torch.compile``).

Both loaders are also timed alone (no model), and so is the cache read item by item (a plain DataLoader over
``ClipDataset``); for each training run the share of wall time spent waiting for the next batch is reported.
On the CPU the three take turns step by step and the median step time counts, so that a change in load on
shared cores slows them alike; on a GPU each runs its steps in one stretch (synchronising after every step
would hide the overlap of loading and computing that a real run has). The data are synthetic mel-like images
(no clips needed). The last line printed is JSON.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..core.device import amp_dtype, configure_backends, resolve_device
from ..core.progress import progress_bar
from ..core.schema import TRAIN_DEFAULTS
from ..features.batches import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClipDataset,
    batch_loader,
    prepare_batch,
)
from ..models.registry import build_model
from ..training.loop import build_optimizer, train_step


def synthetic_mels(n: int, height: int = 256, width: int = 256, seed: int = 0) -> np.ndarray:
    """``n`` uint8 images that look like log-mel spectrograms (harmonic stacks, syllable envelopes, noise floor),
    so JPEG compresses them about as much as real ones."""
    rng = np.random.default_rng(seed)
    f = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    t = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    out = np.empty((n, height, width), np.uint8)
    for i in range(n):
        f0 = rng.uniform(0.02, 0.05) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
        harmonics = np.cos(2 * np.pi * f / f0) ** 8 * np.exp(-3 * f)
        envelope = (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 6) * t + rng.uniform(0, 6))) ** 2
        img = 0.25 + 0.6 * harmonics * envelope + 0.08 * rng.standard_normal((height, width), dtype=np.float32)
        out[i] = np.clip(img * 255, 0, 255).astype(np.uint8)
    return out


class BaselineJpegDataset(Dataset):
    """The public baseline's dataset: one JPEG per clip, opened with PIL as RGB, torchvision transforms."""

    def __init__(self, paths: list[str], targets: np.ndarray, size: int = 256):
        from torchvision import transforms

        self.paths, self.targets = paths, np.asarray(targets, np.float32)
        self.transform = transforms.Compose([
            transforms.Resize((size, size)),
            transforms.RandomHorizontalFlip(),
            transforms.RandomVerticalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(list(IMAGENET_MEAN), list(IMAGENET_STD)),
        ])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        img = Image.open(self.paths[i]).convert("RGB")
        return self.transform(img), torch.tensor(self.targets[i])


def write_jpegs(mels: np.ndarray, folder: Path) -> list[str]:
    """One grey JPEG per image, as the baseline saved its mel images (OpenCV, default quality)."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(mels):
        path = folder / f"{i:06d}.jpg"
        cv2.imwrite(str(path), img)
        paths.append(str(path))
    return paths


def _cycle(make: Callable[[], Iterable]) -> Iterator:
    """Endless batches: restarts the loader (a new epoch) when it runs out."""
    while True:
        yield from make()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_loader(batches: Iterator, n: int) -> float:
    """Seconds to draw ``n`` batches (no model)."""
    next(batches)  # workers started, files opened
    t = time.perf_counter()
    for _ in range(n):
        next(batches)
    return time.perf_counter() - t


def _time_interleaved(runs: Mapping[str, tuple[Iterator, Callable[[Any], None]]], warmup: int, steps: int,
                      block: int, device: torch.device, progress: bool) -> dict:
    """Times several (batches, step) pairs in turns of ``block`` steps, so that a machine whose load changes
    (shared cores) slows them alike. Per run: median seconds per step and the share of time spent waiting for data.
    """
    for batches, step in runs.values():
        for _ in range(warmup):
            step(next(batches))
    _sync(device)
    per_step: dict[str, list[float]] = {name: [] for name in runs}
    wait = dict.fromkeys(runs, 0.0)
    rounds = max(1, steps // block)
    for _ in progress_bar(range(rounds), desc="bench train", unit="round", disable=not progress, leave=False):
        for name, (batches, step) in runs.items():
            t0 = time.perf_counter()
            for _ in range(block):
                t = time.perf_counter()
                batch = next(batches)
                wait[name] += time.perf_counter() - t
                step(batch)
            _sync(device)
            per_step[name].append((time.perf_counter() - t0) / block)
    return {name: {"step_s": float(np.median(v)), "loader_share": wait[name] / (sum(v) * block)}
            for name, v in per_step.items()}


def bench_train(model: str = "resnet18", device: str = "auto", steps: int | None = None, batch: int = 40,
                image_size: int = 256, workers: int | None = None, warmup: int | None = None, amp: Any = "auto",
                channels_last: bool = True, compile: Any = False, threads: int | None = None,
                baseline_step: str = "baseline", seed: int = 0, workdir: str | os.PathLike | None = None,
                progress: bool = True) -> dict:
    """Training throughput with the baseline's loader and with the workspace's, on synthetic mel images.

    Args:
        model: timm backbone of the audio model (``test_resnet`` for a quick check).
        device: ``cpu``, ``cuda`` or ``auto``.
        steps: Timed steps per measurement (default: 3 on the CPU, 100 on a GPU).
        batch: Batch size (the baseline used 40).
        image_size: Side of the square mel image.
        workers: DataLoader processes for both loaders (default: 0 on the CPU, min(8, CPUs - 1) on a GPU).
        warmup: Untimed steps before each measurement (default: 1 on the CPU, 10 on a GPU).
        amp: The workspace step's mixed precision (``auto``: bf16 / fp16 on GPUs, off on the CPU).
        channels_last: The workspace step's memory format.
        compile: ``torch.compile`` the workspace's model (True or a mode name).
        threads: ``torch.set_num_threads`` for this process (default: unchanged).
        baseline_step: ``baseline`` (float32, NCHW, as the public baseline) or ``workspace`` (the workspace's
            step settings for both, so the ratio isolates the input pipeline).
        seed: Seeds data and weights.
        workdir: Where the synthetic JPEGs and memory map go (default: a temporary folder, removed after).
        progress: Progress bars.

    Returns:
        Dict of figures: images/s per measurement, loader-only images/s, loader shares, ratios, settings.
    """
    dev = resolve_device(device)
    if threads:
        torch.set_num_threads(int(threads))
    gpu = dev.type == "cuda"
    steps = int(steps or (100 if gpu else 3))
    warmup = int(warmup if warmup is not None else (10 if gpu else 1))
    workers = int(workers if workers is not None else (min(8, max(0, (os.cpu_count() or 1) - 1)) if gpu else 0))
    configure_backends(dev, deterministic=False)
    n = min(batch * (warmup + steps + 1), 2048)  # distinct images per pass; loaders cycle beyond that
    own_dir = workdir is None
    root = Path(tempfile.mkdtemp(prefix="ffdv-bench-train-")) if own_dir else Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    try:
        mels = synthetic_mels(n, image_size, image_size, seed)
        targets = np.random.default_rng(seed).integers(0, 2, n).astype(np.float32)
        jpegs = write_jpegs(mels, root / "jpeg")
        mm = np.lib.format.open_memmap(root / "mels.npy", mode="w+", dtype=np.uint8, shape=mels.shape)
        mm[:] = mels
        mm.flush()
        del mm, mels
        cache = np.load(root / "mels.npy", mmap_mode="r")  # what MelStore.packed() hands to training
        names = [f"{i:06d}.mp4" for i in range(n)]
        ws_ds = ClipDataset(names, targets, mels=cache)
        base_ds = BaselineJpegDataset(jpegs, targets, image_size)


        def ws_batches() -> Iterator:
            loader = batch_loader(ws_ds, batch, shuffle=True, seed=seed, num_workers=workers, pin_memory=gpu)
            return _cycle(lambda: loader)

        def base_batches() -> Iterator:
            loader = DataLoader(base_ds, batch_size=batch, shuffle=True, num_workers=workers, pin_memory=gpu,
                                persistent_workers=workers > 0)
            return _cycle(lambda: ({"mel": x, "target": y} for x, y in loader))

        p = {**TRAIN_DEFAULTS, "model": model, "model_type": "audio", "batch_size": batch, "image_size": image_size,
             "augment": "baseline", "pretrained": False}
        ws_amp = amp_dtype(amp, dev)
        base_amp, base_cl = (None, False) if baseline_step == "baseline" else (ws_amp, channels_last)

        def make_step(amp_: torch.dtype | None, cl: bool, compiled: Any) -> Callable[[Any], None]:
            torch.manual_seed(seed)
            net = build_model(p).to(dev)
            if cl:
                net = net.to(memory_format=torch.channels_last)
            opt = build_optimizer(net, p)
            scaler = torch.amp.GradScaler("cuda", enabled=amp_ == torch.float16)
            run = torch.compile(net, mode=compiled if isinstance(compiled, str) else None) if compiled else net
            run.train()

            def step(b: Any, augment: bool = True) -> None:
                train_step(run, b, opt, scaler, p, dev, amp_, cl, augment=augment)

            return step

        n_loader = max(steps, 5)
        out: dict[str, Any] = {}
        # loaders alone: how fast each could feed any model
        out["baseline_loader_img_s"] = batch * n_loader / _time_loader(base_batches(), n_loader)
        out["workspace_loader_img_s"] = batch * n_loader / _time_loader(ws_batches(), n_loader)
        # the same cache read one item at a time and collated (what a plain DataLoader over ClipDataset does)
        per_item = DataLoader(ws_ds, batch_size=batch, shuffle=True, num_workers=workers, pin_memory=gpu,
                              persistent_workers=workers > 0)
        out["per_item_loader_img_s"] = batch * n_loader / _time_loader(_cycle(lambda: per_item), n_loader)
        # the ceiling ("memory"): the workspace's step on one batch already on the device, same model as "workspace"
        ws_step = make_step(ws_amp, channels_last, compile)
        base_step = make_step(base_amp, base_cl, False)
        one = prepare_batch(ws_ds.get_batch(list(range(batch))), dev, channels_last)
        timed = _time_interleaved({"memory": (_cycle(lambda: [one]), lambda b: ws_step(b, augment=False)),
                                   "baseline": (base_batches(), base_step),
                                   "workspace": (ws_batches(), ws_step)},
                                  warmup, steps, 1 if not gpu else steps, dev, progress)
        mem, base, ws = timed["memory"], timed["baseline"], timed["workspace"]
        out.update({
            "memory_img_s": batch / mem["step_s"],
            "baseline_img_s": batch / base["step_s"],
            "workspace_img_s": batch / ws["step_s"],
            "baseline_loader_share": base["loader_share"],
            "workspace_loader_share": ws["loader_share"],
            "memory_step_s": mem["step_s"], "baseline_step_s": base["step_s"], "workspace_step_s": ws["step_s"],
        })
        out["speedup"] = out["workspace_img_s"] / out["baseline_img_s"]
        out["loader_speedup"] = out["workspace_loader_img_s"] / out["baseline_loader_img_s"]
        out["workspace_vs_memory_step"] = ws["step_s"] / mem["step_s"]  # 1.10 = the loader costs 10%
        out["targets"] = train_targets(out, model, image_size, gpu)
        out.update({"model": model, "device": str(dev), "gpu": torch.cuda.get_device_name(dev) if gpu else None,
                    "batch": batch, "image_size": image_size, "steps": steps, "warmup": warmup, "workers": workers,
                    "threads": torch.get_num_threads(), "amp": str(ws_amp).replace("torch.", "") if ws_amp else "off",
                    "channels_last": bool(channels_last), "compile": compile, "baseline_step": baseline_step,
                    "cpus": os.cpu_count()})
        return out
    finally:
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)


def train_targets(r: Mapping[str, Any], model: str, image_size: int, gpu: bool) -> dict[str, dict]:
    """The training speed targets, judged on this run's figures: the loader within 10 % of in-memory steps always; >= 2x
    the baseline on a CPU and >= 10,000 img/s on a GPU, both for resnet18 at 256x256 only."""
    out = {"loader_within_10pct": {"value": round(r["workspace_vs_memory_step"], 3), "target": "<= 1.10",
                                   "met": r["workspace_vs_memory_step"] <= 1.10}}
    if model == "resnet18" and int(image_size) == 256:
        if gpu:
            out["gpu_10k_img_s"] = {"value": round(r["workspace_img_s"], 1), "target": ">= 10000 img/s",
                                    "met": r["workspace_img_s"] >= 10_000}
        else:
            out["cpu_2x_baseline"] = {"value": round(r["speedup"], 2), "target": ">= 2x", "met": r["speedup"] >= 2}
    return out


def report(result: Mapping[str, Any]) -> str:
    """Human-readable lines for a ``bench_train`` result."""
    r = result
    return "\n".join([
        f"model {r['model']} {r['image_size']}x{r['image_size']}, batch {r['batch']}, device {r['device']}"
        f"{' (' + r['gpu'] + ')' if r.get('gpu') else ''}, {r['steps']} timed steps, workers {r['workers']}, "
        f"threads {r['threads']}, workspace amp {r['amp']}, channels_last {r['channels_last']}",
        f"loaders alone      baseline {r['baseline_loader_img_s']:9.1f} img/s   workspace "
        f"{r['workspace_loader_img_s']:9.1f} img/s   ({r['loader_speedup']:.1f}x; cache read item by item "
        f"{r['per_item_loader_img_s']:.1f} img/s)",
        f"training           baseline {r['baseline_img_s']:9.1f} img/s   workspace {r['workspace_img_s']:9.1f} img/s"
        f"   ({r['speedup']:.2f}x)",
        f"waiting for data   baseline {100 * r['baseline_loader_share']:8.1f} %       workspace "
        f"{100 * r['workspace_loader_share']:8.1f} %",
        f"in-memory batch    {r['memory_img_s']:.1f} img/s; workspace step time = "
        f"{r['workspace_vs_memory_step']:.3f} x in-memory step time",
        *[f"target {name}: {t['value']} (want {t['target']}): {'met' if t['met'] else 'NOT met'}"
          for name, t in r.get("targets", {}).items()],
    ])
