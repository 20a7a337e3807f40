"""Frozen-backbone embeddings in the feature cache: a pretrained backbone's output on each clip, computed once.

With ``freeze_backbone`` a detector's backbone keeps its ImageNet weights, so what it outputs for a clip never
changes: it is computed once per clip and stored next to the mel images and face crops, and the heads then train on
it in seconds (the CPU path; full fine-tuning stays the GPU path). A folder per source and backbone::

    <cache_root>/emb-<kind>-<hash>/
        params.json            what the hash was taken of: the source feature folder (mel-... / faces-...), the
                               image size, the backbone's class and the sha1 of its weights, its input scaling
        entries/<2 hex>/<name>.npy   float16, (C,) for a mel image, (T, C) for a clip's face crops
        stacks/stack-<hash>.npy      float16 (N, ...): the entries of one list of clips, in its order, written once
                                     and read memory-mapped (``embedding_stack``; the most recent few kept)

The key holds a digest of the backbone's actual weights (not only where they came from), so any change of weights,
file or mapping reads as a new folder, never as a stale entry. Entries are written atomically (``core.files``): a
run killed midway keeps every finished clip. The embedding of a clip is exactly what the frozen backbone computes on
the batch the loader would hand it (``prepare_batch``: the same uint8 -> float path), so a model trained on cached
embeddings scores a raw clip through its backbone with the same numbers (up to float16 rounding; a test checks it).
Pseudo-fakes of real training clips have their own cached embeddings (``PseudoEmbeddings``).

``embed_dataset`` never holds every clip's embedding in memory: the entries are copied into a stack file chunk by
chunk (a few MB at a time, whatever the number of clips) and the stack is returned memory-mapped, so a dataset of
250,000 clips costs its rows as they are read, not 11 GB up front. The stack's name is a digest of the clip names
and of each entry file's identity (inode, size, modification time), so an entry recomputed later (a rewritten file)
never reads from an old stack. The ``STACKS_KEPT`` most recently used stacks of a folder are kept, older ones
removed (each list of clips and each recomputed entry makes a new one).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..core.config import params_hash
from ..core.files import atomic_path, atomic_write
from ..core.paths import cache_dir
from ..core.progress import progress_bar
from .batches import ClipDataset, prepare_batch
from .cache import entry_file
from .clips import cache_folder

EMBEDDING_KEYS = {"mel": "mel_emb", "faces": "face_emb"}  # batch key of each input's embedding
STACK_CHUNK_BYTES = 16 << 20  # what embedding_stack holds in memory at once while writing a stack
STACKS_KEPT = 8  # stacks kept per embedding folder, the most recently used (train, val, a few protocol splits)


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

    ``backbone`` must be frozen and is run in eval mode; its mode is restored afterwards. The result is a read-only
    memory map of the clips' stack (``embedding_stack``), never every row in memory at once.
    """
    device = torch.device(device)
    paths = [folder / "entries" / entry_file(n, ".npy") for n in ds.names]
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
    return embedding_stack(folder, list(ds.names), paths)


