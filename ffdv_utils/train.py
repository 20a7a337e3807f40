"""fit(): the training loop, checkpoints every epoch, best-by-validation-AUC model, resume after a crash.

Writes into the run folder: ``checkpoints/last.pt`` (everything needed to resume), ``checkpoints/best.pt``
(model weights + resolved parameters, what prediction loads), ``history.csv``, ``val_predictions.csv`` and
``metrics.json``. All writes go through a temporary file and a rename, so a kill never leaves a torn checkpoint.

Launched with ``torchrun --nproc_per_node=N -m ffdv_utils.train -f params/03_train.yaml [-p KEY VALUE]`` it runs
one process per GPU with DistributedDataParallel; rank 0 alone logs and writes.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from . import config, metrics
from .augment import augment_faces, augment_mel, mix_batch
from .datasets import ClipDataset, prepare_batch
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
    "num_workers": 0,
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


def resolve_device(device: str = "auto") -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def amp_dtype(amp: Any, device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU has it, fp16 (with a grad scaler) on older GPUs such as the T4, none on the CPU."""
    if amp in (False, "false", "off", "none", None) or device.type != "cuda":
        return None
    if amp in ("bf16", "bfloat16"):
        return torch.bfloat16
    if amp in ("fp16", "float16"):
        return torch.float16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


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


def total_loss(out: Mapping[str, Any], target: torch.Tensor, params: Mapping[str, Any]) -> torch.Tensor:
    loss = classification_loss(out["logit"], target, params)
    for logit in (out.get("branch_logits") or {}).values():
        loss = loss + float(params.get("branch_loss", 0.3)) * classification_loss(logit, target, params)
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
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------------------------------
# distributed helpers (no-ops in a single process)


def dist_info() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment; (0, 0, 1) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def is_main() -> bool:
    return dist_info()[0] == 0


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
        idx_all.append(batch["index"].numpy())
    if not idx_all:
        return np.zeros(0, int), np.zeros(0, np.float32)
    return np.concatenate(idx_all), np.concatenate(score_all)


# ----------------------------------------------------------------------------------------------------------------
# the loop


def make_loader(ds: ClipDataset, params: Mapping[str, Any], shuffle: bool, device: torch.device,
                sampler: Any = None, seed: int = 0) -> DataLoader:
    nw = params.get("num_workers", 0)
    nw = max(0, (os.cpu_count() or 1) - 1) if nw == "auto" else int(nw or 0)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return DataLoader(ds, batch_size=int(params["batch_size"]), shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=nw, pin_memory=device.type == "cuda", persistent_workers=nw > 0,
                      drop_last=False, generator=gen)


