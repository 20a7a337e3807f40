"""Frozen-backbone embeddings in the feature cache: a pretrained backbone's output on each clip, computed once.

With ``freeze_backbone`` a detector's backbone keeps its ImageNet weights, so what it outputs for a clip never
changes: it is computed once per clip and stored next to the mel images and face crops, and the heads then train on
it in seconds (the CPU path; full fine-tuning stays the GPU path). A folder per source and backbone::

    <cache_root>/emb-<kind>-<hash>/
        params.json            what the hash was taken of: the source feature folder (mel-... / faces-...), the
                               image size, the backbone's class and the sha1 of its weights, its input scaling
        entries/<2 hex>/<name>.npy   float16, (C,) for a mel image, (T, C) for a clip's face crops

The key holds a digest of the backbone's actual weights (not only where they came from), so any change of weights,
file or mapping reads as a new folder, never as a stale entry. Entries are written atomically (``core.files``): a
run killed midway keeps every finished clip. The embedding of a clip is exactly what the frozen backbone computes on
the batch the loader would hand it (``prepare_batch``: the same uint8 -> float path), so a model trained on cached
embeddings scores a raw clip through its backbone with the same numbers (up to float16 rounding; a test checks it).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..core.config import params_hash
from ..core.files import atomic_write
from ..core.paths import cache_dir
from ..core.progress import progress_bar
from .batches import ClipDataset, prepare_batch
from .cache import _entry_file
from .clips import cache_folder

EMBEDDING_KEYS = {"mel": "mel_emb", "faces": "face_emb"}  # batch key of each input's embedding


def weights_digest(module: nn.Module) -> str:
    """sha1 of a module's parameters and buffers (names, shapes and bytes): the identity of its weights."""
    h = hashlib.sha1()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def embedding_key(params: Mapping[str, Any], kind: str, backbone: nn.Module) -> dict[str, Any]:
    """What an embedding folder is keyed by (see the module docstring)."""
    size = int(params["image_size"]) if kind == "mel" else None
    return {"kind": kind, "source": cache_folder(params, kind).name, "image_size": size,
            "backbone": type(backbone).__name__, "weights_sha1": weights_digest(backbone),
            "input_norm": json.dumps(getattr(backbone, "input_norm", None), sort_keys=True, default=str)}


def embedding_folder(params: Mapping[str, Any], kind: str, backbone: nn.Module) -> Path:
    """``<cache>/emb-<kind>-<hash>`` for ``backbone``'s outputs on the ``kind`` features of ``params``."""
    key = embedding_key(params, kind, backbone)
    folder = cache_dir() / f"emb-{kind}-{params_hash(key)}"
    if not (folder / "params.json").is_file():
        atomic_write(folder / "params.json", json.dumps(key, indent=1))
    return folder


def _raw_batch(ds: ClipDataset, kind: str, rows: np.ndarray) -> dict:
    """The uint8 input of ``rows`` as the loader would hand it (no audio swap: the clip's own features)."""
    if kind == "mel":
        return {"mel": torch.from_numpy(np.asarray(ds.mels[rows]))[:, None]}
    faces = np.stack([ds._faces(int(i)) for i in rows])
    return {"faces": torch.from_numpy(faces).permute(0, 1, 4, 2, 3)}


@torch.no_grad()
def _compute(backbone: nn.Module, batch: Mapping[str, torch.Tensor], kind: str, device: torch.device) -> np.ndarray:
    x = prepare_batch(batch, device)[kind]
    if kind == "mel":
        return backbone(x).float().cpu().numpy()
    b, t = x.shape[:2]
    return backbone(x.flatten(0, 1)).view(b, t, -1).float().cpu().numpy()


def _save(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr.astype(np.float16))
    atomic_write(path, buf.getvalue())


def embed_dataset(ds: ClipDataset, kind: str, backbone: nn.Module, folder: Path, device: torch.device | str = "cpu",
                  batch_size: int = 32, progress: bool = True) -> np.ndarray:
    """The embeddings of every clip of ``ds`` (float16, (N, C) or (N, T, C)), computing the missing ones.

    ``backbone`` must be frozen and is run in eval mode; its mode is restored afterwards.
    """
    device = torch.device(device)
    paths = [folder / "entries" / _entry_file(n, ".npy") for n in ds.names]
    todo = np.array([i for i, p in enumerate(paths) if not p.is_file()], dtype=np.int64)
    if len(todo):
        was_training = backbone.training
        backbone.eval()
        step = batch_size if kind == "mel" else max(1, batch_size // 4)
        with progress_bar(total=len(todo), desc=f"embed {kind}", unit="clip", disable=not progress) as bar:
            for start in range(0, len(todo), step):
                rows = todo[start:start + step]
                out = _compute(backbone, _raw_batch(ds, kind, rows), kind, device)
                for i, e in zip(rows, out):
                    _save(paths[i], e)
                bar.update(len(rows))
        backbone.train(was_training)
    if not paths:
        return np.zeros((0,), np.float16)
    return np.stack([np.load(p) for p in paths])


def attach_embeddings(model: nn.Module, params: Mapping[str, Any], datasets: Sequence[ClipDataset],
                      device: torch.device | str = "cpu", progress: bool = True) -> dict[str, Path]:
    """Give each dataset the cached embeddings of ``model``'s frozen backbones (``ds.embeddings``), computing what is
    missing; a dataset of a model without frozen backbones gets none (a shared dataset never keeps stale ones).

    Returns {input kind: embedding folder}.
    """
    frozen = model.frozen_backbones() if hasattr(model, "frozen_backbones") else {}
    folders = {kind: embedding_folder(params, kind, bb) for kind, bb in frozen.items()}
    for ds in datasets:
        ds.embeddings = {EMBEDDING_KEYS[kind]: embed_dataset(ds, kind, frozen[kind], folders[kind], device,
                                                            progress=progress)
                         for kind in frozen}
    return folders
