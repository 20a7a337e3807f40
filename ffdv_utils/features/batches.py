"""Batches over the feature cache, shared by training and inference: uint8 arrays in, uint8 tensors out,
normalisation on the device.

The loader hands out uint8 (4x smaller than float32 to pin and copy); ``prepare_batch`` converts, normalises
and replicates the grey mel image to 3 channels on the training device, where it is cheap.

Batches are read whole: ``batch_loader`` yields one index list per batch and ``ClipDataset.get_batch`` slices the
memory-mapped cache once per batch (about 10x faster than one item at a time plus collation; docs/training.md).
Workers (``num_workers``) then build whole batches in parallel. This is the one module of ``features`` that
imports torch.
"""

from __future__ import annotations

import mmap
import warnings
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from ..core.schema import FEATURES, RUN, TRAINING, with_defaults
from ..data.labels import load_split
from ..data.splits import read_split
from ..pseudo import PseudoFakes, pseudo_from_params
from .clips import clip_features

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _sync_target(target: float, swapped: bool) -> float:
    """Do sound and lips belong together? Known only for a swap (no) and an untouched real clip (yes); NaN else."""
    return 1.0 if swapped else (0.0 if target < 0.5 else float("nan"))


class ClipDataset(Dataset):
    """One item per clip: any of ``mel`` (1, H, W) uint8, ``faces`` (T, 3, S, S) uint8, plus flags and target.

    Args:
        names: clip names, in the order of ``mels`` rows.
        targets: 0/1 per clip (NaN or -1 for unlabelled test clips).
        mels: (N, H, W) uint8 array (a memory map is fine) or None.
        has_audio: (N,) bool or None.
        faces: object with ``get(name) -> (T, S, S, 3) uint8`` (a FaceStore) or an (N, T, S, S, 3) array, or None.
        av_swap_prob: training only -- with this probability a clip's audio is replaced by another clip's audio
            and the item is labelled fake (the audio-visual mismatch augmentation public teams used).
        seed: seeds the swap draws (combined with the epoch via ``set_epoch``).
        pseudo: training only -- a ``pseudo.PseudoFakes``: real clips turned into pseudo-fakes in the loader.
    """

    def __init__(self, names: Sequence[str], targets: Sequence[float], mels: np.ndarray | None = None,
                 has_audio: Sequence[bool] | None = None, faces: Any = None, av_swap_prob: float = 0.0,
                 seed: int = 0, pseudo: PseudoFakes | None = None):
        self.names = list(names)
        self.targets = np.asarray(targets, dtype=np.float32)
        self.mels = mels
        self.has_audio = np.ones(len(self.names), bool) if has_audio is None else np.asarray(has_audio, bool)
        self.faces = faces
        self.av_swap_prob = float(av_swap_prob)
        self.seed = int(seed)
        self.epoch = 0
        # frozen backbones' outputs per clip ({"mel_emb": (N, C), "face_emb": (N, T, C)}; features.embeddings)
        self.embeddings: dict[str, np.ndarray] = {}
        self.pseudo = pseudo  # training only: pseudo-fakes from real clips (ffdv_utils.pseudo)
        self.clips: pd.DataFrame | None = None  # video_name, path, target of the rows, where known (clip_datasets)
        if mels is not None and len(mels) != len(self.names):
            raise ValueError(f"{len(self.names)} names but {len(mels)} mel rows")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.names)

    def _faces(self, i: int) -> np.ndarray:
        if isinstance(self.faces, np.ndarray):
            return self.faces[i]
        return self.faces.get(self.names[i])

    def _has_mouths(self) -> bool:
        return bool(getattr(self.faces, "has_landmarks", False))

    def _audio_source(self, i: int, epoch: int) -> tuple[int, bool]:
        """(row whose audio item ``i`` uses, swapped?) -- the same draw for the per-item and the batched path."""
        if self.av_swap_prob > 0 and len(self.names) > 1:
            rng = np.random.default_rng((self.seed, epoch, i))
            if rng.random() < self.av_swap_prob:
                return int((i + rng.integers(1, len(self.names))) % len(self.names)), True
        return i, False

    def __getitem__(self, i: int) -> dict:
        """One clip: the row of ``get_batch([i])`` (one code path for items and batches, pseudo-fakes included)."""
        batch = self.get_batch([i])
        item = {k: v[0] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        item["index"] = int(i)
        return item

    def get_batch(self, indices: Sequence[int], epoch: int | None = None) -> dict:
        """The collated batch of ``indices`` in one read.

        The memory map is read in ascending row order (sequential on disk) and put back in the caller's order.
        ``epoch`` (default: the one from ``set_epoch``) travels with the indices because a persistent worker holds
        its own copy of the dataset, which ``set_epoch`` in the main process does not reach. With ``pseudo`` (a
        ``pseudo.PseudoFakes``) some real clips become pseudo-fakes (``pseudo_family`` and ``pseudo_variant`` say
        which; ``mel_stale`` / ``face_stale`` flag rows whose cached embeddings no longer match their pictures).
        """
        epoch = self.epoch if epoch is None else int(epoch)
        idx = np.asarray(indices, dtype=np.int64)
        target = self.targets[idx].copy()
        audio_idx, swapped = idx, np.zeros(len(idx), bool)
        if self.av_swap_prob > 0:
            src = [self._audio_source(int(i), epoch) for i in idx]
            audio_idx = np.array([a for a, _ in src], dtype=np.int64)
            swapped = np.array([sw for _, sw in src], bool)
            target[swapped] = 1.0
        arrays: dict[str, Any] = {}
        if self.mels is not None:
            arrays["mel"] = _take_rows(self.mels, audio_idx)
        if self.faces is not None:
            if isinstance(self.faces, np.ndarray):
                arrays["faces"] = _take_rows(self.faces, idx)
            else:
                arrays["faces"] = np.stack([self._faces(int(i)) for i in idx])
            if self._has_mouths():  # mtcnn caches: crops round the mouth corners, for the synchrony head
                arrays["mouths"] = np.stack([self.faces.mouths(self.names[int(i)]) for i in idx])
        has_audio = self.has_audio[audio_idx].astype(np.float32)
        branch = {"audio": self.targets[audio_idx].copy(), "visual": self.targets[idx].copy(),
                  "sync": np.array([_sync_target(self.targets[i], sw) for i, sw in zip(idx, swapped)], np.float32)}
        families, variants = [""] * len(idx), [-1] * len(idx)
        stale = {"mel": np.zeros(len(idx), bool), "faces": np.zeros(len(idx), bool)}
        if self.pseudo is not None:
            for r, i in enumerate(idx):
                if target[r] != 0 or swapped[r]:
                    continue  # pseudo-fakes are made from untouched real clips only
                drawn = self.pseudo.draw(self.names[int(i)], epoch)
                clip = {k: arrays[k][r] for k in arrays}
                clip["has_audio"] = bool(has_audio[r])
                if drawn is None or not self.pseudo.usable(drawn[0], clip):
                    continue
                family, variant = drawn
                if family == "face_blend" and getattr(self.faces, "has_landmarks", False):
                    clip["landmarks"] = self.faces.landmarks(self.names[int(i)])
                before = {k: clip[k] for k in ("mel", "faces") if k in clip}
                changed = self.pseudo.apply_one(family, clip, self.names[int(i)], variant)
                for k in before:  # (``before`` holds views of the batch arrays: compare before writing back)
                    stale[k][r] = not np.array_equal(before[k], clip[k])
                for k in arrays:
                    arrays[k][r] = clip[k]
                target[r], families[r], variants[r] = 1.0, family, variant
                for b in ("audio", "visual", "sync"):
                    branch[b][r] = 1.0 if b in changed else 0.0
        batch: dict[str, Any] = {"index": torch.from_numpy(idx), "target": torch.from_numpy(target)}
        if self.av_swap_prob > 0 or self.pseudo is not None:  # per-branch truth (a swap makes the pair fake)
            for b, values in branch.items():
                batch[f"target_{b}"] = torch.from_numpy(values.astype(np.float32))
        if "mel" in arrays:
            batch["mel"] = torch.from_numpy(arrays["mel"])[:, None]
        batch["has_audio"] = torch.from_numpy(has_audio)
        for key in ("faces", "mouths"):
            if key in arrays:
                batch[key] = torch.from_numpy(arrays[key]).permute(0, 1, 4, 2, 3)
        for key, arr in self.embeddings.items():  # the mel embedding follows the audio, like the mel image
            batch[key] = torch.from_numpy(np.asarray(arr[audio_idx if key == "mel_emb" else idx], np.float32))
        if self.pseudo is not None:
            batch["pseudo_family"], batch["pseudo_variant"] = families, variants
            if self.embeddings:
                batch["mel_stale"], batch["face_stale"] = torch.from_numpy(stale["mel"]), torch.from_numpy(stale["faces"])
        return batch

    def __getstate__(self) -> dict:
        # A memory map pickles as a full in-memory copy; a spawned worker reopens the file instead.
        state = dict(self.__dict__)
        ref = _memmap_ref(self.mels)
        if ref is not None:
            state["mels"] = ref
        # so are the stacks of cached embeddings (features.embeddings.embedding_stack)
        state["embeddings"] = {k: _memmap_ref(v) or v for k, v in self.embeddings.items()}
        return state

    def __setstate__(self, state: dict) -> None:
        if isinstance(state.get("mels"), _MemmapRef):
            state["mels"] = state["mels"].open()
        state["embeddings"] = {k: v.open() if isinstance(v, _MemmapRef) else v
                               for k, v in state.get("embeddings", {}).items()}
        self.__dict__.update(state)


def _take_rows(arr: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``arr[idx]`` as a new array, reading the rows in ascending order (one sweep over a memory map)."""
    if len(idx) == 0:
        return np.asarray(arr[idx])
    order = np.argsort(idx, kind="stable")
    rows = np.asarray(arr[idx[order]])
    out = np.empty_like(rows)
    out[order] = rows
    return out


class _MemmapRef:
    """Enough to reopen a read-only, C-contiguous memory map (or a slice of one) in another process."""

    def __init__(self, filename: str, offset: int, shape: tuple, dtype: np.dtype):
        self.filename, self.offset, self.shape, self.dtype = filename, offset, shape, dtype

    def open(self) -> np.ndarray:
        return np.memmap(self.filename, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape)


def _memmap_ref(arr: Any) -> _MemmapRef | None:
    """Where ``arr`` lives in its file, or None when it is not a plain view of a read-only memory map."""
    if not isinstance(arr, np.memmap) or arr.size == 0 or not arr.flags.c_contiguous:
        return None
    mm = getattr(arr, "_mmap", None)
    if mm is None or getattr(arr, "filename", None) is None or arr.mode != "r":
        return None
    try:
        base = np.frombuffer(mm, dtype=np.uint8).ctypes.data
    except (TypeError, ValueError):
        return None
    # numpy maps from the offset rounded down to the allocation granularity; a slice shares that mapping
    start = int(arr.offset) - int(arr.offset) % mmap.ALLOCATIONGRANULARITY
    return _MemmapRef(str(arr.filename), start + (arr.ctypes.data - base), tuple(arr.shape), arr.dtype)


class EpochBatchSampler(Sampler):
    """Yields ``(epoch, indices)`` per batch from an index sampler (a DistributedSampler or a plain list).

    Args:
        sampler: Index order; its ``set_epoch`` (if any) is called by :meth:`set_epoch`.
        batch_size: Items per batch.
        drop_last: Drop the last, smaller batch (keeps one shape for ``torch.compile``).
        min_last: Drop a last batch smaller than this (training: BatchNorm cannot train on a single item).
    """

    def __init__(self, sampler: Iterable[int], batch_size: int, drop_last: bool = False, min_last: int = 1):
        self.sampler, self.batch_size, self.drop_last, self.epoch = sampler, int(batch_size), bool(drop_last), 0
        self.min_last = int(min_last)

    def _stop(self, n: int) -> int:
        tail = n % self.batch_size
        return n - tail if self.drop_last or 0 < tail < self.min_last else n

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, list[int]]]:
        order = list(self.sampler)
        for s in range(0, self._stop(len(order)), self.batch_size):
            yield self.epoch, order[s:s + self.batch_size]

    def __len__(self) -> int:
        return -(-self._stop(len(self.sampler)) // self.batch_size)  # type: ignore[arg-type]


class BatchView(Dataset):
    """``view[(epoch, indices)]`` is ``ds.get_batch(indices, epoch)``: a map-style dataset of whole batches."""

    def __init__(self, ds: ClipDataset):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, key: tuple[int, Sequence[int]]) -> dict:
        epoch, indices = key
        return self.ds.get_batch(indices, epoch)


def batch_loader(ds: ClipDataset, batch_size: int, shuffle: bool = False, seed: int = 0, rank: int = 0,
                 world: int = 1, num_workers: int = 0, pin_memory: bool = False, drop_last: bool = False,
                 pad: bool = True) -> DataLoader:
    """A DataLoader that reads whole batches (``ClipDataset.get_batch``); call ``loader.batch_sampler_.set_epoch``.

    Args:
        ds: The dataset.
        batch_size: Items per batch (per process under DDP).
        shuffle: A new order every epoch, drawn from ``(seed, epoch)`` only, so a resumed run sees the same order.
        seed: Seeds the order.
        rank: This process's rank (DDP).
        world: Number of processes; each gets its share of the items (a DistributedSampler).
        num_workers: Loader processes (0: in this process).
        pin_memory: Page-locked batches (CUDA), so the copy to the GPU can run asynchronously.
        drop_last: Drop the last, smaller batch. When shuffling (training) a last batch of one item is always
            dropped: BatchNorm cannot train on it (another item is left out in each epoch).
        pad: With ``world`` > 1, repeat a few items so every rank has as many batches (training). ``pad=False``
            gives each rank a disjoint shard, every item exactly once overall (evaluation).
    """
    if shuffle or (world > 1 and pad):
        order: Any = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed)
    else:
        order = range(rank, len(ds), world)
    batches = EpochBatchSampler(order, batch_size, drop_last, min_last=2 if shuffle else 1)
    nw = int(num_workers or 0)
    loader = DataLoader(BatchView(ds), batch_size=None, sampler=batches, num_workers=nw, pin_memory=pin_memory,
                        persistent_workers=nw > 0, generator=torch.Generator().manual_seed(int(seed)))
    loader.batch_sampler_ = batches  # DataLoader hides a sampler given with batch_size=None; keep a handle
    return loader


_NORM_CACHE: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}


def _norm_constants(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with uint8 * scale + shift = (x / 255 - mean) / std, made once per device (no copy per step)."""
    key = str(device)
    if key not in _NORM_CACHE:
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
        _NORM_CACHE[key] = ((1.0 / (255.0 * std)).to(device), (-mean / std).to(device))
    return _NORM_CACHE[key]


def prepare_batch(batch: Mapping[str, torch.Tensor], device: torch.device | str = "cpu",
                  channels_last: bool = False) -> dict:
    """Move a collated batch to ``device`` and turn uint8 images into normalised float tensors."""
    device = torch.device(device)
    nb = device.type == "cuda"
    out: dict[str, Any] = {}
    for k, v in batch.items():
        out[k] = v.to(device, non_blocking=nb) if isinstance(v, torch.Tensor) else v
    scale, shift = _norm_constants(device)
    if "mel" in out and out["mel"].dtype == torch.uint8:
        # one fused multiply-add that also broadcasts the grey channel to 3
        mel = torch.addcmul(shift, out["mel"].float(), scale)
        out["mel"] = mel.contiguous(memory_format=torch.channels_last) if channels_last else mel
    for key in ("faces", "mouths"):
        if key in out and out[key].dtype == torch.uint8:
            out[key] = torch.addcmul(shift.unsqueeze(1), out[key].float(), scale.unsqueeze(1))
    if "target" in out:
        out["target"] = out["target"].float()
    return out


def clip_datasets(params: Mapping[str, Any], inputs: Sequence[str], progress: bool = True,
                  errors_csv: Any = None) -> tuple[ClipDataset, ClipDataset]:
    """Train and validation datasets from the data root in ``params`` (``max_train_clips`` subsamples train).

    With ``split_csv`` (video_name, part, target, folder; see ``write_split``) the clips of part
    ``train`` and ``eval`` replace the label files' train and val splits.
    """
    params = with_defaults(params, RUN, FEATURES, TRAINING)
    root = params["data_root"]
    if params["split_csv"]:  # a protocol's own train / eval lists (data.splits.write_split)
        train, val = read_split(params["split_csv"], root)
    else:
        train = load_split(root, "train")
        val = load_split(root, "val")
    cap = params["max_train_clips"]
    if cap:
        train = train.sample(n=min(int(cap), len(train)), random_state=int(params["seed"])).reset_index(drop=True)
    both = pd.concat([train, val], ignore_index=True)
    # an undecodable clip would teach "blank input -> its label": it is left out, with a warning naming it
    feats = clip_features(params, both, inputs, progress=progress, errors_csv=errors_csv, drop_failed=True)
    if feats["failed"].any():
        bad = both.video_name[feats["failed"]].tolist()
        warnings.warn(f"{len(bad)} clip(s) could not be decoded and are left out of training/validation "
                      f"(see extraction_errors.csv): {', '.join(bad[:10])}", stacklevel=2)
        keep = feats["keep"]
        train, val = train[keep[: len(train)]].reset_index(drop=True), val[keep[len(train):]].reset_index(drop=True)
    n = len(train)

    def part(sl: slice, df: pd.DataFrame, swap: float, pseudo: PseudoFakes | None) -> ClipDataset:
        return ClipDataset(df.video_name, df.target, mels=feats["mels"][sl] if "mels" in feats else None,
                           has_audio=feats["has_audio"][sl] if "has_audio" in feats else None,
                           faces=feats.get("faces"), av_swap_prob=swap, seed=int(params["seed"]), pseudo=pseudo)

    pseudo = pseudo_from_params(params)
    train_ds = part(slice(0, n), train, float(params["av_swap_prob"]), pseudo)
    val_ds = part(slice(n, None), val, 0.0, None)
    train_ds.clips, val_ds.clips = train, val
    return train_ds, val_ds
