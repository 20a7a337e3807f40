"""torch Datasets over the feature cache: uint8 arrays in, uint8 tensors out; normalisation on the device.

The loader hands out uint8 (4x smaller than float32 to pin and copy); ``prepare_batch`` converts, normalises
and replicates the grey mel image to 3 channels on the training device, where it is cheap.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
    """

    def __init__(self, names: Sequence[str], targets: Sequence[float], mels: np.ndarray | None = None,
                 has_audio: Sequence[bool] | None = None, faces: Any = None, av_swap_prob: float = 0.0,
                 seed: int = 0):
        self.names = list(names)
        self.targets = np.asarray(targets, dtype=np.float32)
        self.mels = mels
        self.has_audio = np.ones(len(self.names), bool) if has_audio is None else np.asarray(has_audio, bool)
        self.faces = faces
        self.av_swap_prob = float(av_swap_prob)
        self.seed = int(seed)
        self.epoch = 0
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

    def __getitem__(self, i: int) -> dict:
        item: dict[str, Any] = {"index": i, "target": torch.tensor(self.targets[i])}
        audio_i = i
        if self.av_swap_prob > 0 and len(self.names) > 1:
            rng = np.random.default_rng((self.seed, self.epoch, i))
            if rng.random() < self.av_swap_prob:
                audio_i = int((i + rng.integers(1, len(self.names))) % len(self.names))
                item["target"] = torch.tensor(1.0)
        if self.mels is not None:
            item["mel"] = torch.from_numpy(np.array(self.mels[audio_i], copy=True))[None]  # memmaps are read-only
        item["has_audio"] = torch.tensor(float(self.has_audio[audio_i]))
        if self.faces is not None:
            item["faces"] = torch.from_numpy(np.array(self._faces(i), copy=True)).permute(0, 3, 1, 2)
        return item


def prepare_batch(batch: Mapping[str, torch.Tensor], device: torch.device | str = "cpu",
                  channels_last: bool = False) -> dict:
    """Move a collated batch to ``device`` and turn uint8 images into normalised float tensors."""
    device = torch.device(device)
    nb = device.type == "cuda"
    out: dict[str, Any] = {}
    for k, v in batch.items():
        out[k] = v.to(device, non_blocking=nb) if isinstance(v, torch.Tensor) else v
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    if "mel" in out and out["mel"].dtype == torch.uint8:
        mel = out["mel"].float().div_(255.0)
        mel = (mel.expand(-1, 3, -1, -1) - mean) / std
        out["mel"] = mel.contiguous(memory_format=torch.channels_last) if channels_last else mel
    if "faces" in out and out["faces"].dtype == torch.uint8:
        f = out["faces"].float().div_(255.0)
        out["faces"] = (f - mean.unsqueeze(1)) / std.unsqueeze(1)
    if "target" in out:
        out["target"] = out["target"].float()
    return out


def clip_features(params: Mapping[str, Any], clips: pd.DataFrame, inputs: Sequence[str], progress: bool = True,
                  errors_csv: Any = None) -> dict:
    """Extract (or read back from the cache) what ``inputs`` need for ``clips`` (video_name, path).

    Returns ``mels`` (N, H, W) uint8 memory map, ``has_audio`` (N,) and ``faces`` (a FaceStore), as present.
    Extraction is resumable and keyed by the feature parameters, so calling this again costs a cache lookup.
    """
    from . import config, features

    size = int(params.get("image_size", 256))
    workers = params.get("feature_workers")
    out: dict[str, Any] = {}
    if "mel" in inputs or "has_audio" in inputs:
        store = features.extract_mels(clips[["video_name", "path"]], features.mel_params(params), config.cache_dir(),
                                      workers=workers, progress=progress, errors_csv=errors_csv)
        names = list(clips.video_name)
        out["mels"] = store.packed(names, size, size)
        out["has_audio"] = np.array([store.has_audio(n) for n in names], bool)
    if "faces" in inputs:
        out["faces"] = features.extract_faces(clips[["video_name", "path"]], features.face_params(params),
                                              config.cache_dir(), workers=workers, progress=progress,
                                              errors_csv=errors_csv)
    return out


def clip_datasets(params: Mapping[str, Any], inputs: Sequence[str], progress: bool = True,
                  errors_csv: Any = None) -> tuple[ClipDataset, ClipDataset]:
    """Train and validation datasets from the data root in ``params`` (``max_train_clips`` subsamples train)."""
    from . import data

    root = params.get("data_root")
    train = data.load_split(root, "train")
    val = data.load_split(root, "val")
    cap = params.get("max_train_clips")
    if cap:
        train = train.sample(n=min(int(cap), len(train)), random_state=int(params.get("seed", 0))).reset_index(drop=True)
    both = pd.concat([train, val], ignore_index=True)
    feats = clip_features(params, both, inputs, progress=progress, errors_csv=errors_csv)
    n = len(train)

    def part(sl: slice, df: pd.DataFrame, swap: float) -> ClipDataset:
        return ClipDataset(df.video_name, df.target, mels=feats["mels"][sl] if "mels" in feats else None,
                           has_audio=feats["has_audio"][sl] if "has_audio" in feats else None,
                           faces=feats.get("faces"), av_swap_prob=swap, seed=int(params.get("seed", 0)))

    return (part(slice(0, n), train, float(params.get("av_swap_prob") or 0)),
            part(slice(n, None), val, 0.0))


def extraction_report(params: Mapping[str, Any], clips: pd.DataFrame, inputs: Sequence[str]) -> dict:
    """Counts of ok / no_audio / error per feature kind for ``clips`` (read from the cache manifests)."""
    from . import config, features

    report: dict[str, Any] = {"n_clips": int(len(clips)), "status": {}}
    stores = []
    if "mel" in inputs:
        stores.append(("mel", features.extract_mels(clips[["video_name", "path"]], features.mel_params(params),
                                                    config.cache_dir(), progress=False)))
    if "faces" in inputs:
        stores.append(("faces", features.extract_faces(clips[["video_name", "path"]], features.face_params(params),
                                                       config.cache_dir(), progress=False)))
    for kind, store in stores:
        table = store.table
        table = table[table.video_name.isin(set(clips.video_name))]
        report["status"][kind] = {str(k): int(v) for k, v in table.status.value_counts().items()}
        report[f"{kind}_cache"] = str(store.root)
        if kind == "faces":
            found = [float(store.face_found(n).mean()) for n in clips.video_name if n in store]
            report["face_found_rate"] = float(np.mean(found)) if found else float("nan")
    return report
