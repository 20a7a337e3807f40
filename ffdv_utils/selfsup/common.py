"""What every self-supervised model shares: parameters, the per-clip window cache, a dataset over cached windows, the
training loop, and saving to / loading from a plain dict (config + tensors) that fits inside any checkpoint.

A model here never sees a fake: :meth:`SelfSupModel.fit` takes paths of real clips and makes its own negatives from
them (re-synthesised speech, shifted audio, disturbed frame runs). What a clip's preprocessing produces is cached
once under ``cache_dir()/selfsup/<kind>-<hash of the preprocessing parameters>/`` as one ``.npy`` file per clip
(read back memory-mapped), so a fit over 100,000 clips streams windows from disk and never holds the set in RAM.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..core.config import params_hash
from ..core.files import atomic_path, file_stamp
from ..core.paths import cache_dir

__all__ = ["SelfSupModel", "ClipCache", "WindowSet", "resolve_params", "train_net", "seed_everything", "fill_missing"]

# parameters every model understands (each module adds its own)
COMMON_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "steps": 300,          # optimiser steps of one fit
    "batch_size": 32,
    "lr": 2.0e-3,
    "weight_decay": 1.0e-4,
    "device": "auto",      # "auto": CUDA when available
    "workers": 0,          # DataLoader worker processes (0 on a shared CPU, several on a GPU machine)
    "threads": 1,          # torch CPU threads during fit and score
    "prep_workers": 1,     # processes for per-clip preprocessing (decoding, vocoders, face detection)
    "progress": False,
}


def resolve_params(defaults: Mapping[str, Any], params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults overlaid by ``params``; an unknown key is an error (a typo must not silently keep a default)."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(f"unknown parameters {unknown}; known: {sorted(defaults)}")
    return {**defaults, **params}


def seed_everything(seed: int) -> None:
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def device_of(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class ClipCache:
    """One cached array per clip, keyed by the preprocessing parameters and the clip file's size and mtime.

    Args:
        kind: Folder prefix ("voice-train", "sync", ...).
        prep: The parameters that decide what ``make`` computes (hashed into the folder name).
        make: ``make(path) -> np.ndarray`` for one clip; may raise (the clip is then reported and skipped).
        root: Cache root (default ``cache_dir()/selfsup``).
    """

    def __init__(self, kind: str, prep: Mapping[str, Any], make: Callable[[Path], np.ndarray],
                 root: Path | None = None) -> None:
        self.dir = Path(root or cache_dir() / "selfsup") / f"{kind}-{params_hash(dict(prep))}"
        self.make = make

    def entry(self, path: str | os.PathLike) -> Path:
        p = Path(path)
        key = hashlib.sha1(f"{p.resolve()}|{file_stamp(p)}".encode()).hexdigest()[:12]
        return self.dir / f"{p.stem[:60]}-{key}.npy"

    def get(self, path: str | os.PathLike) -> Path:
        """The cache file of one clip, computed first when missing (written atomically)."""
        out = self.entry(path)
        if not out.is_file():
            arr = self.make(Path(path))
            self.dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(out, suffix=".tmp.npy") as tmp:
                np.save(tmp, arr, allow_pickle=False)
        return out

    def build(self, paths: Sequence[str | os.PathLike], workers: int = 1,
              progress: bool = False) -> tuple[list[Path | None], list[tuple[str, str]]]:
        """Cache files for ``paths`` (None where a clip failed) and the failures as (path, reason)."""
        files: list[Path | None] = [None] * len(paths)
        failures: list[tuple[str, str]] = []
        todo = []
        for i, p in enumerate(paths):
            e = self.entry(p)
            if e.is_file():
                files[i] = e
            else:
                todo.append(i)
        if workers > 1 and len(todo) > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(workers, initializer=_one_thread) as ex:
                results = list(ex.map(_safe_get, [self] * len(todo), [paths[i] for i in todo]))
        else:
            results = []
            for n, i in enumerate(todo):
                results.append(_safe_get(self, paths[i]))
                if progress:
                    print(f"  [{self.dir.name}] {n + 1}/{len(todo)} {Path(paths[i]).name}", flush=True)
        for i, (f, err) in zip(todo, results):
            files[i] = f
            if err:
                failures.append((str(paths[i]), err))
        return files, failures


def _one_thread() -> None:
    torch.set_num_threads(1)


def _safe_get(cache: ClipCache, path: str | os.PathLike) -> tuple[Path | None, str]:
    try:
        return cache.get(path), ""
    except Exception as e:  # one bad clip is reported, never the end of a fit
        return None, f"{type(e).__name__}: {e}"


class WindowSet(Dataset):
    """(clip, window) pairs over cached per-clip arrays; each item is made by ``take(array, index, rng)``.

    Arrays are opened memory-mapped in the worker that reads them, so only the windows of a batch are in memory.
    """

    def __init__(self, files: Sequence[Path], counts: Sequence[int], take: Callable[..., Any], seed: int = 0,
                 length: int | None = None) -> None:
        self.files = [str(f) for f in files]
        self.index = np.array([(c, w) for c, n in enumerate(counts) for w in range(n)], np.int64).reshape(-1, 2)
        self.take = take
        self.seed = seed
        self.length = length
        self._open: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.length or len(self.index)

    def array(self, c: int) -> np.ndarray:
        if c not in self._open:
            if len(self._open) > 256:
                self._open.clear()
            self._open[c] = np.load(self.files[c], mmap_mode="r")
        return self._open[c]

    def __getitem__(self, i: int) -> Any:
        rng = np.random.default_rng([self.seed, i, int(torch.randint(0, 2**31 - 1, ()).item())])
        c, w = self.index[i % len(self.index)] if self.length else self.index[i]
        return self.take(self.array(int(c)), int(w), rng)


def train_net(net: nn.Module, data: Dataset, loss_fn: Callable[[nn.Module, Any], torch.Tensor], p: Mapping[str, Any],
              log: Callable[[str], None] | None = None) -> list[float]:
    """``p['steps']`` AdamW steps over shuffled batches of ``data`` (cycled), cosine learning rate.

    ``loss_fn(net, batch)`` moves the batch to the net's device and returns a scalar loss. Returns the loss per step.
    """
    dev = next(net.parameters()).device
    g = torch.Generator().manual_seed(int(p["seed"]))
    loader = DataLoader(data, batch_size=int(p["batch_size"]), shuffle=True, drop_last=len(data) > p["batch_size"],
                        num_workers=int(p["workers"]), generator=g, persistent_workers=int(p["workers"]) > 0,
                        pin_memory=dev.type == "cuda")
    opt = torch.optim.AdamW(net.parameters(), lr=float(p["lr"]), weight_decay=float(p["weight_decay"]))
    steps = int(p["steps"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=float(p["lr"]), total_steps=max(steps, 2),
                                                pct_start=0.1)
    losses: list[float] = []
    net.train()
    t0 = time.time()
    while len(losses) < steps:
        for batch in loader:
            loss = loss_fn(net, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if log and (len(losses) % 50 == 0 or len(losses) == steps):
                log(f"step {len(losses)}/{steps} loss {np.mean(losses[-50:]):.4f} ({time.time() - t0:.0f} s)")
            if len(losses) >= steps:
                break
    net.eval()
    return losses


def fill_missing(scores: np.ndarray) -> np.ndarray:
    """NaN scores (clips that failed) replaced by the median of the others (0.5 when all failed)."""
    s = np.asarray(scores, np.float64).copy()
    bad = ~np.isfinite(s)
    if bad.any():
        s[bad] = np.median(s[~bad]) if (~bad).any() else 0.5
    return s


def windowed_files(files: Iterable[Path | None], windows: Callable[[int], int],
                   failures: Sequence[tuple[str, str]]) -> tuple[list[Path], list[int]]:
    """The cached files (``None``: failed) that hold at least one training window, and how many each holds
    (``windows(rows of the file)``); ValueError naming the first failures when none does."""
    keep, counts = [], []
    for f in files:
        if f is None:
            continue
        n = windows(np.load(f, mmap_mode="r").shape[0])
        if n > 0:
            keep.append(f)
            counts.append(n)
    if not keep:
        raise ValueError(f"no training clip is long enough or readable: {failures[:3]}")
    return keep, counts


class SelfSupModel:
    """A trained self-supervised scorer: a network, its config, and what it needs to preprocess clips.

    Subclasses set ``kind`` and ``defaults``, and implement ``build_net(config)``, ``_fit(paths, p)`` and
    ``_score_files(files)``. ``score`` returns one anomaly score per clip (higher = more likely fake; NaN where a
    clip could not be read, listed in ``self.failures``).
    """

    kind: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: Mapping[str, Any], net: nn.Module | None = None) -> None:
        self.config = dict(config)
        self.net = net if net is not None else self.build_net(self.config)
        self.net.eval()
        self.failures: list[tuple[str, str]] = []
        self.history: dict[str, Any] = {}

    # --- to implement -------------------------------------------------------------------------------------------
    @classmethod
    def build_net(cls, config: Mapping[str, Any]) -> nn.Module:
        raise NotImplementedError

    def _score_paths(self, paths: Sequence[Path]) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def _fit(cls, paths: Sequence[Path], p: dict[str, Any]) -> SelfSupModel:
        raise NotImplementedError

    # --- shared by the subclasses' _fit ---------------------------------------------------------------------------
    @classmethod
    def train_windows(cls, files: Sequence[Path], counts: Sequence[int], take: Callable[..., Any],
                      loss_fn: Callable[[nn.Module, Any], torch.Tensor], p: dict[str, Any],
                      failures: list[tuple[str, str]]) -> SelfSupModel:
        """A model of this class trained (``train_net``) on the windows of ``files`` (``counts`` per file, each made
        by ``take``), with the failures of preprocessing and the training history recorded."""
        data = WindowSet(files, counts, take, seed=int(p["seed"]), length=max(sum(counts), int(p["batch_size"])))
        model = cls({k: v for k, v in p.items() if k != "device"})
        model.net.to(device_of(p["device"]))
        log = (lambda m: print(f"  [{cls.kind}] {m}", flush=True)) if p["progress"] else None
        losses = train_net(model.net, data, loss_fn, p, log)
        model.failures = failures
        model.history = {"loss": losses, "clips": len(files), "windows": int(sum(counts))}
        return model

    # --- the interface --------------------------------------------------------------------------------------------
    @classmethod
    def fit(cls, real_paths: Iterable[str | os.PathLike], params: Mapping[str, Any] | None = None) -> SelfSupModel:
        """Trains on real clips only (the negatives are made from them) and returns the model."""
        p = resolve_params(cls.defaults, params)
        paths = [Path(x) for x in real_paths]
        if not paths:
            raise ValueError("fit needs at least one real clip")
        seed_everything(int(p["seed"]))
        old = torch.get_num_threads()
        torch.set_num_threads(int(p["threads"]))
        try:
            model = cls._fit(paths, p)
        finally:
            torch.set_num_threads(old)
        model.config["fitted_on"] = len(paths)
        return model

    def score(self, paths: Iterable[str | os.PathLike]) -> np.ndarray:
        """Anomaly score per clip, higher = more likely fake (NaN for a clip that could not be read)."""
        paths = [Path(x) for x in paths]
        old = torch.get_num_threads()
        torch.set_num_threads(int(self.config.get("threads", 1)))
        try:
            with torch.inference_mode():
                return self._score_paths(paths)
        finally:
            torch.set_num_threads(old)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: str | torch.device) -> SelfSupModel:
        self.net.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        """``{"kind", "config", "weights"}``: plain types and CPU tensors, to store inside any checkpoint."""
        return {"kind": self.kind, "config": dict(self.config),
                "weights": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], device: str = "cpu") -> SelfSupModel:
        if state.get("kind") != cls.kind:
            raise ValueError(f"state holds a {state.get('kind')!r} model, not {cls.kind!r}")
        config = dict(state["config"])
        net = cls.build_net(config)
        net.load_state_dict(state["weights"])
        model = cls(config, net)
        return model.to(device_of(device) if device == "auto" else device)

    def save(self, path: str | os.PathLike) -> Path:
        with atomic_path(path) as tmp:
            torch.save(self.state_dict(), tmp)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> SelfSupModel:
        return cls.from_state_dict(torch.load(path, map_location="cpu", weights_only=True), device=device)
