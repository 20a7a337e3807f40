"""The pseudo-fake families: each breaks one thing a deepfake breaks, on a real clip's uint8 cache data.

=================  ==========  ====================================================================================
family             branches    what it does (parameters drawn per clip)
=================  ==========  ====================================================================================
``face_blend``     visual      Self-blended face (Shiohara & Yamasaki, CVPR 2022): the clip's own face, colour-
                               shifted (per-channel gain 0.9-1.1, brightness +-18, contrast 0.85-1.15), made softer
                               (down- and up-sampled to 35-80 %, or blurred) and moved by up to 2 %, blended back
                               through a feathered ellipse round the eyes and mouth (landmarks when the cache has
                               them). The same blend on every frame, a pixel of jitter per frame.
``voice``          audio       Vocoder-like damage to the voice in the mel image, the words kept: one or two of
                               spectral smearing across bands, band limiting, level quantisation, a formant warp of
                               the frequency axis (0.88-0.95 or 1.05-1.12) and smearing along time; each column's
                               loudness is restored afterwards, so the energy envelope (what the lips follow) stays.
``av_offset``      sync        The sound moved against the picture by 8-20 % of the clip (either way), the gap filled
                               with the quietest column: lips and speech no longer rise and fall together.
``mouth_reorder``  visual,     The mouth taken from other frames (the frame order cyclically shifted by a quarter to
                   sync        three quarters, or reversed): in the mouth crops and, through a feathered box, in the
                               face crops.
``splice``         visual or   Temporal continuity broken (clip splicing, as one public FFDV write-up found in the
                   audio,      data): a 20-40 % run of frames replaced by frames from elsewhere in the clip or by a
                   sync        frozen frame, or a 15-30 % span of the mel image by another span of it.
=================  ==========  ====================================================================================

**Partial manipulations** (``pseudo_local``: the probability that a drawn pseudo-fake is confined to one stretch of the
clip): the family is made on the whole clip, then only one segment of 25-60 % of the clip's length is taken from it
(the frames whose instants fall in the segment, and the mel columns under it); the rest stays the real clip. Fakes
that replace a few words or a second of face (LAV-DF, AV-Deepfake1M: content-driven partial manipulations) change
a stretch, not the whole clip; a detector that pools over the whole clip averages such a stretch away.

Only real clips are changed (``PseudoFakes.apply_one``); a changed clip is labelled fake, with per-branch targets for
the branches the family concerns (0 for the others: a self-blended face keeps its own voice and its lips in sync).

Determinism, and why a pseudo-fake has *variants*: every epoch, each real clip draws from
``(seed, epoch, clip name)`` whether it becomes a pseudo-fake, with which family, and which of ``pseudo_variants``
variants of it. What a variant looks like depends on (clip name, family, variant, ``pseudo_local``) only -- not on the
epoch, the training seed, or which other clips share the split -- so the frozen-backbone embeddings of a variant are
computed once and cached (``features.embeddings.PseudoEmbeddings``) and every later epoch, seed, protocol fold and
candidate reads them. With 4 variants and a probability of 25 %, a clip meets about as many different pseudo-fakes
over 15 epochs as without the cap. Nothing here imports torch.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import cv2
import numpy as np

from ..core.schema import TRAINING, with_defaults

# family -> the branches whose truth it sets to "fake" (the others stay real)
FAMILIES: dict[str, tuple[str, ...]] = {
    "face_blend": ("visual",),
    "voice": ("audio",),
    "av_offset": ("sync",),
    "mouth_reorder": ("visual", "sync"),
    "splice": ("visual", "audio", "sync"),  # which of visual / audio depends on the drawn modality
}
# bump when any family's output changes: cached embeddings of pseudo-fakes are keyed by it
PSEUDO_VERSION = "p2"
MOUTH_BOX = (0.62, 0.9, 0.3, 0.7)  # rows, columns (fractions) of the mouth in a face crop (as models.sync)
_FAMILY_ID = {name: i for i, name in enumerate(FAMILIES)}


def family_of(params: Mapping[str, Any]) -> dict[str, float]:
    """``pseudo_fakes`` of a run's parameters as {family: probability}, checked (unknown names, bad totals)."""
    spec = params.get("pseudo_fakes") or {}
    if not isinstance(spec, Mapping):
        raise ValueError(f"pseudo_fakes must map family names to probabilities, got {spec!r}")
    off = set(params.get("pseudo_fakes_off") or ())
    out = {}
    for name, prob in spec.items():
        if name not in FAMILIES:
            raise ValueError(f"unknown pseudo-fake family {name!r}; choose from {', '.join(FAMILIES)}")
        if name not in off and float(prob) > 0:
            out[name] = float(prob)
    if sum(out.values()) > 1 + 1e-9:
        raise ValueError(f"pseudo_fakes probabilities add up to {sum(out.values()):.2f} > 1: each real clip gets at "
                         "most one family")
    return out


