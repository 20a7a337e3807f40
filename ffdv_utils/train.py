"""fit(): the training loop, checkpoints every epoch, best-by-validation-AUC model, resume after a crash.

Writes into the run folder: ``checkpoints/last.pt`` (everything needed to resume), ``checkpoints/best.pt``
(model weights + resolved parameters, what prediction loads), ``history.csv``, ``val_predictions.csv`` and
``metrics.json``. All writes go through a temporary file and a rename, so a kill never leaves a torn checkpoint.

Speed: batches are sliced from the memory-mapped feature cache (``datasets.batch_loader``), moved to the device
as uint8 and normalised and augmented there; mixed precision (bf16 where the GPU has it, fp16 with a grad scaler
on T4-class GPUs), channels-last memory format and optional ``torch.compile``.

Several GPUs: ``torchrun --nproc_per_node=N -m ffdv_utils.train -f params/03_train.yaml [--data-root D --run R]``
runs one process per GPU with DistributedDataParallel. ``batch_size`` is per process. Each rank trains on its
share of the clips (DistributedSampler) and scores its share of the validation clips; the scores are gathered,
so every rank computes the same metrics. Rank 0 alone logs and writes. One process (GPU or CPU) needs nothing
of this.

Determinism: the random state is re-seeded at the start of every epoch from (seed, epoch, rank), and the sample
order depends on (seed, epoch) only, so a run resumed from ``last.pt`` continues exactly as if never stopped.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from . import config, metrics
from .augment import augment_faces, augment_mel, mix_batch
from .datasets import ClipDataset, batch_loader, prepare_batch
from .models import build_model, count_parameters, model_inputs

TRAIN_DEFAULTS: dict[str, Any] = {
    "run_name": "default",
    "data_root": None,
    "model_type": "audio",
    "model": "resnet18",
    "pretrained": False,
    "epochs": 10,
    "batch_size": 40,
    "optimizer": "adam",
    "lr": 3.0e-3,
    "weight_decay": 0.0,
    "scheduler": "step",
    "step_size": 4,
    "gamma": 0.85,
    "warmup_epochs": 0,
    "loss": "bce",
    "focal_gamma": 2.0,
    "pos_weight": None,
    "label_smoothing": 0.0,
    "augment": "baseline",
    "mixup_alpha": 0.0,
    "cutmix_alpha": 0.0,
    "mix_prob": 1.0,
    "av_swap_prob": 0.0,
    "image_size": 256,
    "select_metric": "auc",
    "seed": 42,
    "device": "auto",
    "amp": "auto",
    "channels_last": True,
    "compile": False,
    "deterministic": False,
    "num_workers": 0,
    "drop_last": False,
    "find_unused_parameters": False,
    "dist_timeout_min": 180,
    "max_train_clips": None,
    "resume": True,
    "progress": True,
}


# ----------------------------------------------------------------------------------------------------------------
# small pieces


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A seed for one epoch of one rank: independent streams, reproducible from the three numbers alone."""
    return int(np.random.SeedSequence([int(seed) % 2**63, int(epoch), int(rank)]).generate_state(1)[0])


def resolve_device(device: str = "auto") -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 in hardware (AVX512-BF16 or AMX: Zen 4 and newer, Xeon Cooper Lake /
    Sapphire Rapids and newer). Elsewhere oneDNN only emulates bf16, which is no faster than float32."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"}) and torch.backends.mkldnn.is_available()
    except OSError:
        pass
    return False


def amp_dtype(amp: Any, device: torch.device) -> torch.dtype | None:
    """Mixed precision for ``amp`` on ``device``.

    ``auto``: bf16 where the GPU has it natively (Ampere and newer), fp16 (with a grad scaler) on older GPUs such
    as the T4; on the CPU bf16 where it runs in hardware (``cpu_has_native_bf16``: 2.2x faster resnet18 steps
    than float32 on this project's Zen 4 cores, see the README), else off. ``bf16`` / ``fp16`` / ``false`` force
    a choice (fp16 only on GPUs). Logit layers stay float32 either way (``models.ScoreLinear``).
    """
    if amp in (False, "false", "off", "none", None):
        return None
    if device.type == "cpu":
        if amp in ("bf16", "bfloat16") or (amp in ("auto", True, "true") and cpu_has_native_bf16()):
            return torch.bfloat16
        return None
    if device.type != "cuda":
        return None
    if amp in ("bf16", "bfloat16"):
        return torch.bfloat16
    if amp in ("fp16", "float16"):
        return torch.float16
    # is_bf16_supported() also says yes where bf16 is only emulated (T4), which is slower than fp16
    return torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else torch.float16


