"""fit(): the training loop, checkpoints every epoch, best-by-validation-AUC model, resume after a crash.

Steps: ``set_up`` (parameters, processes, the detector, data, optimiser, resume), ``train_epoch``, ``end_epoch``
(evaluate, checkpoints) and ``finish`` (the best epoch, the detector's joined parts, the predictions).

Writes into the run folder: ``checkpoints/last.pt`` (everything needed to resume), ``checkpoints/best.pt``
(the detector: ``models.checkpoint.Checkpoint``, what prediction loads), ``history.csv``, ``val_predictions.csv`` and
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
from dataclasses import dataclass, field, replace
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
from ..core.params import RunParams, TrainingParams
from ..core.paths import run_dir
from ..core.progress import progress_bar
from ..core.runs import Run, supersede
from ..core.schema import TRAIN_DEFAULTS, with_defaults
from ..detector import NETWORK, SCORERS, Detector, scorers_from_params
from ..features.batches import ClipDataset, batch_loader, clip_datasets, prepare_batch
from ..features.extract import DiskFullError
from ..features.embeddings import PseudoEmbeddings, attach_embeddings
from ..models.checkpoint import Checkpoint
from ..models.registry import build_model, model_inputs, pretrained_record, resolve_model_params
from ..models.rules import count_parameters
from .augment import augment_faces, augment_mel, mix_batch
from .evaluate import evaluate
from .losses import total_loss
from .runtime import (
    barrier,
    dist_info,
    epoch_seed,
    init_distributed,
    num_workers,
    rng_state,
    seed_everything,
    set_rng_state,
)


def build_optimizer(model: nn.Module, params: TrainingParams | Mapping[str, Any]) -> torch.optim.Optimizer:
    """``optimizer`` (adam, adamw, sgd) with ``lr`` and ``weight_decay`` over the model's parameters."""
    t = TrainingParams.of(params)
    name, lr, wd = t.optimizer, t.lr, t.weight_decay
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, weight_decay=wd, momentum=0.9, nesterov=True)
    raise ValueError(f"unknown optimizer {name!r}; use adam, adamw or sgd")


