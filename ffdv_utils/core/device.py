"""Device and numeric precision: which device a run uses, mixed precision for it (bf16 where the hardware has it,
fp16 with a grad scaler on T4-class GPUs, bf16 autocast on CPUs with native bf16), and the backend switches.
"""

from __future__ import annotations

import os
from typing import Any

import torch


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
    than float32 on this project's Zen 4 cores, see docs/training.md), else off. ``bf16`` / ``fp16`` / ``false`` force
    a choice (fp16 only on GPUs). Logit layers stay float32 either way (``ScoreLinear``).
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