def fit(params: Mapping[str, Any], run: config.Run | None = None, train_ds: ClipDataset | None = None,
        val_ds: ClipDataset | None = None) -> dict:
    """Train a model as ``params`` describe; returns the metrics of the best epoch on validation.

    Datasets are built from the feature cache when not given (``datasets.clip_datasets``).
    """
    from tqdm.auto import tqdm

    p = {**TRAIN_DEFAULTS, **dict(params)}
    rank, local_rank, world = dist_info()
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    if run is None:
        run = config.Run(name=p["run_name"], dir=config.run_dir(p["run_name"]), params=dict(p), notebook="03_train")
    device = resolve_device(p["device"])
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    seed_everything(int(p["seed"]))
    progress = bool(p.get("progress", True)) and rank == 0

    model = build_model(p)
    inputs = model_inputs(model)
    if train_ds is None or val_ds is None:
        from .datasets import clip_datasets

        train_ds, val_ds = clip_datasets(p, inputs, progress=progress)
    n_params = count_parameters(model)
    model.to(device)
    if p.get("channels_last") and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    channels_last = bool(p.get("channels_last")) and device.type == "cuda"
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
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                          else None)
    if p.get("compile"):
        train_model = torch.compile(train_model)

    sampler = None
    if world > 1:
        sampler = torch.utils.data.distributed.DistributedSampler(train_ds, num_replicas=world, rank=rank,
                                                                  shuffle=True, seed=int(p["seed"]))
    train_loader = make_loader(train_ds, p, shuffle=True, device=device, sampler=sampler, seed=int(p["seed"]))
    val_loader = make_loader(val_ds, {**p, "batch_size": max(int(p["batch_size"]), 64)}, shuffle=False,
                             device=device)
    mix_gen = torch.Generator().manual_seed(int(p["seed"]) + 1)
    for epoch in range(start_epoch, int(p["epochs"])):
        t0 = time.time()
        train_ds.set_epoch(epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        train_loader.generator.manual_seed(int(p["seed"]) * 1000 + epoch)
        train_model.train()
        losses, seen = [], 0
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{p['epochs']}", unit="batch", disable=not progress,
                   leave=False)
        for batch in bar:
            b = prepare_batch(batch, device, channels_last)
            if "mel" in b:
                b["mel"] = augment_mel(b["mel"], p["augment"])
            if "faces" in b:
                b["faces"] = augment_faces(b["faces"], p["augment"])
            b = mix_batch(b, float(p["mixup_alpha"] or 0), float(p["cutmix_alpha"] or 0), float(p["mix_prob"]),
                          generator=mix_gen)
            ctx = torch.autocast(device.type, dtype=amp) if amp is not None else nullcontext()
            with ctx:
                out = train_model(b)
            loss = total_loss(out, b["target"], p)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            losses.append(float(loss.detach()))
            seen += len(b["target"])
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        sched.step()
        train_time = time.time() - t0
        # every rank scores the whole validation set: simple, and identical to the single-process result
        idx, scores = predict_loader(model, val_loader, device, amp, channels_last)
        y = val_ds.targets[idx]
        m = metrics.summarize(y, scores)
        score = m.get(p["select_metric"], float("nan"))
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else float("nan"),
               "lr": opt.param_groups[0]["lr"], "train_time_s": train_time,
               "images_per_s": seen * world / max(train_time, 1e-9), **{f"val_{k}": v for k, v in m.items()}}
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
                      f"TPR@1e-3 {m['tpr@fpr=1e-3']:.3f}  {row['images_per_s']:.0f} img/s"
                      + ("  *best" if improved else ""))
    if world > 1:
        torch.distributed.barrier()
    if not best_path.is_file():
        # no epoch produced a defined score (e.g. one-class validation): keep the last weights as "best"
        if rank == 0:
            atomic_save({"model": model.state_dict(), "params": dict(p), "epoch": int(p["epochs"]),
                         "metrics": {}, "n_params": n_params}, best_path)
        if world > 1:
            torch.distributed.barrier()
    best = torch.load(best_path, map_location="cpu", weights_only=False)
    model.load_state_dict(best["model"])
    idx, scores = predict_loader(model, val_loader, device, amp, channels_last)
    final = metrics.summarize(val_ds.targets[idx], scores)
    result = {**{f"val_{k}": v for k, v in final.items()}, "best_epoch": best["epoch"], "n_params": n_params,
              "model_type": p["model_type"], "model": p["model"], "device": str(device), "world_size": world,
              "train_time_s": float(sum(h["train_time_s"] for h in history))}
    if rank == 0:
        pd.DataFrame({"video_name": [val_ds.names[i] for i in idx], "target": val_ds.targets[idx],
                      "score": scores}).to_csv(run.path("val_predictions.csv"), index=False)
        existing = config.read_json(run.path("metrics.json")) if run.path("metrics.json").is_file() else {}
        config.write_json(run.path("metrics.json"), {**existing, **result})
    if world > 1:
        torch.distributed.destroy_process_group()
    return result


def _train_key(p: Mapping[str, Any]) -> dict:
    """The parameters that must match for a checkpoint to be resumed (not progress, workers, resume, device)."""
    skip = {"progress", "num_workers", "resume", "device", "run_name", "epochs"}
    return {k: v for k, v in p.items() if k not in skip}


def main(argv: list[str] | None = None) -> dict:
    """``python -m ffdv_utils.train`` / ``torchrun ... -m ffdv_utils.train``: train from parameter files."""
    ap = argparse.ArgumentParser(prog="ffdv_utils.train", description=__doc__.splitlines()[0])
    ap.add_argument("-f", "--file", action="append", default=[], help="parameter YAML (repeatable, later wins)")
    ap.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--run", default=None, help="run name (outputs/<run>)")
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