def build_scheduler(opt: torch.optim.Optimizer,
                    params: TrainingParams | Mapping[str, Any]) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch. ``step``: StepLR(step_size, gamma) like the baseline; ``cosine``: cosine to zero
    after ``warmup_epochs`` of linear warm-up; ``none``: constant."""
    t = TrainingParams.of(params)
    name, epochs, warm = t.scheduler, t.epochs, t.warmup_epochs
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=t.step_size, gamma=t.gamma)
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


def make_loader(ds: ClipDataset, params: TrainingParams | Mapping[str, Any], device: torch.device, train: bool,
                rank: int = 0, world: int = 1) -> DataLoader:
    """The loader ``fit`` uses: whole batches from the cache; train shuffled and padded per rank, val sharded."""
    t = TrainingParams.of(params)
    bs = t.batch_size if train else max(t.batch_size, 64)
    return batch_loader(ds, bs, shuffle=train, seed=t.seed, rank=rank, world=world,
                        num_workers=num_workers(t.num_workers, world), pin_memory=device.type == "cuda",
                        drop_last=train and bool(t.drop_last), pad=train)


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


class FitResult(dict):
    """What ``fit`` returns: the metrics of the best epoch on validation (what ``metrics.json`` gets), and in
    ``predictions`` the validation scores (``val_predictions.csv``: video_name, target, score and, for a detector
    with parts, ``model_score`` and each part's ``<kind>_score``)."""

    def __init__(self, metrics: Mapping[str, Any], predictions: pd.DataFrame):
        super().__init__(metrics)
        self.predictions = predictions


@dataclass
class Session:
    """One ``fit`` call's state, made by ``set_up`` and advanced by ``train_epoch`` / ``end_epoch``."""

    p: dict[str, Any]  # the flat parameters, as saved in checkpoints and read by the loss and augmentation
    groups: RunParams  # the same, read once into typed groups
    run: Run
    detector: Detector
    train_model: nn.Module  # the network, wrapped by DDP and/or torch.compile when asked
    train_ds: ClipDataset
    val_ds: ClipDataset
    train_loader: DataLoader
    val_loader: DataLoader
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    device: torch.device
    amp: torch.dtype | None
    bank: PseudoEmbeddings | None
    record: Checkpoint  # what every checkpoint of the run carries (parameters, size, initial weights)
    rank: int = 0
    world: int = 1
    own_group: bool = False
    start_epoch: int = 0
    best_score: float = -math.inf
    history: list[dict] = field(default_factory=list)
    data: dict = field(default_factory=dict)  # what the run trains on (``data_identity``), stored in ``last.pt``

    @property
    def model(self) -> nn.Module:
        return self.detector.network

    @property
    def t(self) -> TrainingParams:
        return self.groups.training

    @property
    def progress(self) -> bool:
        return bool(self.t.progress) and self.rank == 0

    @property
    def channels_last(self) -> bool:
        return bool(self.t.channels_last)

    def path(self, name: str) -> Path:
        return self.run.dir / "checkpoints" / name


def fit(params: Mapping[str, Any], run: Run | None = None, train_ds: ClipDataset | None = None,
        val_ds: ClipDataset | None = None) -> FitResult:
    """Train a detector as ``params`` describe; returns the metrics of the best epoch on validation, with the
    validation predictions (``FitResult.predictions``).

    Datasets are built from the feature cache when not given (``clip_datasets``); under DDP rank 0
    builds (extracts) them first while the other ranks wait, then they read the finished cache.
    """
    s = set_up(params, run, train_ds, val_ds)
    for epoch in range(s.start_epoch, s.t.epochs):
        row = train_epoch(s, epoch)
        end_epoch(s, epoch, row)
    return finish(s)


def set_up(params: Mapping[str, Any], run: Run | None, train_ds: ClipDataset | None,
           val_ds: ClipDataset | None) -> Session:
    """Parameters resolved and checked, device and processes, the detector, datasets, embeddings, optimiser, loaders,
    and the state of a resumed run."""
    p = resolve_model_params(with_defaults(params, TRAIN_DEFAULTS))  # input_norm concrete: saved in checkpoints
    groups = RunParams.of(p)
    t = groups.training
    parts = scorers_from_params(p)  # the joined scores' settings fail here, not after the training
    weights = pretrained_record(p)  # the ImageNet weights' file and sha256, into checkpoints and metrics.json
    device = resolve_device(t.device)
    own_group = init_distributed(device, t.dist_timeout_min)
    rank, local_rank, world = dist_info()
    if run is None:
        run = Run(name=p["run_name"], dir=run_dir(p["run_name"]), params=dict(p), notebook="03_train")
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)  # one process per GPU
        torch.cuda.set_device(device)
    configure_backends(device, bool(t.deterministic))
    seed_everything(t.seed)
    progress = bool(t.progress) and rank == 0
    # same seed on every rank: identical initial weights (DDP broadcasts rank 0's anyway)
    detector = Detector(build_model(p), dict(p), parts)
    model = detector.network
    if train_ds is None or val_ds is None:
        if rank != 0:
            barrier(world)  # wait for rank 0 to fill the feature cache, then read it
        train_ds, val_ds = clip_datasets(p, model_inputs(model), progress=progress)
        if rank == 0:
            barrier(world)
    record = Checkpoint(network={}, params=dict(p), n_params=count_parameters(model), pretrained=weights)
    model.to(device)
    # frozen backbones: their outputs come from the cache (computed once per clip), only the heads train
    folders = attach_embeddings(model, p, [train_ds, val_ds], device, progress=progress)
    # pseudo-fakes of real clips: their embeddings are computed once per variant and cached beside the clips'
    bank = PseudoEmbeddings(model.frozen_backbones(), folders, train_ds, device) if (
        folders and train_ds.pseudo is not None) else None
    # channels-last helps convolutions on GPUs and on the CPU too (oneDNN: 1.1-2x for resnet18 on a 2-core CPU)
    if t.channels_last:
        model.to(memory_format=torch.channels_last)
    amp = amp_dtype(t.amp, device)
    opt = build_optimizer(model, t)
    s = Session(p, groups, run, detector, model, train_ds, val_ds,
                make_loader(train_ds, t, device, train=True, rank=rank, world=world),
                make_loader(val_ds, t, device, train=False, rank=rank, world=world), opt, build_scheduler(opt, t),
                torch.amp.GradScaler("cuda", enabled=amp == torch.float16), device, amp, bank, record, rank, world,
                own_group)
    s.data = data_identity(p, train_ds, val_ds)
    resume(s)
    s.train_model = wrap_for_training(model, t, device, world)
    return s


