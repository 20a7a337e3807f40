"""Feature parameters: the mel presets and face-crop fields, resolved from a run's ``mel_*`` / ``face_*`` keys
into the dict whose hash names the cache folder. Defaults come from ``core.schema``.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

from ..core.schema import FACE, FEATURES, with_defaults

# Bump when the computation changes in a way the parameters do not capture, so old caches are not reused.
FEATURES_VERSION = 1

# Every mel field; a preset gives all of them, a run's params may override any as ``mel_<field>``.
MEL_PRESETS: dict[str, dict[str, Any]] = {
    # The public baseline's image: 22,050 Hz, librosa's melspectrogram defaults, dB relative to the clip's
    # maximum, min-max scaled per clip, resized to 256x256. Level information is lost by the per-clip scaling.
    "seed": {
        "sr": 22050, "n_fft": 2048, "hop_length": 512, "win_length": 2048, "n_mels": 128, "fmin": 0.0,
        "fmax": 0.0, "norm": "slaney", "scale": "minmax", "top_db": 80.0, "db_max": 0.0,
        "height": 256, "width": 256, "max_seconds": 0.0, "min_seconds": 0.05, "silence_db": -80.0,
        "resampler": "soxr",
    },
    # Training default: speech band at 16 kHz (8 kHz covers what AAC/vocoders leave of speech), 64 ms window,
    # 16 ms hop (62.5 frames/s), 128 mels. dB on a fixed scale (0 dB = a full-scale sine; 80 dB below it maps
    # to 0) instead of per-clip min-max, so loudness and the noise floor stay visible to the model. Stored at
    # natural size (128 x frames), at most 12 s, which keeps a 10 s clip at 80 KB (20 GB for 250,000 clips).
    "default": {
        "sr": 16000, "n_fft": 1024, "hop_length": 256, "win_length": 1024, "n_mels": 128, "fmin": 20.0,
        "fmax": 8000.0, "norm": "slaney", "scale": "fixed", "top_db": 80.0, "db_max": -10.0,
        "height": 0, "width": 0, "max_seconds": 12.0, "min_seconds": 0.05, "silence_db": -80.0,
        "resampler": "soxr",
    },
}
MEL_PRESETS["baseline"] = MEL_PRESETS["seed"]  # alias: same parameters, same hash, same cache

_INT_FIELDS = {"sr", "n_fft", "hop_length", "win_length", "n_mels", "height", "width"}
_STR_FIELDS = {"norm", "scale", "resampler"}

FACE_DEFAULTS: dict[str, Any] = FACE  # every face_<field> (core.schema.FACE)
_FACE_INT = {"frames", "size", "work_size", "detect_width"}


# ---------------------------------------------------------------------------------------------------------------
# parameters


def _resolve(defaults: dict[str, Any], params: Mapping[str, Any], prefix: str, ints: set, strs: set,
             kind: str) -> dict[str, Any]:
    out = dict(defaults)
    for key, value in params.items():
        if not key.startswith(prefix) or key == f"{prefix}preset":
            continue
        field = key[len(prefix):]
        if field not in defaults:
            # Not fatal: other stages may use keys with the same prefix; say so instead of ignoring silently.
            warnings.warn(f"{key!r} is not a {kind} parameter (known: {', '.join(sorted(defaults))}); ignored",
                          stacklevel=3)
            continue
        out[field] = value
    for k, v in out.items():
        if v is None and k in strs:
            continue
        if v is None:  # "no limit" for numeric fields is 0
            out[k] = 0
        elif k in ints:
            out[k] = int(v)
        elif k in strs:
            out[k] = None if v in ("none", "None", "") else str(v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
    return out


def mel_params(params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Resolves the mel parameters of a run.

    Args:
        params: A run's params: ``mel_preset`` (a name in MEL_PRESETS, default "default") plus any
            ``mel_<field>`` overrides (e.g. ``mel_n_mels: 64``). An already resolved dict (with ``preset``)
            is returned as a copy, so the function can be applied twice.

    Returns:
        Dict with every field of the preset plus ``preset`` and ``version``; its params_hash names the cache.
    """
    params = dict(params or {})
    if "preset" in params and "sr" in params and "mel_preset" not in params:
        return dict(params)
    name = str(with_defaults(params, FEATURES)["mel_preset"])
    if name not in MEL_PRESETS:
        raise ValueError(f"unknown mel_preset {name!r}; choose one of {sorted(MEL_PRESETS)}")
    out = _resolve(MEL_PRESETS[name], params, "mel_", _INT_FIELDS, _STR_FIELDS, "mel")
    if out["scale"] not in ("minmax", "fixed"):
        raise ValueError(f"mel_scale must be 'minmax' or 'fixed', not {out['scale']!r}")
    if not 0 <= out["fmax"] <= out["sr"] / 2 + 1e-6:
        raise ValueError(f"mel_fmax {out['fmax']} must be in [0, sr/2 = {out['sr'] / 2}] (0 means sr/2)")
    out["win_length"] = out["win_length"] or out["n_fft"]
    out["preset"] = "seed" if name == "baseline" else name
    out["version"] = FEATURES_VERSION
    return out


def face_params(params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Resolves face-crop parameters from ``face_<field>`` keys (defaults in FACE_DEFAULTS).

    Args:
        params: A run's params (or an already resolved dict, returned as a copy).

    Returns:
        Dict with every FACE_DEFAULTS field plus ``version``.
    """
    params = dict(params or {})
    if "version" in params and "detector" in params:
        return dict(params)
    out = _resolve(FACE_DEFAULTS, params, "face_", _FACE_INT, {"detector"}, "face")
    if out["detector"] not in ("haar", "center"):
        raise ValueError(f"face_detector must be 'haar' or 'center', not {out['detector']!r}")
    out["version"] = FEATURES_VERSION
    return out