def pseudo_from_params(params: Mapping[str, Any]) -> "PseudoFakes | None":
    """The ``PseudoFakes`` of a run's parameters (``pseudo_fakes``, ``pseudo_fakes_off``, ``pseudo_variants``,
    ``pseudo_local``, ``seed``), or None when no family is on."""
    p = with_defaults(params, TRAINING)
    probs = family_of(p)
    if not probs:
        return None
    variants, local = int(p["pseudo_variants"]), float(p["pseudo_local"])
    if variants < 1 or not 0.0 <= local <= 1.0:
        raise ValueError(f"pseudo_variants must be >= 1 and pseudo_local in [0, 1]; got {variants} and {local}")
    return PseudoFakes(probs, seed=int(p["seed"]), variants=variants, local=local)


# ---------------------------------------------------------------------------------------------------------------
# the families: (rng, clip dict) -> the branches changed; they edit the clip's arrays in place


def _ellipse_mask(s: int, rng: np.random.Generator, landmarks: np.ndarray | None) -> np.ndarray:
    """A feathered ellipse round the inner face of an S x S crop, float32 in [0, 1]."""
    if landmarks is not None and np.isfinite(landmarks).all() and np.ptp(landmarks[:, :2, 0]) > 2:
        eyes, mouth = landmarks[:, :2].mean(0), landmarks[:, 3:5].mean(0)
        cx, cy = float(np.mean([eyes[:, 0].mean(), mouth[:, 0].mean()])), float(np.mean([eyes[:, 1].mean(),
                                                                                        mouth[:, 1].mean()]))
        eye_d = float(np.linalg.norm(eyes[1] - eyes[0]))
        ax, ay = eye_d * rng.uniform(0.95, 1.3), eye_d * rng.uniform(1.15, 1.6)
    else:
        cx, cy = s * rng.uniform(0.47, 0.53), s * rng.uniform(0.5, 0.58)
        ax, ay = s * rng.uniform(0.2, 0.3), s * rng.uniform(0.25, 0.36)
    mask = np.zeros((s, s), np.float32)
    cv2.ellipse(mask, (int(round(cx)), int(round(cy))), (max(2, int(ax)), max(2, int(ay))),
                float(rng.uniform(-12, 12)), 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), s * rng.uniform(0.02, 0.07))
    return mask * np.float32(rng.uniform(0.75, 1.0))


def face_blend(rng: np.random.Generator, clip: dict) -> tuple[str, ...]:
    faces = clip["faces"]
    t, s = faces.shape[:2]
    mask = _ellipse_mask(s, rng, clip.get("landmarks"))
    gain = rng.uniform(0.9, 1.1, 3).astype(np.float32) * np.float32(rng.uniform(0.85, 1.15))
    bias = np.float32(rng.uniform(-18, 18))
    soften = rng.random()
    scale = rng.uniform(0.35, 0.8)
    sigma = rng.uniform(0.6, 1.6)
    warp = cv2.getRotationMatrix2D((s / 2, s / 2), 0.0, float(rng.uniform(0.97, 1.03)))
    warp[:, 2] += rng.uniform(-0.02, 0.02, 2) * s
    small = (max(4, int(s * scale)),) * 2
    for f in range(t):
        frame = faces[f].astype(np.float32)
        src = (frame - 128.0) * gain + 128.0 + bias
        if soften < 0.7:
            src = cv2.resize(cv2.resize(src, small, interpolation=cv2.INTER_AREA), (s, s), interpolation=cv2.INTER_LINEAR)
        else:
            src = cv2.GaussianBlur(src, (0, 0), sigma)
        src = cv2.warpAffine(src, warp, (s, s), borderMode=cv2.BORDER_REFLECT)
        dx, dy = rng.integers(-1, 2, 2)
        m = np.roll(mask, (int(dy), int(dx)), axis=(0, 1))[..., None]
        faces[f] = np.clip(frame * (1 - m) + src * m, 0, 255).astype(np.uint8)
    return ("visual",)