def configure_backends(device: torch.device, deterministic: bool) -> None:
    """Fast kernels by default (cuDNN autotuning, TF32 matmuls); ``deterministic`` trades them for repeatability."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by deterministic cuBLAS
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: autotuning pays after the first batches
        torch.set_float32_matmul_precision("high")


def focal_loss(logit: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
               pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Binary focal loss on logits (soft targets allowed): BCE scaled by (1 - p_t)^gamma."""
    bce = F.binary_cross_entropy_with_logits(logit, target, reduction="none", pos_weight=pos_weight)
    p = torch.sigmoid(logit)
    p_t = p * target + (1 - p) * (1 - target)
    return ((1 - p_t).clamp(min=0) ** gamma * bce).mean()


def classification_loss(logit: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any]) -> torch.Tensor:
    smoothing = float(params.get("label_smoothing") or 0.0)
    if smoothing:
        target = target * (1 - smoothing) + 0.5 * smoothing
    pw = params.get("pos_weight")
    pos_weight = torch.tensor(float(pw), device=logit.device) if pw not in (None, "") else None
    logit = logit.float()
    if params.get("loss", "bce") == "focal":
        return focal_loss(logit, target, float(params.get("focal_gamma", 2.0)), pos_weight)
    if params.get("loss", "bce") not in ("bce", "ce"):
        raise ValueError(f"unknown loss {params.get('loss')!r}; use bce or focal")
    return F.binary_cross_entropy_with_logits(logit, target, pos_weight=pos_weight)


def total_loss(out: Mapping[str, Any], target: torch.Tensor, params: Mapping[str, Any],
               branch_targets: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Classification loss + ``branch_loss`` x each branch's loss + the model's ``aux_loss``.

    ``branch_targets`` (from ``av_swap_prob``): a branch is scored against its own input's truth, since an
    audio-visual swap makes the pair fake while its audio and its faces may each be real.
    """
    loss = classification_loss(out["logit"], target, params)
    explicit = set(out.get("explicit_branches") or ())  # branches trained only where a target is given
    for name, logit in (out.get("branch_logits") or {}).items():
        t = (branch_targets or {}).get(name, None if name in explicit else target)
        valid = torch.isfinite(t) if t is not None else None  # NaN: no target for that item
        if valid is not None and valid.any():
            loss = loss + float(params.get("branch_loss", 0.3)) * classification_loss(
                logit[valid], t[valid].to(logit.dtype), params)
    if out.get("aux_loss") is not None:
        loss = loss + out["aux_loss"]
    return loss


def build_optimizer(model: nn.Module, params: Mapping[str, Any]) -> torch.optim.Optimizer:
    name, lr, wd = params.get("optimizer", "adam"), float(params["lr"]), float(params.get("weight_decay") or 0)
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, weight_decay=wd, momentum=0.9, nesterov=True)
    raise ValueError(f"unknown optimizer {name!r}; use adam, adamw or sgd")


def build_scheduler(opt: torch.optim.Optimizer, params: Mapping[str, Any]) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch. ``step``: StepLR(step_size, gamma) like the baseline; ``cosine``: cosine to zero
    after ``warmup_epochs`` of linear warm-up; ``none``: constant."""
    name, epochs = params.get("scheduler", "step"), int(params["epochs"])
    warm = int(params.get("warmup_epochs") or 0)
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=int(params["step_size"]), gamma=float(params["gamma"]))
    if name == "cosine":
        def factor(e: int) -> float:
            if e < warm:
                return (e + 1) / (warm + 1)
            return 0.5 * (1 + math.cos(math.pi * (e - warm) / max(1, epochs - warm)))
        return torch.optim.lr_scheduler.LambdaLR(opt, factor)
    if name == "none":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)
    raise ValueError(f"unknown scheduler {name!r}; use step, cosine or none")


def atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def rng_state() -> dict:
    # only this process's GPU: get_rng_state_all() would open a CUDA context on every GPU from every rank
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None}


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if isinstance(cuda, torch.Tensor) and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda)


def num_workers(value: Any, world: int = 1) -> int:
    """``num_workers`` parameter -> a count; ``auto``: this process's share of the CPUs less one, at most 8."""
    if value == "auto":
        return max(0, min(8, (os.cpu_count() or 1) // max(1, world) - 1))
    return int(value or 0)


# ----------------------------------------------------------------------------------------------------------------
# distributed helpers (no-ops in a single process)


def dist_info() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment; (0, 0, 1) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def is_main() -> bool:
    return dist_info()[0] == 0


def init_distributed(device: torch.device, timeout_min: float = 180) -> bool:
    """Joins torchrun's process group when launched by it (NCCL for GPUs, gloo for the CPU); True if this call
    made it. The long timeout covers rank 0 extracting features while the other ranks wait at a barrier."""
    _, local_rank, world = dist_info()
    if world <= 1 or torch.distributed.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                         timeout=datetime.timedelta(minutes=float(timeout_min)))
    return True


def _barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


def gather_predictions(idx: np.ndarray, scores: np.ndarray, world: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Every rank's (indices, scores) joined and sorted by index: the same arrays a single process would make."""
    if world > 1:
        parts: list[Any] = [None] * world
        torch.distributed.all_gather_object(parts, (np.asarray(idx), np.asarray(scores)))
        idx = np.concatenate([p[0] for p in parts])
        scores = np.concatenate([p[1] for p in parts])
    order = np.argsort(idx, kind="stable")
    return np.asarray(idx)[order], np.asarray(scores)[order]


# ----------------------------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def predict_loader(model: nn.Module, loader: DataLoader, device: torch.device, amp: torch.dtype | None = None,
                   channels_last: bool = False, tta: int = 1, progress: bool = False,
                   desc: str = "predict") -> tuple[np.ndarray, np.ndarray]:
    """Fake probabilities for every item of ``loader`` -> (indices, scores). ``tta`` > 1 averages in probability
    space over the plain input and its time-reversed / flipped variants."""
    from tqdm.auto import tqdm

    model.eval()
    idx_all, score_all = [], []
    ctx = torch.autocast(device.type, dtype=amp) if amp is not None else nullcontext()
    for batch in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
        b = prepare_batch(batch, device, channels_last)
        probs = []
        for k in range(max(1, int(tta))):
            view = dict(b)
            if k % 2 == 1 and "mel" in view:
                view["mel"] = view["mel"].flip(3)
            if k % 2 == 1 and "faces" in view:
                view["faces"] = view["faces"].flip(-1)
            if k >= 2 and "mel" in view:
                view["mel"] = torch.roll(view["mel"], shifts=view["mel"].shape[-1] * k // (2 * tta), dims=3)
            with ctx:
                probs.append(torch.sigmoid(model(view)["logit"].float()))
        score_all.append(torch.stack(probs).mean(0).cpu().numpy())
        idx_all.append(np.asarray(batch["index"]))
    if not idx_all:
        return np.zeros(0, int), np.zeros(0, np.float32)
    return np.concatenate(idx_all), np.concatenate(score_all)


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, amp: torch.dtype | None = None,
             channels_last: bool = False, world: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Scores of a (sharded) validation loader, gathered from every rank and sorted by index."""
    idx, scores = predict_loader(model, loader, device, amp, channels_last)
    return gather_predictions(idx, scores, world)


# ----------------------------------------------------------------------------------------------------------------
# the loop


def make_loader(ds: ClipDataset, params: Mapping[str, Any], device: torch.device, train: bool, rank: int = 0,
                world: int = 1) -> DataLoader:
    """The loader ``fit`` uses: whole batches from the cache; train shuffled and padded per rank, val sharded."""
    bs = int(params["batch_size"]) if train else max(int(params["batch_size"]), 64)
    return batch_loader(ds, bs, shuffle=train, seed=int(params["seed"]), rank=rank, world=world,
                        num_workers=num_workers(params.get("num_workers", 0), world),
                        pin_memory=device.type == "cuda", drop_last=train and bool(params.get("drop_last")),
                        pad=train)


def timed(iterable: Iterable, clock: dict) -> Iterator:
    """Yields from ``iterable``, adding the seconds spent waiting for each item to ``clock["wait"]``."""
    it = iter(iterable)
    while True:
        t = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            return
        clock["wait"] += time.perf_counter() - t
        yield item


def train_step(model: nn.Module, batch: Mapping[str, torch.Tensor], opt: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, params: Mapping[str, Any], device: torch.device,
               amp: torch.dtype | None, channels_last: bool, mix_gen: torch.Generator | None = None,
               augment: bool = True, time_aligned: bool = False) -> tuple[torch.Tensor, int]:
    """One optimisation step on a loader batch -> (loss, detached, still on the device; batch size)."""
    b = prepare_batch(batch, device, channels_last)
    if augment:
        if "mel" in b and not time_aligned:
            # a model comparing sound and lips over time needs the mel image unshifted and unflipped
            b["mel"] = augment_mel(b["mel"], params["augment"])
        if "faces" in b:
            b["faces"] = augment_faces(b["faces"], params["augment"])
        unmixed = b["target"]
        b = mix_batch(b, float(params["mixup_alpha"] or 0), float(params["cutmix_alpha"] or 0),
                      float(params["mix_prob"]), generator=mix_gen)
        if b["target"] is not unmixed:  # per-branch targets do not follow a MixUp / CutMix partner
            b = {k: v for k, v in b.items() if k not in ("target_audio", "target_visual", "target_sync")}
    if channels_last and "mel" in b:
        b["mel"] = b["mel"].contiguous(memory_format=torch.channels_last)  # no-op unless augmentation changed it
    with torch.autocast(device.type, dtype=amp) if amp is not None else nullcontext():
        out = model(b)
    loss = total_loss(out, b["target"], params, {k[7:]: b[k] for k in ("target_audio", "target_visual", "target_sync")
                                                 if k in b})
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    return loss.detach(), int(b["target"].shape[0])


def fit(params: Mapping[str, Any], run: config.Run | None = None, train_ds: ClipDataset | None = None,
        val_ds: ClipDataset | None = None) -> dict:
    """Train a model as ``params`` describe; returns the metrics of the best epoch on validation.

    Datasets are built from the feature cache when not given (``datasets.clip_datasets``); under DDP rank 0
    builds (extracts) them first while the other ranks wait, then they read the finished cache.
    """
    from tqdm.auto import tqdm

    p = {**TRAIN_DEFAULTS, **dict(params)}
    device = resolve_device(p["device"])
    own_group = init_distributed(device, float(p.get("dist_timeout_min") or 180))
    rank, local_rank, world = dist_info()
    if run is None:
        run = config.Run(name=p["run_name"], dir=config.run_dir(p["run_name"]), params=dict(p), notebook="03_train")
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)  # one process per GPU
        torch.cuda.set_device(device)
    configure_backends(device, bool(p.get("deterministic")))
    seed = int(p["seed"])
    seed_everything(seed)
    progress = bool(p.get("progress", True)) and rank == 0

    model = build_model(p)  # same seed on every rank: identical initial weights (DDP broadcasts rank 0's anyway)
    inputs = model_inputs(model)
    time_aligned = bool(getattr(model, "time_aligned", False))
    if train_ds is None or val_ds is None:
        from .datasets import clip_datasets

        if rank != 0:
            _barrier(world)  # wait for rank 0 to fill the feature cache, then read it
        train_ds, val_ds = clip_datasets(p, inputs, progress=progress)
        if rank == 0:
            _barrier(world)
    n_params = count_parameters(model)
    model.to(device)
    # channels-last helps convolutions on GPUs and on the CPU too (oneDNN: 1.1-2x for resnet18 on a 2-core CPU)
    channels_last = bool(p.get("channels_last"))
    if channels_last:
        model.to(memory_format=torch.channels_last)
    amp = amp_dtype(p.get("amp"), device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    opt = build_optimizer(model, p)
    sched = build_scheduler(opt, p)

    ckpt_dir = run.dir / "checkpoints"
    last_path, best_path = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    start_epoch, best_score, history = 0, -math.inf, []
    if p.get("resume") and last_path.is_file():
        state = torch.load(last_path, map_location="cpu", weights_only=False)
        if state.get("params_key") == config.params_hash(_train_key(p)):
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            start_epoch, best_score, history = state["epoch"] + 1, state["best_score"], state["history"]
            set_rng_state(state["rng"])
            if progress:
                print(f"resuming {run.name} at epoch {start_epoch + 1} (best {p['select_metric']} {best_score:.4f})")
        elif rank == 0:
            print(f"{last_path} was written with other parameters; starting from scratch")

    train_model: nn.Module = model
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=bool(p.get("find_unused_parameters")))
    if p.get("compile"):
        mode = p["compile"] if isinstance(p["compile"], str) and p["compile"] not in ("true", "True") else None
        train_model = torch.compile(train_model, mode=mode)

    train_loader = make_loader(train_ds, p, device, train=True, rank=rank, world=world)
    val_loader = make_loader(val_ds, p, device, train=False, rank=rank, world=world)
    for epoch in range(start_epoch, int(p["epochs"])):
        # a fresh, reproducible random state per epoch and rank: resuming needs no RNG history
        seed_everything(epoch_seed(seed, epoch, rank))
        mix_gen = torch.Generator().manual_seed(epoch_seed(seed + 1, epoch, rank))
        train_ds.set_epoch(epoch)
        train_loader.batch_sampler_.set_epoch(epoch)
        train_model.train()
        t0, clock = time.perf_counter(), {"wait": 0.0}
        loss_sum, steps, seen = torch.zeros((), device=device), 0, 0
        bar = tqdm(timed(train_loader, clock), total=len(train_loader), desc=f"epoch {epoch + 1}/{p['epochs']}",
                   unit="batch", disable=not progress, leave=False)
        for batch in bar:
            loss, n = train_step(train_model, batch, opt, scaler, p, device, amp, channels_last, mix_gen,
                                 time_aligned=time_aligned)
            loss_sum += loss
            steps += 1
            seen += n
            if progress and steps % 20 == 0:  # reading the loss waits for the GPU: only now and then
                bar.set_postfix(loss=f"{float(loss_sum) / steps:.4f}")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_time = time.perf_counter() - t0
        sched.step()
        totals = torch.stack([loss_sum.float(), torch.tensor(float(steps), device=device)])
        if world > 1:
            torch.distributed.all_reduce(totals)
        train_loss = float(totals[0] / totals[1]) if float(totals[1]) else float("nan")
        idx, scores = evaluate(model, val_loader, device, amp, channels_last, world)
        y = val_ds.targets[idx]
        m = metrics.summarize(y, scores)
        # "last" keeps the final epoch: the choice for protocols whose eval set must not pick the checkpoint
        score = float(epoch) if p["select_metric"] == "last" else m.get(p["select_metric"], float("nan"))
        row = {"epoch": epoch + 1, "train_loss": train_loss, "lr": opt.param_groups[0]["lr"],
               "train_time_s": train_time, "images_per_s": seen * world / max(train_time, 1e-9),
               "data_wait_s": clock["wait"], "loader_share": clock["wait"] / max(train_time, 1e-9),
               **{f"val_{k}": v for k, v in m.items()}}
        history.append(row)
        improved = not math.isnan(score) and score > best_score
        if improved:
            best_score = score
        if rank == 0:
            if improved:
                atomic_save({"model": model.state_dict(), "params": dict(p), "epoch": epoch + 1, "metrics": m,
                             "n_params": n_params}, best_path)
            atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                         "scaler": scaler.state_dict(), "epoch": epoch, "best_score": best_score,
                         "history": history, "rng": rng_state(), "params_key": config.params_hash(_train_key(p)),
                         "params": dict(p)}, last_path)
            pd.DataFrame(history).to_csv(run.path("history.csv"), index=False)
            if progress:
                print(f"epoch {epoch + 1}/{p['epochs']}: loss {row['train_loss']:.4f}  val AUC {m['auc']:.4f}  "
                      f"TPR@1e-3 {m['tpr@fpr=1e-3']:.3f}  {row['images_per_s']:.0f} img/s  "
                      f"data wait {100 * row['loader_share']:.0f}%" + ("  *best" if improved else ""))
    _barrier(world)
    if not best_path.is_file():
        # no epoch produced a defined score (e.g. one-class validation): keep the last weights as "best"
        if rank == 0:
            atomic_save({"model": model.state_dict(), "params": dict(p), "epoch": int(p["epochs"]),
                         "metrics": {}, "n_params": n_params}, best_path)
        _barrier(world)
    best = torch.load(best_path, map_location="cpu", weights_only=False)
    model.load_state_dict(best["model"])
    idx, scores = evaluate(model, val_loader, device, amp, channels_last, world)
    final = metrics.summarize(val_ds.targets[idx], scores)
    result = {**{f"val_{k}": v for k, v in final.items()}, "best_epoch": best["epoch"], "n_params": n_params,
              "model_type": p["model_type"], "model": p["model"], "device": str(device), "world_size": world,
              "amp": str(amp).replace("torch.", "") if amp is not None else "off", "resumed_from_epoch": start_epoch,
              "train_time_s": float(sum(h["train_time_s"] for h in history))}
    if rank == 0:
        pd.DataFrame({"video_name": [val_ds.names[i] for i in idx], "target": val_ds.targets[idx],
                      "score": scores}).to_csv(run.path("val_predictions.csv"), index=False)
        existing = config.read_json(run.path("metrics.json")) if run.path("metrics.json").is_file() else {}
        config.write_json(run.path("metrics.json"), {**existing, **result})
    if own_group:
        _barrier(world)  # nobody leaves while rank 0 still writes
        torch.distributed.destroy_process_group()
    return result


def _train_key(p: Mapping[str, Any]) -> dict:
    """The parameters that must match for a checkpoint to be resumed (not progress, workers, resume, device...).

    ``data_root`` is left out too: where the data lives (a relative path, a Kaggle mount) is not how the model
    trains, so a run launched by torchrun with ``--data-root`` resumes in the notebook that found the data itself.
    """
    skip = {"progress", "num_workers", "resume", "device", "run_name", "epochs", "compile", "dist_timeout_min",
            "data_root"}
    return {k: v for k, v in p.items() if k not in skip}


def main(argv: list[str] | None = None) -> dict:
    """``python -m ffdv_utils.train`` / ``torchrun ... -m ffdv_utils.train``: train from parameter files."""
    ap = argparse.ArgumentParser(prog="ffdv_utils.train", description=__doc__.splitlines()[0])
    ap.add_argument("-f", "--file", action="append", default=[], help="parameter YAML (repeatable, later wins)")
    ap.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    ap.add_argument("--data-root", default=None)
    # --run-name: torchrun's own parser rejects "--run" as an ambiguous abbreviation of its --run-path
    ap.add_argument("--run-name", "--run", dest="run", default=None, help="run name (outputs/<run>)")
    args = ap.parse_args(argv)
    overrides = {k: config.parse_value(v) for k, v in args.param}
    if args.data_root:
        overrides["data_root"] = str(Path(args.data_root).resolve())
    if args.run:
        overrides["run_name"] = args.run
    params = config.load_params(args.file, overrides, base=TRAIN_DEFAULTS)
    run = config.start_run(params, "03_train") if is_main() else config.Run(
        name=params["run_name"], dir=config.run_dir(params["run_name"]), params=params)
    return fit(params, run)


if __name__ == "__main__":
    main()