def resume(s: Session) -> None:
    """Continue from ``last.pt`` when ``resume`` is on and it was written with the same training parameters on the
    same data (``data_identity``); a fresh start moves an earlier training's results aside (``core.runs.supersede``)."""
    last = s.path("last.pt")
    if s.t.resume and last.is_file():
        state = torch.load(last, map_location="cpu", weights_only=False)
        other_data = other_data_reason(state.get("data"), s.data)
        if state.get("params_key") != params_hash(_train_key(s.p)):
            why = "last.pt was written with other parameters"
        elif other_data:
            why = f"last.pt was trained on other data ({other_data})"
        else:
            s.model.load_state_dict(state["model"])
            s.opt.load_state_dict(state["optimizer"])
            s.sched.load_state_dict(state["scheduler"])
            s.scaler.load_state_dict(state["scaler"])
            s.start_epoch, s.best_score, s.history = state["epoch"] + 1, state["best_score"], state["history"]
            set_rng_state(state["rng"])
            if s.progress:
                print(f"resuming {s.run.name} at epoch {s.start_epoch + 1} "
                      f"(best {s.t.select_metric} {s.best_score:.4f})")
            return
        if s.rank == 0:
            print(f"{last}: {why.split(' ', 1)[1]}; starting from scratch")
    else:
        why = "a training from scratch" if last.is_file() else "no last.pt to continue"
    if s.rank == 0:  # a fresh start: an earlier training's results must not stand beside this one's parameters
        supersede(s.run.dir, f"{why}; results of an earlier training")
        s.path("best.pt").unlink(missing_ok=True)


def wrap_for_training(model: nn.Module, t: TrainingParams, device: torch.device, world: int) -> nn.Module:
    """The network as the epochs run it: DistributedDataParallel over several processes, ``torch.compile``d."""
    out = model
    if world > 1:
        out = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=bool(t.find_unused_parameters))
    if t.compile:
        mode = t.compile if isinstance(t.compile, str) and t.compile not in ("true", "True") else None
        out = torch.compile(out, mode=mode)
    return out