def voice(rng: np.random.Generator, clip: dict) -> tuple[str, ...]:
    mel = clip["mel"]
    h, w = mel.shape
    x = mel.astype(np.float32)
    before = x.mean(0)
    ops = rng.permutation(["smear", "bandlimit", "quantise", "formant", "time_smear"])[: int(rng.integers(1, 3))]
    for op in ops:
        if op == "smear":
            x = cv2.GaussianBlur(x, (1, 0), sigmaX=0.1, sigmaY=float(rng.uniform(1.0, 3.0)) * h / 128)
        elif op == "bandlimit":
            cut = int(h * rng.uniform(0.55, 0.8))
            x[cut:] = np.minimum(x[cut:], np.percentile(x, 5) + rng.uniform(0, 6, (h - cut, 1)))
        elif op == "quantise":
            step = rng.uniform(10, 24)
            x = np.round(x / step) * step
        elif op == "formant":
            alpha = rng.choice([rng.uniform(0.88, 0.95), rng.uniform(1.05, 1.12)])
            rows = np.clip(np.arange(h) / alpha, 0, h - 1).astype(np.float32)
            x = cv2.remap(x, np.tile(np.arange(w, dtype=np.float32), (h, 1)), np.repeat(rows[:, None], w, 1),
                          cv2.INTER_LINEAR)
        else:
            # at least one column (16-31 ms of a 2-4 s clip at 128 columns): weaker smearing is no fake at all
            x = cv2.GaussianBlur(x, (0, 1), sigmaX=float(rng.uniform(1.0, 2.5)) * max(1.0, w / 128), sigmaY=0.1)
    x += (before - x.mean(0))[None, :]  # each column's loudness back: the words (energy envelope) stay
    clip["mel"] = np.clip(x, 0, 255).astype(np.uint8)
    return ("audio",)


def av_offset(rng: np.random.Generator, clip: dict) -> tuple[str, ...]:
    mel = clip["mel"]
    w = mel.shape[1]
    shift = max(1, int(round(w * rng.uniform(0.08, 0.2)))) * int(rng.choice([-1, 1]))
    quiet = mel[:, [int(np.argmin(mel.mean(0)))]]
    out = np.repeat(quiet, w, axis=1)
    if shift > 0:
        out[:, shift:] = mel[:, : w - shift]
    else:
        out[:, : w + shift] = mel[:, -shift:]
    clip["mel"] = out
    return ("sync",)