def embedding_stack(folder: Path, names: Sequence[str], paths: Sequence[Path],
                    chunk_bytes: int | None = None) -> np.ndarray:
    """The entries ``paths`` (one per name, all present) as one read-only memory-mapped float16 stack (N, ...).

    Written once to ``folder/stacks/stack-<hash>.npy`` (atomically: a killed run leaves no half stack), the hash
    taken of the names and of each entry file's inode, size and modification time, so a recomputed entry makes a
    new stack. The entries are copied in chunks of about ``chunk_bytes`` through ordinary file writes, so memory
    stays flat in N (the pages written go to the page cache, not to this process); reading it back maps the file.

    Args:
        folder: The embedding folder (``embedding_folder``).
        names: Clip names, in the order of the rows.
        paths: Their entry files (``folder/entries/...``).
        chunk_bytes: Rows copied per write, in bytes (default ``STACK_CHUNK_BYTES``).

    Returns:
        Read-only memmap (N, C) or (N, T, C) float16; an empty float16 array when there are no names.
    """
    if not len(paths):
        return np.zeros((0,), np.float16)
    h = hashlib.sha1()
    for name, path in zip(names, paths):
        st = os.stat(path)
        h.update(f"{name}\0{st.st_ino}|{st.st_size}|{st.st_mtime_ns}\n".encode("utf-8"))
    stack = folder / "stacks" / f"stack-{h.hexdigest()[:16]}.npy"
    if stack.is_file():
        try:
            os.utime(stack)  # recently used: kept by the bound below
        except OSError:
            pass
        return np.load(stack, mmap_mode="r")
    first = np.load(paths[0])
    chunk_bytes = STACK_CHUNK_BYTES if chunk_bytes is None else int(chunk_bytes)
    row_shape, rows_per_chunk = first.shape, max(1, chunk_bytes // max(1, first.nbytes))
    with atomic_path(stack, ".tmp.npy") as tmp:
        # the header (and the file's full size) from numpy, then the rows written chunk by chunk after it
        head = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(paths), *row_shape))
        offset = head.offset
        del head
        with open(tmp, "r+b") as fh:
            fh.seek(offset)
            for start in range(0, len(paths), rows_per_chunk):
                part = paths[start:start + rows_per_chunk]
                chunk = np.empty((len(part), *row_shape), np.float16)
                for j, p in enumerate(part):
                    e = np.load(p)
                    if e.shape != row_shape:
                        raise ValueError(f"{p}: embedding of shape {e.shape}, the stack's rows are {row_shape}")
                    chunk[j] = e
                fh.write(chunk.tobytes())
    out = np.load(stack, mmap_mode="r")
    _drop_old_stacks(stack.parent, keep=stack)
    return out


def _drop_old_stacks(stacks: Path, keep: Path) -> None:
    """Removes all but the ``STACKS_KEPT`` most recently used stacks of a folder (never ``keep``): each distinct list
    of clips, and each recomputed entry, makes a new stack, and the superseded ones would otherwise stay forever. A
    process that still maps a removed stack keeps reading it (the file goes when the last mapping closes)."""
    found = []
    for p in stacks.glob("stack-*.npy"):
        try:
            found.append((p.stat().st_mtime_ns, p))
        except OSError:
            continue
    for _, p in sorted(found, reverse=True)[STACKS_KEPT:]:
        if p != keep:
            p.unlink(missing_ok=True)


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