def train_epoch(s: Session, epoch: int) -> dict[str, Any]:
    """One pass over the training clips; returns the epoch's row of ``history.csv`` so far (loss, speed)."""
    p, t, device = s.p, s.t, s.device
    # a fresh, reproducible random state per epoch and rank: resuming needs no RNG history
    seed = t.seed
    seed_everything(epoch_seed(seed, epoch, s.rank))
    mix_gen = torch.Generator().manual_seed(epoch_seed(seed + 1, epoch, s.rank))
    s.train_ds.set_epoch(epoch)
    s.train_loader.batch_sampler_.set_epoch(epoch)
    s.train_model.train()
    time_aligned = bool(getattr(s.model, "time_aligned", False))
    t0, clock = time.perf_counter(), {"wait": 0.0, "pseudo_embed": 0.0}
    loss_sum, steps, seen = torch.zeros((), device=device), 0, 0
    bar = progress_bar(timed(s.train_loader, clock), total=len(s.train_loader), desc=f"epoch {epoch + 1}/{t.epochs}",
                       unit="batch", disable=not s.progress, leave=False)
    for batch in bar:
        if s.bank is not None:
            t_bank = time.perf_counter()
            batch = s.bank.fill(batch)
            clock["pseudo_embed"] += time.perf_counter() - t_bank
        loss, n = train_step(s.train_model, batch, s.opt, s.scaler, p, device, s.amp, s.channels_last, mix_gen,
                             time_aligned=time_aligned)
        loss_sum += loss
        steps += 1
        seen += n
        if s.progress and steps % 20 == 0:  # reading the loss waits for the GPU: only now and then
            bar.set_postfix(loss=f"{float(loss_sum) / steps:.4f}")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_time = time.perf_counter() - t0
    s.sched.step()
    totals = torch.stack([loss_sum.float(), torch.tensor(float(steps), device=device)])
    if s.world > 1:
        torch.distributed.all_reduce(totals)
    return {"epoch": epoch + 1, "train_loss": float(totals[0] / totals[1]) if float(totals[1]) else float("nan"),
            "lr": s.opt.param_groups[0]["lr"], "train_time_s": train_time,
            "images_per_s": seen * s.world / max(train_time, 1e-9), "data_wait_s": clock["wait"],
            "loader_share": clock["wait"] / max(train_time, 1e-9), "pseudo_embed_s": clock["pseudo_embed"]}


def end_epoch(s: Session, epoch: int, row: dict[str, Any]) -> None:
    """Evaluate on validation, add the epoch to the history, write ``best.pt`` (if better) and ``last.pt``."""
    p, t = s.p, s.t
    idx, scores = evaluate(s.model, s.val_loader, s.device, s.amp, s.channels_last, s.world)
    m = metrics.summarize(s.val_ds.targets[idx], scores)
    # "last" keeps the final epoch: the choice for protocols whose eval set must not pick the checkpoint
    score = float(epoch) if t.select_metric == "last" else m.get(t.select_metric, float("nan"))
    row = {**row, **{f"val_{k}": v for k, v in m.items()}}
    s.history.append(row)
    improved = not math.isnan(score) and score > s.best_score
    if improved:
        s.best_score = score
    if s.rank != 0:
        return
    if improved:
        replace(s.record, network=s.model.state_dict(), epoch=epoch + 1, metrics=m).write(s.path("best.pt"))
    save_checkpoint({"model": s.model.state_dict(), "optimizer": s.opt.state_dict(), "scheduler": s.sched.state_dict(),
                     "scaler": s.scaler.state_dict(), "epoch": epoch, "best_score": s.best_score,
                     "history": s.history, "rng": rng_state(), "params_key": params_hash(_train_key(p)),
                     "data": s.data, "params": dict(p), **s.record.pretrained}, s.path("last.pt"))
    pd.DataFrame(s.history).to_csv(s.run.path("history.csv"), index=False)
    if s.progress:
        print(f"epoch {epoch + 1}/{t.epochs}: loss {row['train_loss']:.4f}  val AUC {m['auc']:.4f}  "
              f"TPR@1e-3 {m['tpr@fpr=1e-3']:.3f}  {row['images_per_s']:.0f} img/s  "
              f"data wait {100 * row['loader_share']:.0f}%" + ("  *best" if improved else ""))


