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
# The whole band a recording holds: the baseline's image at 48 kHz (mel bands up to 24 kHz), so where a clip's
# spectrum ends -- 8 kHz for 16 kHz speech, 12 kHz for 24 kHz vocoders, 20 kHz for a camera -- is in the picture.
MEL_PRESETS["wide"] = {**MEL_PRESETS["seed"], "sr": 48000}
for _preset in MEL_PRESETS.values():
    # How entries are stored: "raw" (the uint8 array, .npy) or "png" (the same array PNG-encoded inside the .npy:
    # lossless, 0.5-0.6 of the bytes). Enters the cache key only when not raw, so raw caches keep their keys.
    _preset["codec"] = "raw"
MEL_CODECS = ("raw", "png")
MEL_PRESETS["baseline"] = MEL_PRESETS["seed"]  # alias: same parameters, same hash, same cache

_INT_FIELDS = {"sr", "n_fft", "hop_length", "win_length", "n_mels", "height", "width"}
_STR_FIELDS = {"norm", "scale", "resampler", "codec"}

FACE_DEFAULTS: dict[str, Any] = FACE  # every face_<field> (core.schema.FACE)
_FACE_INT = {"frames", "size", "work_size", "detect_width", "detect_frames", "smooth", "mouth_size", "quality"}
FACE_DETECTORS = ("haar", "center", "mtcnn")
FACE_CODECS = ("raw", "png", "jpeg")  # how a face cache stores its crops (features.cache.encode_crops)
# Fields only MTCNN reads: dropped from the resolved haar / center parameters, whose hash (the cache folder's name)
# therefore stays what it was before these fields existed.
MTCNN_FIELDS = ("detect_frames", "smooth", "mouth_size", "mouth_scale", "device")


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
    out["codec"] = out["codec"] or "raw"
    if out["codec"] not in MEL_CODECS:
        raise ValueError(f"mel_codec must be one of {', '.join(MEL_CODECS)}, not {out['codec']!r}")
    if out["codec"] == "raw":  # the key of a raw cache stays what it was before the field existed
        out.pop("codec")
    out["preset"] = "seed" if name == "baseline" else name
    out["version"] = FEATURES_VERSION
    return out


def face_params(params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Resolves face-crop parameters from ``face_<field>`` keys (defaults in FACE_DEFAULTS).

    Args:
        params: A run's params (or an already resolved dict, returned as a copy).

    Returns:
        Dict with every FACE_DEFAULTS field plus ``version``; for ``haar`` and ``center`` without the
        MTCNN_FIELDS (so adding them kept those cache keys); without ``codec`` for ``raw`` and without ``quality``
        unless the codec is ``jpeg`` (so raw caches kept their keys too).
    """
    params = dict(params or {})
    if "version" in params and "detector" in params:
        return dict(params)
    out = _resolve(FACE_DEFAULTS, params, "face_", _FACE_INT, {"detector", "device", "codec"}, "face")
    if out["detector"] not in FACE_DETECTORS:
        raise ValueError(f"face_detector must be one of {', '.join(FACE_DETECTORS)}, not {out['detector']!r}")
    out["codec"] = out["codec"] or "raw"
    if out["codec"] not in FACE_CODECS:
        raise ValueError(f"face_codec must be one of {', '.join(FACE_CODECS)}, not {out['codec']!r}")
    if out["codec"] == "jpeg" and not 1 <= out["quality"] <= 100:
        raise ValueError(f"face_quality must be in 1-100, not {out['quality']}")
    # the storage fields enter the key only where they change it: a raw cache keeps the key it had before them
    if out["codec"] != "jpeg":
        out.pop("quality")
    if out["codec"] == "raw":
        out.pop("codec")
    if out["detector"] == "mtcnn":
        out["device"] = out["device"] or FACE_DEFAULTS["device"]
        if out["device"] not in ("cpu", "cuda"):
            raise ValueError(f"face_device must be 'cpu' or 'cuda', not {out['device']!r}")
        if out["detect_frames"] < 0 or out["smooth"] < 1 or out["mouth_size"] < 8 or out["mouth_scale"] <= 0:
            raise ValueError("face_detect_frames must be >= 0, face_smooth >= 1, face_mouth_size >= 8 and "
                             f"face_mouth_scale > 0 (got {[out[k] for k in MTCNN_FIELDS[:4]]})")
    else:
        set_here = [f"face_{k}" for k in MTCNN_FIELDS if params.get(f"face_{k}") not in (None, FACE_DEFAULTS[k])]
        if set_here:
            warnings.warn(f"{', '.join(set_here)} only apply to face_detector 'mtcnn'; ignored", stacklevel=2)
        for k in MTCNN_FIELDS:
            out.pop(k)
    out["version"] = FEATURES_VERSION
    return out