def _reorder(t: int, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.3:
        return np.arange(t)[::-1].copy()
    return np.roll(np.arange(t), int(rng.integers(max(1, t // 4), max(2, 3 * t // 4 + 1))))


def mouth_reorder(rng: np.random.Generator, clip: dict) -> tuple[str, ...]:
    faces = clip["faces"]
    t, s = faces.shape[:2]
    order = _reorder(t, rng)
    if clip.get("mouths") is not None:
        clip["mouths"] = clip["mouths"][order].copy()
    r0, r1, c0, c1 = (int(round(v * s)) for v in MOUTH_BOX)
    box = np.zeros((s, s), np.float32)
    box[r0:r1, c0:c1] = 1.0
    m = cv2.GaussianBlur(box, (0, 0), s * rng.uniform(0.01, 0.03))[..., None]
    src = faces[order].astype(np.float32)
    clip["faces"] = np.clip(faces * (1 - m) + src * m, 0, 255).astype(np.uint8)
    return ("visual", "sync")


def splice(rng: np.random.Generator, clip: dict) -> tuple[str, ...]:
    if rng.random() < 0.5 or clip.get("mel") is None:
        t = clip["faces"].shape[0]
        n = max(2, int(round(t * rng.uniform(0.2, 0.4))))
        a = int(rng.integers(0, max(1, t - n + 1)))
        if rng.random() < 0.5:
            src = np.full(n, max(0, a - 1))  # a frozen frame
        else:
            b = int(rng.integers(0, max(1, t - n + 1)))
            b = (a + n + b) % max(1, t - n + 1) if abs(b - a) < n // 2 else b
            src = np.arange(b, b + n)
        idx = np.arange(t)
        idx[a:a + n] = np.clip(src, 0, t - 1)[: len(idx[a:a + n])]
        clip["faces"] = clip["faces"][idx].copy()
        if clip.get("mouths") is not None:
            clip["mouths"] = clip["mouths"][idx].copy()
        return ("visual", "sync")
    mel = clip["mel"].copy()
    w = mel.shape[1]
    n = max(2, int(round(w * rng.uniform(0.15, 0.3))))
    a, b = (int(v) for v in rng.integers(0, max(1, w - n + 1), 2))
    if abs(a - b) < n // 2:
        b = (b + n) % max(1, w - n + 1)
    mel[:, a:a + n] = clip["mel"][:, b:b + n]
    clip["mel"] = mel
    return ("audio", "sync")


_APPLY: dict[str, Callable[[np.random.Generator, dict], tuple[str, ...]]] = {
    "face_blend": face_blend, "voice": voice, "av_offset": av_offset, "mouth_reorder": mouth_reorder,
    "splice": splice,
}
_NEEDS = {"face_blend": ("faces",), "voice": ("mel",), "av_offset": ("mel", "faces"), "mouth_reorder": ("faces",),
          "splice": ("faces",)}


def clip_key(name: str) -> int:
    """A stable integer for a clip name (Python's ``hash`` of a str changes from one process to the next)."""
    return zlib.crc32(str(name).encode("utf-8"))


def localize(rng: np.random.Generator, real: Mapping[str, Any], fake: dict) -> tuple[float, float]:
    """Keep ``fake`` only in one segment of 25-60 % of the clip; elsewhere put ``real`` back (in ``fake``, in place).

    Frame f of T sits at (f + 0.5) / T of the clip and mel column c of W at (c + 0.5) / W (``media.load_frames`` and
    the mel image span the same clip), so one segment covers the same stretch of picture and sound. At least one
    frame and one column are kept fake. Returns the segment (start, end) as fractions of the clip.
    """
    length = float(rng.uniform(0.25, 0.6))
    start = float(rng.uniform(0.0, 1.0 - length))
    end = start + length
    for key, axis in (("faces", 0), ("mouths", 0), ("mel", 1)):
        if fake.get(key) is None or real.get(key) is None:
            continue
        n = fake[key].shape[axis]
        at = (np.arange(n) + 0.5) / n
        inside = (at >= start) & (at < end)
        if not inside.any():
            inside[min(n - 1, int(start * n))] = True
        out = np.array(real[key], copy=True)
        if axis == 0:
            out[inside] = fake[key][inside]
        else:
            out[:, inside] = fake[key][:, inside]
        fake[key] = out
    return start, end


@dataclass
class PseudoFakes:
    """Turns some real clips of a batch into pseudo-fakes: each real clip gets at most one family per epoch, drawn
    with the families' probabilities (``pseudo_fakes`` in a params file, e.g. ``{face_blend: 0.15, voice: 0.1}``),
    as one of ``variants`` variants, confined to a segment with probability ``local`` (module docstring)."""

    probs: dict[str, float]
    seed: int = 0
    variants: int = 4
    local: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # the families in name order: a draw must not depend on the key order of a params file (a run's params.yaml
        # is written with sorted keys, a preset in the order it was typed; both must draw the same pseudo-fakes)
        self.probs = {f: float(self.probs[f]) for f in sorted(self.probs)}

    def draw(self, name: str, epoch: int) -> tuple[str, int] | None:
        """(family, variant) clip ``name`` gets this epoch, or None (it stays as it is)."""
        rng = np.random.default_rng((self.seed, epoch, clip_key(name), 7919))
        u, variant = rng.random(), int(rng.integers(max(1, self.variants)))
        acc = 0.0
        for family, p in self.probs.items():
            acc += p
            if u < acc:
                return family, variant
        return None

    def variant_tag(self, family: str, variant: int) -> str:
        """What a variant's content depends on besides the clip: a name for its cached embeddings."""
        return f"{family}-v{variant}-local{self.local:g}-{PSEUDO_VERSION}"

    def apply_one(self, family: str, clip: dict, name: str, variant: int = 0) -> tuple[str, ...]:
        """Apply ``family`` (variant ``variant``) to ``clip`` (a dict of numpy arrays: faces (T,S,S,3), mouths, mel
        (H,W), landmarks (T,5,2)) of the clip called ``name``; returns the branches it made fake. The arrays of
        ``clip`` are replaced, never edited in place."""
        real = {k: clip.get(k) for k in ("faces", "mouths", "mel")}
        for key in ("faces", "mouths", "mel"):
            if clip.get(key) is not None:
                clip[key] = np.array(clip[key], copy=True)
        rng = np.random.default_rng((clip_key(name), _FAMILY_ID[family], int(variant), 104729))
        # the segment has a stream of its own: a partial pseudo-fake is the whole-clip one, inside its segment
        seg_rng = np.random.default_rng((clip_key(name), _FAMILY_ID[family], int(variant), 1299709))
        local = seg_rng.random() < self.local
        branches = _APPLY[family](rng, clip)
        if local:
            clip["segment"] = localize(seg_rng, real, clip)
        self.counts[family] = self.counts.get(family, 0) + 1
        return branches

    def usable(self, name: str, clip: Mapping[str, Any]) -> bool:
        """Whether the clip has what family ``name`` needs (a clip without audio gets no voice family)."""
        return all(clip.get(k) is not None for k in _NEEDS[name]) and (
            "mel" not in _NEEDS[name] or bool(clip.get("has_audio", True)))