def finish(s: Session) -> FitResult:
    """The best epoch's network back, the detector's parts fitted and joined, ``best.pt`` with them,
    ``val_predictions.csv`` and ``metrics.json``."""
    p, world, best_path = s.p, s.world, s.path("best.pt")
    barrier(world)
    if not best_path.is_file():
        # no epoch produced a defined score (e.g. one-class validation): keep the last weights as "best"
        if s.rank == 0:
            replace(s.record, network=s.model.state_dict(), epoch=s.t.epochs).write(best_path)
        barrier(world)
    best = Checkpoint.read(best_path)
    s.model.load_state_dict(best.network)
    idx, scores = evaluate(s.model, s.val_loader, s.device, s.amp, s.channels_last, world)
    columns, extra = {"score": scores}, {}
    if s.detector.parts:
        columns, extra = fit_parts(s, idx, scores, best)
    final = metrics.summarize(s.val_ds.targets[idx], columns["score"])
    result = {**{f"val_{k}": v for k, v in final.items()}, "best_epoch": best.epoch, "n_params": s.record.n_params,
              "model_type": p["model_type"], "model": p["model"], "device": str(s.device), "world_size": world,
              "amp": str(s.amp).replace("torch.", "") if s.amp is not None else "off",
              "resumed_from_epoch": s.start_epoch, "train_time_s": float(sum(h["train_time_s"] for h in s.history)),
              **s.record.pretrained, **extra}
    predictions = pd.DataFrame({"video_name": [s.val_ds.names[i] for i in idx], "target": s.val_ds.targets[idx],
                                **columns})
    if s.rank == 0:
        predictions.to_csv(s.run.path("val_predictions.csv"), index=False)
        existing = read_json(s.run.path("metrics.json")) if s.run.path("metrics.json").is_file() else {}
        write_json(s.run.path("metrics.json"), {**existing, **result})
    if s.own_group:
        barrier(world)  # nobody leaves while rank 0 still writes
        torch.distributed.destroy_process_group()
    return FitResult(result, predictions)


def fit_parts(s: Session, idx: np.ndarray, scores: np.ndarray, best: Checkpoint) -> tuple[dict[str, np.ndarray], dict]:
    """Fit the detector's parts (the real-only score...) on the training clips, join them to the network's
    validation scores, and save the whole detector in ``best.pt`` (the test API joins the same way) with each
    part's run files (``real_only.json``). Returns (prediction columns, metrics)."""
    detector, targets = s.detector, s.val_ds.targets[idx]
    if s.train_ds.clips is None or s.val_ds.clips is None:
        keys = ", ".join(f"{SCORERS[k].weight_key}" for k in detector.weights)
        raise ConfigError(f"{keys} needs datasets built by features.batches.clip_datasets (clip paths)")
    info = detector.fit_parts(s.train_ds.clips)
    found = {k: v[idx] for k, v in detector.part_scores(s.val_ds.clips).items()}
    joined = detector.join(scores, found)
    extra = {"val_auc_model": metrics.auc(targets, scores),
             **{f"val_auc_{k}": metrics.auc(targets, v) for k, v in found.items()},
             **{SCORERS[k].weight_key: w for k, w in detector.weights.items()}, **info}
    if s.rank == 0:
        detector.save(s.path("best.pt"), best)
        for part in detector.parts:
            for name, content in part.scorer.run_files().items():
                write_json(s.run.path(name), content)
    columns = {"score": joined, f"{NETWORK}_score": scores, **{f"{k}_score": v for k, v in found.items()}}
    return columns, extra


def clips_digest(ds: ClipDataset) -> str:
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
            "train": clips_digest(train_ds), "val": clips_digest(val_ds),
            "n_train": len(train_ds), "n_val": len(val_ds)}


def other_data_reason(saved: Mapping[str, Any] | None, now: Mapping[str, Any]) -> str:
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
    So are the joined scores' settings: they are fitted after training (``fit_parts``), so a finished run whose
    weight or groups changed resumes with nothing to train and is joined anew.
    """
    skip = {"progress", "num_workers", "resume", "device", "run_name", "epochs", "compile", "dist_timeout_min",
            "data_root", "real_only_weight", "real_only_groups", "profile_weight", "profile_mel_preset"}
    return {k: v for k, v in p.items() if k not in skip}
