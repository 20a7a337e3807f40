"""Training runtime: seeding and RNG state (exact resume), DataLoader workers, and the DDP helpers (no-ops in one
process).
"""

from __future__ import annotations

import datetime
import os
import random
from typing import Any, Mapping

import numpy as np
import torch

# ----------------------------------------------------------------------------------------------------------------
# small pieces


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A seed for one epoch of one rank: independent streams, reproducible from the three numbers alone."""
    return int(np.random.SeedSequence([int(seed) % 2**63, int(epoch), int(rank)]).generate_state(1)[0])


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


def barrier(world: int) -> None:
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
