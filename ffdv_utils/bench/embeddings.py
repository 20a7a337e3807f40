"""``python -m ffdv_utils bench embeddings``: what frozen-backbone embeddings cost (``freeze_backbone``), per input.

The mel images and face crops are extracted first (not timed: ``bench extraction`` times them); then the frozen
backbone embeds them into a fresh cache, one input at a time: clips/s, CPU seconds per clip (robust on a busy
machine), the process's peak memory, and a projection to 250,000 clips on a 4-core machine from the CPU time. On a
GPU (``--device cuda``) the projection is the wall time of one GPU.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..core.schema import TRAIN_DEFAULTS
from ..features.batches import ClipDataset
from ..features.clips import clip_features
from ..features.embeddings import embed_dataset, embedding_folder
from ..models.registry import create_model
from ..sample_data.clips import make_clips
from .extraction import peak_rss_mib


def bench_embeddings(videos: str | os.PathLike | None = None, limit: int | None = None, make_n: int = 16,
                     backbone: str = "tf_efficientnet_lite0", pretrained: str = "package:efficientnet_lite0",
                     image_size: int = 128, face_size: int = 112, face_frames: int = 8, device: str = "cpu",
                     batch_size: int = 32, log: Callable[[str], None] = print, progress: bool = False) -> dict:
    """Times the frozen embeddings of mel images and face crops on the same clips; returns the figures."""
    import torch

    paths: list[Path]
    with tempfile.TemporaryDirectory(prefix="ffdv_bench_emb_") as tmp:
        old = os.environ.get("FFDV_CACHE")
        os.environ["FFDV_CACHE"] = str(Path(tmp) / "cache")
        try:
            if videos is None:
                paths = make_clips(Path(tmp) / "clips", make_n if limit is None else min(make_n, limit), progress)
            else:
                paths = sorted(p for p in Path(videos).iterdir() if p.suffix.lower() in {".mp4", ".mov", ".mkv"})
            paths = paths[:limit] if limit else paths
            if not paths:
                raise FileNotFoundError(f"no video files to benchmark in {videos}")
            clips = pd.DataFrame({"video_name": [p.name for p in paths], "path": [str(p) for p in paths]})
            p = {**TRAIN_DEFAULTS, "model_type": "fusion", "model": backbone, "pretrained": pretrained,
                 "freeze_backbone": True, "image_size": image_size, "face_size": face_size,
                 "face_frames": face_frames}
            feats = clip_features(p, clips, ["mel", "faces"], progress=progress)
            ds = ClipDataset(clips.video_name, [0] * len(clips), mels=feats["mels"], has_audio=feats["has_audio"],
                             faces=feats["faces"])
            model = create_model(p).to(device)
            frozen = model.frozen_backbones()
            result: dict[str, Any] = {"clips": len(clips), "backbone": backbone, "pretrained": pretrained,
                                      "device": device, "torch_threads": torch.get_num_threads(),
                                      "image_size": image_size, "face_size": face_size, "face_frames": face_frames}
            log(f"{len(clips)} clips; {backbone} ({pretrained}), frozen, on {device} with "
                f"{torch.get_num_threads()} torch threads")
            for kind in ("mel", "faces"):
                # warm-up on one clip (first-call set-up), into a throwaway folder
                embed_dataset(ClipDataset(ds.names[:1], [0], mels=ds.mels[:1], faces=ds.faces), kind, frozen[kind],
                              Path(tmp) / f"warm-{kind}", device, batch_size, progress=False)
                folder = embedding_folder(p, kind, frozen[kind])
                c0, t0 = sum(os.times()[:2]), time.perf_counter()
                embed_dataset(ds, kind, frozen[kind], folder, device, batch_size, progress=progress)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                wall, cpu = time.perf_counter() - t0, (sum(os.times()[:2]) - c0) / len(clips)
                per_s = len(clips) / wall
                images = 1 if kind == "mel" else face_frames
                result[f"{kind}_clips_per_s"] = round(per_s, 2)
                result[f"{kind}_images_per_s"] = round(per_s * images, 1)
                result[f"{kind}_cpu_s_per_clip"] = round(cpu, 4)
                hours = (250_000 / per_s if device.startswith("cuda") else 250_000 * cpu / 4) / 3600
                result[f"{kind}_250k_h"] = round(hours, 2)
                log(f"{kind} embeddings: {per_s:.2f} clips/s ({per_s * images:.0f} images/s), {cpu:.3f} CPU s per "
                    f"clip; 250,000 clips: {hours:.2f} h " + ("on this GPU" if device.startswith("cuda")
                                                               else "on 4 cores (from CPU time)"))
            result["peak_rss_mib"] = peak_rss_mib()["self"]
            log(f"peak RSS of this process (torch and the backbone included): {result['peak_rss_mib']:.0f} MiB")
        finally:
            if old is None:
                os.environ.pop("FFDV_CACHE", None)
            else:
                os.environ["FFDV_CACHE"] = old
    return result
