"""fit(): the training loop, checkpoints every epoch, best-by-validation-AUC model, resume after a crash.

Writes into the run folder: ``checkpoints/last.pt`` (everything needed to resume), ``checkpoints/best.pt``
(model weights + resolved parameters, what prediction loads), ``history.csv``, ``val_predictions.csv`` and
``metrics.json``. All writes go through a temporary file and a rename, so a kill never leaves a torn checkpoint.

Speed: batches are sliced from the memory-mapped feature cache (``batch_loader``), moved to the device
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

import hashlib
import math
import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..core import metrics
from ..core.config import params_hash
from ..core.device import amp_dtype, configure_backends, resolve_device
from ..core.errors import ConfigError
from ..core.files import atomic_path, free_space, is_disk_full, read_json, write_json
from ..core.paths import run_dir
from ..core.progress import progress_bar
from ..core.runs import Run
from ..core.schema import TRAIN_DEFAULTS, TRAINING, with_defaults
from ..features.batches import ClipDataset, batch_loader, clip_datasets, prepare_batch
from ..features.embeddings import PseudoEmbeddings, attach_embeddings
from ..features.extract import DiskFullError
from ..models.registry import build_model, model_inputs, pretrained_record, resolve_model_params
from ..models.rules import count_parameters
from .augment import augment_faces, augment_mel, mix_batch
from .evaluate import evaluate
from .losses import total_loss
from .real_only import clip_statistics, combine, fit_real_only, group_columns
from .runtime import (
    _barrier,
    dist_info,
    epoch_seed,
    init_distributed,
    num_workers,
    rng_state,
    seed_everything,
    set_rng_state,
)


def build_optimizer(model: nn.Module, params: Mapping[str, Any]) -> torch.optim.Optimizer:
    p = with_defaults(params, TRAINING)
    name, lr, wd = p["optimizer"], float(p["lr"]), float(p["weight_decay"])
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
    p = with_defaults(params, TRAINING)
    name, epochs, warm = p["scheduler"], int(p["epochs"]), int(p["warmup_epochs"])
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=int(p["step_size"]), gamma=float(p["gamma"]))
    if name == "cosine":
        def factor(e: int) -> float:
            if e < warm:
                return (e + 1) / (warm + 1)
            return 0.5 * (1 + math.cos(math.pi * (e - warm) / max(1, epochs - warm)))
        return torch.optim.lr_scheduler.LambdaLR(opt, factor)
    if name == "none":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)
    raise ValueError(f"unknown scheduler {name!r}; use step, cosine or none")


# ----------------------------------------------------------------------------------------------------------------
# the loop


def save_checkpoint(obj: Any, path: Path) -> None:
    """``torch.save`` through ``core.files.atomic_path``: a kill never leaves a torn checkpoint, and a full disk is
    said as such (DiskFullError), with the previous checkpoint left as it was."""
    try:
        with atomic_path(path) as tmp:
            torch.save(obj, tmp)
    except (OSError, RuntimeError) as exc:
        if not is_disk_full(exc):
            raise
        raise DiskFullError(f"{path}: the disk is full while saving the checkpoint ({free_space(path)}; "
                            f"{type(exc).__name__}: {str(exc).strip()[:200]}). Nothing torn was left: the previous "
                            f"{path.name}, if any, is as it was. Free some space (or set FFDV_OUTPUTS to a larger "
                            "disk) and run again with the same parameters to resume") from exc


def make_loader(ds: ClipDataset, params: Mapping[str, Any], device: torch.device, train: bool, rank: int = 0,
                world: int = 1) -> DataLoader:
    """The loader ``fit`` uses: whole batches from the cache; train shuffled and padded per rank, val sharded."""
    p = with_defaults(params, TRAINING)
    bs = int(p["batch_size"]) if train else max(int(p["batch_size"]), 64)
    return batch_loader(ds, bs, shuffle=train, seed=int(p["seed"]), rank=rank, world=world,
                        num_workers=num_workers(p["num_workers"], world), pin_memory=device.type == "cuda",
                        drop_last=train and bool(p["drop_last"]), pad=train)


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


def fit(params: Mapping[str, Any], run: Run | None = None, train_ds: ClipDataset | None = None,
        val_ds: ClipDataset | None = None) -> dict:
    """Train a model as ``params`` describe; returns the metrics of the best epoch on validation.

    Datasets are built from the feature cache when not given (``clip_datasets``); under DDP rank 0
    builds (extracts) them first while the other ranks wait, then they read the finished cache.
    """
    p = resolve_model_params(with_defaults(params, TRAIN_DEFAULTS))  # input_norm concrete: saved in checkpoints
    weight = float(p["real_only_weight"] or 0)  # the real-only score's settings fail here, not after the training
    if not 0 <= weight <= 1:
        raise ConfigError(f"real_only_weight must be in [0, 1] (1: the real-only score alone), got {weight}")
    if weight > 0:
        group_columns(p["real_only_groups"])
    weights = pretrained_record(p)  # the ImageNet weights' file and sha256, into checkpoints and metrics.json
    device = resolve_device(p["device"])
    own_group = init_distributed(device, float(p["dist_timeout_min"]))
    rank, local_rank, world = dist_info()
    if run is None:
        run = Run(name=p["run_name"], dir=run_dir(p["run_name"]), params=dict(p), notebook="03_train")
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)  # one process per GPU
        torch.cuda.set_device(device)
    configure_backends(device, bool(p["deterministic"]))
    seed = int(p["seed"])
    seed_everything(seed)
    progress = bool(p["progress"]) and rank == 0

    model = build_model(p)  # same seed on every rank: identical initial weights (DDP broadcasts rank 0's anyway)
    inputs = model_inputs(model)
    time_aligned = bool(getattr(model, "time_aligned", False))
    if train_ds is None or val_ds is None:

        if rank != 0:
            _barrier(world)  # wait for rank 0 to fill the feature cache, then read it
        train_ds, val_ds = clip_datasets(p, inputs, progress=progress)
        if rank == 0:
            _barrier(world)
    n_params = count_parameters(model)
    model.to(device)
    # frozen backbones: their outputs come from the cache (computed once per clip), only the heads train
    folders = attach_embeddings(model, p, [train_ds, val_ds], device, progress=progress)
    # pseudo-fakes of real clips: their embeddings are computed once per variant and cached beside the clips'
    bank = PseudoEmbeddings(model.frozen_backbones(), folders, train_ds, device) if (
        folders and train_ds.pseudo is not None) else None
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
    data = data_identity(p, train_ds, val_ds)
    if p.get("resume") and last_path.is_file():
        state = torch.load(last_path, map_location="cpu", weights_only=False)
        other_data = _other_data(state.get("data"), data)
        if state.get("params_key") == params_hash(_train_key(p)) and other_data:
            if rank == 0:
                print(f"{last_path} was trained on other data ({other_data}); starting from scratch")
        elif state.get("params_key") == params_hash(_train_key(p)):
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
    if start_epoch == 0 and rank == 0:
        best_path.unlink(missing_ok=True)  # a fresh start: an earlier training's best.pt must not stand in for it

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
        t0, clock = time.perf_counter(), {"wait": 0.0, "pseudo_embed": 0.0}
        loss_sum, steps, seen = torch.zeros((), device=device), 0, 0
        bar = progress_bar(timed(train_loader, clock), total=len(train_loader), desc=f"epoch {epoch + 1}/{p['epochs']}",
                   unit="batch", disable=not progress, leave=False)
        for batch in bar:
            if bank is not None:
                t_bank = time.perf_counter()
                batch = bank.fill(batch)
                clock["pseudo_embed"] += time.perf_counter() - t_bank
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
               "pseudo_embed_s": clock["pseudo_embed"],
               **{f"val_{k}": v for k, v in m.items()}}
        history.append(row)
        improved = not math.isnan(score) and score > best_score
        if improved:
            best_score = score
        if rank == 0:
            if improved:
                save_checkpoint({"model": model.state_dict(), "params": dict(p), "epoch": epoch + 1, "metrics": m,
                             "n_params": n_params, **weights}, best_path)
            save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                         "scaler": scaler.state_dict(), "epoch": epoch, "best_score": best_score,
                         "history": history, "rng": rng_state(), "params_key": params_hash(_train_key(p)),
                         "data": data, "params": dict(p), **weights}, last_path)
            pd.DataFrame(history).to_csv(run.path("history.csv"), index=False)
            if progress:
                print(f"epoch {epoch + 1}/{p['epochs']}: loss {row['train_loss']:.4f}  val AUC {m['auc']:.4f}  "
                      f"TPR@1e-3 {m['tpr@fpr=1e-3']:.3f}  {row['images_per_s']:.0f} img/s  "
                      f"data wait {100 * row['loader_share']:.0f}%" + ("  *best" if improved else ""))
    _barrier(world)
    if not best_path.is_file():
        # no epoch produced a defined score (e.g. one-class validation): keep the last weights as "best"
        if rank == 0:
            save_checkpoint({"model": model.state_dict(), "params": dict(p), "epoch": int(p["epochs"]),
                         "metrics": {}, "n_params": n_params, **weights}, best_path)
        _barrier(world)
    best = torch.load(best_path, map_location="cpu", weights_only=False)
    model.load_state_dict(best["model"])
    idx, scores = evaluate(model, val_loader, device, amp, channels_last, world)
    extra: dict[str, Any] = {}
    parts: dict[str, np.ndarray] = {}  # the joined score's two parts, beside it in val_predictions.csv
    if weight > 0:
        model_scores = scores
        scores, ro_scores, extra = _with_real_only(p, train_ds, val_ds, idx, scores, weight, best_path, best, rank,
                                                   run)
        parts = {"model_score": model_scores, "real_only_score": ro_scores}
    final = metrics.summarize(val_ds.targets[idx], scores)
    result = {**{f"val_{k}": v for k, v in final.items()}, "best_epoch": best["epoch"], "n_params": n_params,
              "model_type": p["model_type"], "model": p["model"], "device": str(device), "world_size": world,
              "amp": str(amp).replace("torch.", "") if amp is not None else "off", "resumed_from_epoch": start_epoch,
              "train_time_s": float(sum(h["train_time_s"] for h in history)), **weights, **extra}
    if rank == 0:
        pd.DataFrame({"video_name": [val_ds.names[i] for i in idx], "target": val_ds.targets[idx],
                      "score": scores, **parts}
                     ).to_csv(run.path("val_predictions.csv"), index=False)
        existing = read_json(run.path("metrics.json")) if run.path("metrics.json").is_file() else {}
        write_json(run.path("metrics.json"), {**existing, **result})
    if own_group:
        _barrier(world)  # nobody leaves while rank 0 still writes
        torch.distributed.destroy_process_group()
    return result


def _with_real_only(p: Mapping[str, Any], train_ds: ClipDataset, val_ds: ClipDataset, idx: np.ndarray,
                    scores: np.ndarray, weight: float, best_path: Path, best: dict, rank: int,
                    run: Run) -> tuple[np.ndarray, np.ndarray, dict]:
    """Fit the real-only score on the real training clips, join it to the model's validation scores, and store it
    in ``best.pt`` (the test API combines the same way) and ``real_only.json``. Returns (joined scores, real-only
    scores, metrics)."""
    if train_ds.clips is None or val_ds.clips is None:
        raise ConfigError("real_only_weight needs datasets built by features.batches.clip_datasets (clip paths)")
    ro = fit_real_only(p, train_ds.clips)
    table = clip_statistics(p, val_ds.clips)
    ro_scores = ro.score(table)[idx]
    model_auc = metrics.auc(val_ds.targets[idx], scores)
    if rank == 0:
        save_checkpoint({**best, "real_only": {**ro.state(), "weight": weight}}, best_path)
        ro.save(run.path("real_only.json"))
    return combine(scores, ro_scores, weight), ro_scores, {
        "val_auc_model": model_auc, "val_auc_real_only": metrics.auc(val_ds.targets[idx], ro_scores),
        "real_only_weight": weight, "real_only_n_real": len(ro.fitted_names)}


def _clips_digest(ds: ClipDataset) -> str:
    """SHA-256 of a dataset's clips: names and targets, and each clip's absolute path where known."""
    h = hashlib.sha256()
    paths = [os.path.abspath(x) for x in ds.clips["path"]] if (
        ds.clips is not None and "path" in ds.clips) else [""] * len(ds.names)
    for name, target, path in zip(ds.names, ds.targets.tolist(), paths):
        h.update(f"{name}\t{target}\t{path}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def data_identity(p: Mapping[str, Any], train_ds: ClipDataset, val_ds: ClipDataset) -> dict:
    """What a training was trained on: the data root and a digest of the train and validation clips (names,
    labels, files). Stored in ``last.pt``; a run is resumed only on the same data."""
    root = p.get("data_root")
    return {"data_root": os.path.abspath(str(root)) if root not in (None, "") else None,
            "train": _clips_digest(train_ds), "val": _clips_digest(val_ds),
            "n_train": len(train_ds), "n_val": len(val_ds)}


def _other_data(saved: Mapping[str, Any] | None, now: Mapping[str, Any]) -> str:
    """Why a checkpoint's data differs from the data at hand ('' when it is the same)."""
    if not saved:
        return "the checkpoint does not record its data"
    if saved.get("data_root") != now["data_root"] and saved.get("data_root") and now["data_root"]:
        return f"data root {saved['data_root']}, now {now['data_root']}"
    why = [f"{part} clips: {saved.get('n_' + part)} then, {now['n_' + part]} now, names, labels or files differ"
           for part in ("train", "val") if saved.get(part) != now[part]]
    return "; ".join(why)


def _train_key(p: Mapping[str, Any]) -> dict:
    """The parameters that must match for a checkpoint to be resumed (not progress, workers, resume, device...).

    ``data_root`` is left out too: the data is compared on its own (``data_identity``: the resolved root and the
    clips), so a run launched by torchrun with ``--data-root`` resumes in the notebook that found the data itself,
    while the same run name pointed at other data starts from scratch.
    So are the real-only score's settings: it is fitted after training (``_with_real_only``), so a finished run whose
    weight or groups changed resumes with nothing to train and is joined anew.
    """
    skip = {"progress", "num_workers", "resume", "device", "run_name", "epochs", "compile", "dist_timeout_min",
            "data_root", "real_only_weight", "real_only_groups"}
    return {k: v for k, v in p.items() if k not in skip}