class PseudoEmbeddings:
    """The frozen backbones' embeddings of pseudo-fakes (``ffdv_utils.pseudo``), computed once per variant.

    A pseudo-fake changes a real clip's pictures or sound, so the clip's cached embedding no longer fits it (the
    loader flags the row ``mel_stale`` / ``face_stale``). What a variant looks like depends only on (clip, family,
    variant, ``pseudo_local``) (``PseudoFakes.variant_tag``), so its embedding is cached beside the clip's own:
    ``<embedding folder>/pseudo/<tag>/entries/..npy`` (float16, like every embedding), and later epochs, seeds,
    protocol folds, candidates and runs read it instead of running the backbone again.

    Face crops: only the frames that differ from every frame of the real clip go through the backbone. A frame equal
    to one of the clip's own frames (a spliced-in or frozen frame, the frames outside a partial manipulation's
    segment) takes that frame's cached embedding. The numbers are those the backbone gives on the whole crop
    stack (a test checks it).
    """

    def __init__(self, backbones: Mapping[str, nn.Module], folders: Mapping[str, Path], ds: ClipDataset,
                 device: torch.device | str = "cpu") -> None:
        self.backbones, self.folders, self.ds = dict(backbones), dict(folders), ds
        self.device = torch.device(device)
        self.memory: dict[tuple[str, str, str], np.ndarray] = {}
        self.computed = 0  # variants whose embeddings this object computed (not read back)

    def _path(self, kind: str, tag: str, name: str) -> Path:
        return self.folders[kind] / "pseudo" / tag / "entries" / entry_file(name, ".npy")

    def _fresh_faces(self, jobs: list[tuple[int, np.ndarray]]) -> list[np.ndarray]:
        """(dataset row, pseudo-fake crops (T, S, S, 3) uint8) -> (T, C) float16 per job, new frames computed."""
        own_emb = self.ds.embeddings[EMBEDDING_KEYS["faces"]]
        plans, new_frames = [], []
        for row, crops in jobs:
            own = {bytes(f): k for k, f in enumerate(self.ds._faces(row))}  # frame bytes -> its index in the clip
            plan = []
            for f in crops:
                k = own.get(bytes(f))
                plan.append(("own", k) if k is not None else ("new", len(new_frames)))
                if k is None:
                    new_frames.append(f)
            plans.append(plan)
        fresh = np.zeros((0,), np.float16)
        if new_frames:
            stack = torch.from_numpy(np.stack(new_frames)).permute(0, 3, 1, 2)[None]  # (1, n, 3, S, S)
            was_training = self.backbones["faces"].training
            self.backbones["faces"].eval()
            fresh = _compute(self.backbones["faces"], {"faces": stack}, "faces", self.device)[0].astype(np.float16)
            self.backbones["faces"].train(was_training)
        return [np.stack([own_emb[row][k] if src == "own" else fresh[k] for src, k in plan]).astype(np.float16)
                for (row, _), plan in zip(jobs, plans)]

    def _fresh_mels(self, mels: list[np.ndarray]) -> list[np.ndarray]:
        was_training = self.backbones["mel"].training
        self.backbones["mel"].eval()
        out = _compute(self.backbones["mel"], {"mel": torch.from_numpy(np.stack(mels))[:, None]}, "mel", self.device)
        self.backbones["mel"].train(was_training)
        return list(out.astype(np.float16))

    def fill(self, batch: dict) -> dict:
        """Put each stale row's variant embedding into ``batch`` (``mel_emb`` / ``face_emb``) and clear its flag."""
        families, variants = batch.get("pseudo_family"), batch.get("pseudo_variant")
        if families is None or self.ds.pseudo is None:
            return batch
        index = np.asarray(batch["index"])
        for kind, emb_key, stale_key, raw_key in (("mel", "mel_emb", "mel_stale", "mel"),
                                                  ("faces", "face_emb", "face_stale", "faces")):
            if kind not in self.backbones or stale_key not in batch or not bool(batch[stale_key].any()):
                continue
            rows = batch[stale_key].nonzero().flatten().tolist()
            found: dict[int, np.ndarray] = {}
            todo = []
            for r in rows:
                name = self.ds.names[int(index[r])]
                key = (kind, self.ds.pseudo.variant_tag(families[r], int(variants[r])), name)
                if key not in self.memory and self._path(kind, key[1], name).is_file():
                    self.memory[key] = np.load(self._path(kind, key[1], name))
                if key in self.memory:
                    found[r] = self.memory[key]
                else:
                    todo.append((r, key))
            if todo:
                if kind == "mel":
                    fresh = self._fresh_mels([batch[raw_key][r, 0].numpy() for r, _ in todo])
                else:
                    fresh = self._fresh_faces([(int(index[r]), batch[raw_key][r].permute(0, 2, 3, 1).numpy())
                                               for r, _ in todo])
                for (r, key), e in zip(todo, fresh):
                    _save(self._path(kind, key[1], key[2]), e)
                    self.memory[key] = found[r] = e
                self.computed += len(todo)
            emb = batch[emb_key].clone()
            for r, e in found.items():
                emb[r] = torch.from_numpy(e.astype(np.float32))
            batch = {**batch, emb_key: emb, stale_key: torch.zeros_like(batch[stale_key])}
        return batch
