"""Embedded sample dataset: synthetic talking-face clips in the FFDV layout.

`make_sample_dataset` writes a small dataset with the challenge's layout (trainset/, valset/, testset/, label
files and a test template) so that the whole pipeline can be run and tested without the real data. Every clip
is an H.264 + AAC mp4 of a face drawn with OpenCV whose mouth follows a synthesised voice. Fakes carry a real
manipulation a detector can learn. The training kinds (``TRAIN_KINDS``) appear in every split:

- ``audio``: the voice is resynthesised like a cheap vocoder (phase randomisation or spectral smearing, plus
  formant shift, band limiting or magnitude quantisation); the lips follow the manipulated sound.
- ``visual``: the face is manipulated, either a blended face swap (other skin inside a feathered ellipse, blurred
  by down/up-scaling, jittering seam) or a mouth region pasted from other frames.
- ``av_mismatch``: natural voice and natural face, but the voice is another utterance (mostly another speaker),
  so the mouth does not follow the sound.

As in FFDV, the test split also holds manipulations that training never shows (``TEST_ONLY_KINDS``, made in
``held_out_fakes.py`` by other mechanisms): ``reenact`` (a closed-mouth face opened by a jittering landmark-grid
warp), ``lpc_voice`` (an LPC source-filter vocoder with a buzzy, flattened or stepped pitch), ``lag_sync`` (the
mouth follows the voice late, by a varying delay) and ``partial`` (only a 0.5-1.5 s segment fake: new words,
a generator-decoded face with checkerboard upsampling, or both).

Identities: a face (appearance and proportions) and a voice are drawn per identity, not per clip. Train and val
draw from one pool (every val identity also appears in train); a third of the test clips use that pool too, the
other two thirds identities of the test split's own pool, never seen in train or val. ``answers/`` records the
identity of every clip (``identity``: ``p<k>`` shared pool, ``t<k>`` test only).

Nuisance parameters (resolution, fps, duration, sample rate, channels, leading silence, encoder quality, noise
level, loudness) are drawn from a stream of their own, so they are independent of the label by construction.
The answers (test labels and manipulation kinds) are written outside the data folder.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any, Iterator

import av
import cv2
import numpy as np
from scipy import ndimage

from ..core.paths import SPLIT_DIRS
from ..core.progress import progress_bar
from .face import background, blinks, build_base, draw_dynamic, draw_geometry, draw_look, ellipse_mask, head_motion
from .held_out_fakes import TEST_ONLY_KINDS, PartialFake, ReenactFake, lagged_track, lpc_vocode
from .mp4 import write_mp4
from .speech import draw_speaker, mix_audio, mouth_track, unit_rms, utterance, vocode

TRAIN_KINDS = ("real", "audio", "visual", "av_mismatch")
KINDS = TRAIN_KINDS + TEST_ONLY_KINDS
FAKE_KINDS = KINDS[1:]
# (width, height, weight): small frames are favoured so that the set stays quick to write and to decode
RESOLUTIONS = ((320, 240, 12), (480, 360, 12), (640, 360, 10), (360, 480, 8), (640, 480, 4), (1280, 720, 1))
FPS_CHOICES = (25, 30)
SAMPLE_RATES = (16000, 22050, 44100, 48000)
MIN_CLIPS = 18
MAX_LEAD_S = 0.3
CLIPS_PER_IDENTITY = 4  # about how many clips each identity of a pool has


# ----------------------------------------------------------------------------------------------------------------
# Plan: which clip is which


def _split_kinds(split: str, m: int, rng: np.random.Generator) -> list[str]:
    """The kinds of the ``m`` clips of one split (unshuffled).

    Train and val: about half fake, the training kinds in turn. Test: about half real (at least two), the fakes
    40 % training kinds and 60 % test-only kinds, each kind at least once.
    """
    train_fakes = TRAIN_KINDS[1:]
    if split != "test":
        n_fake = min(m - 1, max(3, int(round(m / 2))))
        offset = int(rng.integers(3))
        return ["real"] * (m - n_fake) + [train_fakes[(offset + i) % 3] for i in range(n_fake)]
    n_fake = max(len(FAKE_KINDS), m - max(2, int(round(m / 2))))
    n_seen = min(max(3, int(round(0.4 * n_fake))), n_fake - len(TEST_ONLY_KINDS))
    offset, offset_new = int(rng.integers(3)), int(rng.integers(len(TEST_ONLY_KINDS)))
    return (["real"] * (m - n_fake) + [train_fakes[(offset + i) % 3] for i in range(n_seen)]
            + [TEST_ONLY_KINDS[(offset_new + i) % len(TEST_ONLY_KINDS)] for i in range(n_fake - n_seen)])


def _pool(rng: np.random.Generator, size: int, m: int) -> np.ndarray:
    """``m`` draws from a pool of ``size`` identities, each drawn at least once (``m >= size``), shuffled."""
    return rng.permutation(np.concatenate([np.arange(size), rng.integers(size, size=m - size)]))


def _assign_identities(plan: list[dict[str, Any]], seed: int) -> None:
    """Set ``identity`` of every clip (its own stream, so names and kinds do not depend on it).

    Shared pool ``p<k>``: train uses every identity of it, val and a third of test draw from it. Test-only pool
    ``t<k>``: the rest of the test clips, each of its identities at least once.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1D]))
    by_split = {s: [c for c in plan if c["split"] == s] for s in SPLIT_DIRS}
    n_train = len(by_split["train"])
    shared = min(n_train, max(2, int(round((n_train + len(by_split["val"])) / CLIPS_PER_IDENTITY))))
    for clip, k in zip(by_split["train"], _pool(rng, shared, n_train)):
        clip["identity"] = f"p{k:03d}"
    test = [by_split["test"][i] for i in rng.permutation(len(by_split["test"]))]
    n_seen = int(round(len(test) / 3))
    for clips in (by_split["val"], test[:n_seen]):  # spread over the pool: cycles of it, each shuffled
        for clip, k in zip(clips, rng.permutation(np.resize(rng.permutation(shared), len(clips)))):
            clip["identity"] = f"p{k:03d}"
    own = test[n_seen:]
    for clip, k in zip(own, _pool(rng, max(1, min(len(own), int(round(len(own) / CLIPS_PER_IDENTITY)))), len(own))):
        clip["identity"] = f"t{k:03d}"


def _plan(n: int, seed: int) -> list[dict[str, Any]]:
    """Assign split, kind, identity and a random hex name to each clip index.

    About 1/2 train, 1/6 val, 1/3 test (at least 4 val and 9 test clips). The test split is larger than the
    others so that it holds the test-only kinds and, at ``n = 600``, 100 real clips (TPR at FPR 1e-2 needs them).

    Args:
        n: Number of clips.
        seed: Dataset seed.

    Returns:
        One dict per clip with index, name, split, kind, target and identity.
    """
    if n < MIN_CLIPS:
        raise ValueError(f"n must be at least {MIN_CLIPS} so that every split holds every fake kind, got {n}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5A4D]))
    n_val = max(4, int(round(n / 6)))
    n_test = max(len(FAKE_KINDS) + 2, int(round(n / 3)))
    sizes = {"train": n - n_val - n_test, "val": n_val, "test": n_test}
    plan: list[dict[str, Any]] = []
    names: set[str] = set()
    for split, m in sizes.items():
        for kind in rng.permutation(_split_kinds(split, m, rng)):
            name = ""
            while not name or name in names:
                name = rng.bytes(4).hex()
            names.add(name)
            plan.append({"name": name, "split": split, "kind": str(kind), "target": int(kind != "real")})
    for index, clip in enumerate(plan):
        clip["index"] = index
    _assign_identities(plan, seed)
    return plan


def _nuisance(rng: np.random.Generator) -> dict[str, Any]:
    """Draw the label-independent parameters of one clip (format, timing, encoder, levels, placement)."""
    weights = np.array([r[2] for r in RESOLUTIONS], dtype=np.float64)
    width, height, _ = RESOLUTIONS[int(rng.choice(len(RESOLUTIONS), p=weights / weights.sum()))]
    fps = int(rng.choice(FPS_CHOICES))
    n_frames = int(round(rng.uniform(2.0, 4.0) * fps))
    return {
        "width": width, "height": height, "fps": fps, "n_frames": n_frames, "duration": n_frames / fps,
        "sample_rate": int(rng.choice(SAMPLE_RATES)), "channels": int(rng.choice([1, 2])),
        "lead": float(rng.uniform(0.0, MAX_LEAD_S)),
        "crf": int(rng.integers(18, 29)), "audio_bitrate": int(rng.choice([64000, 96000, 128000])),
        "noise_sigma": float(rng.uniform(0.8, 3.0)),
        "speech_db": float(rng.uniform(-26.0, -17.0)), "noise_db": float(rng.uniform(-50.0, -36.0)),
        "face_frac": float(rng.uniform(0.34, 0.56)), "face_dx": float(rng.uniform(-0.14, 0.14)),
        "face_dy": float(rng.uniform(-0.05, 0.06)),
    }


# ----------------------------------------------------------------------------------------------------------------
# One clip


class _VisualFake:
    """Face manipulation of the ``visual`` fake: blended face swap or a mouth pasted from other frames."""

    def __init__(self, rng: np.random.Generator, g: dict[str, float], look: dict[str, Any], base: np.ndarray,
                 track: dict[str, np.ndarray]) -> None:
        self.rng, self.g, self.base, self.look = rng, g, base, look
        self.mode = "swap" if rng.random() < 0.7 else "mouth"
        shape = (int(g["ph"]), int(g["pw"]))
        h, cx, cy = g["h"], g["cx"], g["cy"]
        if self.mode == "swap":
            donor = draw_look(rng)
            # the donor's skin must visibly differ (the cue a detector can learn), not only by chance
            if np.abs(donor["skin"] - look["skin"]).mean() < 25:
                donor["skin"] = np.clip(look["skin"] * rng.choice([0.78, 1.2]) + rng.uniform(-10, 10, 3), 20, 250)
            self.donor_look = donor
            centre = (cx + rng.uniform(-0.01, 0.01) * h, cy + rng.uniform(0.0, 0.06) * h)
            axes = (0.8 * g["a"] * rng.uniform(0.95, 1.05), 0.41 * h * rng.uniform(0.95, 1.05))
            sigma = rng.uniform(0.008, 0.05) * h
            self.masks = [ellipse_mask(shape, (centre[0] + dx, centre[1] + dy), axes, sigma)
                          for dx, dy in rng.uniform(-0.006 * h - 0.5, 0.006 * h + 0.5, (4, 2))]
            donor_base, _ = build_base(g, donor)
            m = self.masks[0][..., None]
            shift = (base * m).sum((0, 1)) / m.sum() - (donor_base * m).sum((0, 1)) / m.sum()
            self.donor_base = donor_base + rng.uniform(0.0, 0.7) * shift  # partial colour correction
            self.scale = rng.uniform(0.3, 0.65)
            self.seam = rng.uniform(0.03, 0.08) * rng.choice([-1, 1]) if rng.random() < 0.5 else 0.0
            ys, xs = np.nonzero(self.masks[0] > 0.01)
            self.box = (max(0, ys.min() - 4), ys.max() + 5, max(0, xs.min() - 4), xs.max() + 5)
        else:
            n = len(track["open"])
            shift = int(rng.integers(max(2, n // 5), max(3, n - n // 5)))
            self.alt_open = np.roll(track["open"][::-1] if rng.random() < 0.5 else track["open"], shift)
            x0, x1 = cx - 0.17 * h, cx + 0.17 * h
            y0, y1 = g["mouth_y"] - 0.07 * h, g["mouth_y"] + 0.15 * h
            rect = np.zeros(shape, np.float32)
            cv2.rectangle(rect, (int(x0), int(y0)), (int(x1), int(y1)), 1.0, -1)
            self.masks = [cv2.GaussianBlur(rect, (0, 0), rng.uniform(0.01, 0.03) * h)]
            self.gain = rng.uniform(0.93, 1.07, 3).astype(np.float32)
            self.scale = rng.uniform(0.45, 0.8)
            self.box = (int(y0 - 0.1 * h), int(y1 + 0.1 * h), int(x0 - 0.1 * h), int(x1 + 0.1 * h))

    def apply(self, patch: np.ndarray, f: int, state: tuple[float, float, float, float]) -> np.ndarray:
        """Manipulate frame ``f`` of the face patch (uint8), given (open, width, eye, gaze) of the real face."""
        op, wd, eye, gaze = state
        if self.mode == "swap":
            src = draw_dynamic(self.donor_base, self.g, self.donor_look, op, wd, eye, gaze)
            mask = self.masks[int(self.rng.integers(len(self.masks)))] * self.rng.uniform(0.9, 1.0)
        else:
            src = draw_dynamic(self.base, self.g, self.look, float(self.alt_open[f]), wd, eye,
                                gaze).astype(np.float32) * self.gain
            mask = self.masks[0]
        y0, y1, x0, x1 = self.box
        y0, x0 = max(0, y0), max(0, x0)
        region = np.clip(src[y0:y1, x0:x1], 0, 255).astype(np.uint8)
        hh, ww = region.shape[:2]
        small = cv2.resize(region, (max(2, int(ww * self.scale)), max(2, int(hh * self.scale))),
                           interpolation=cv2.INTER_AREA)
        region = cv2.resize(small, (ww, hh), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        m = mask[y0:y1, x0:x1, None]
        out = patch.astype(np.float32)
        blended = out[y0:y1, x0:x1] * (1 - m) + region * m
        if self.mode == "swap" and self.seam:
            ring = m[..., 0] * (1 - m[..., 0]) * 4.0
            blended *= 1.0 + self.seam * ring[..., None]
        out[y0:y1, x0:x1] = blended
        return np.clip(out, 0, 255).astype(np.uint8)


def _identity(seed: int, identity: str) -> dict[str, Any]:
    """The face and voice of an identity (``p<k>`` or ``t<k>``), from a stream of its own."""
    pool, k = {"p": 0, "t": 1}[identity[0]], int(identity[1:])
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1DE, pool, k]))
    return {"look": draw_look(rng), "geometry_seed": int(rng.integers(2 ** 31)), "speaker": draw_speaker(rng)}


def _render_clip(clip: dict[str, Any], seed: int) -> dict[str, Any]:
    """Everything of one clip before encoding: frames generator, audio array and parameters.

    A clip with an ``identity`` takes that identity's face and voice (the voice's pitch and rate vary a little
    per clip); without one (callers that build the clip dict themselves) the clip draws its own, as every clip
    did before identities existed. Either way the face and voice are drawn from the clip's streams first, so
    that the rest of each stream (utterance, motion, background, manipulation) keeps its values.

    Returns:
        Dict with ``frames`` (an iterator of uint8 RGB frames), ``audio`` (float32, (channels, n)), ``params``.
    """
    ss = np.random.SeedSequence([seed, clip["index"]])
    r_nuis, r_face, r_utt, r_alt, r_fake, r_frame, r_sess, r_new = (np.random.default_rng(s) for s in ss.spawn(8))
    nz = _nuisance(r_nuis)
    kind = clip["kind"]
    w, hgt, fps, n_frames, sr = nz["width"], nz["height"], nz["fps"], nz["n_frames"], nz["sample_rate"]
    duration, lead = nz["duration"], nz["lead"]
    identity = str(clip.get("identity") or "")
    ident = _identity(seed, identity) if identity else None

    # audio that is heard; the mouth follows it except in av_mismatch
    speaker = draw_speaker(r_utt)
    if ident is not None:
        speaker = dict(ident["speaker"])
        speaker["f0"] *= float(np.exp(r_sess.normal(0.0, 0.03)))
        speaker["rate"] *= float(np.exp(r_sess.normal(0.0, 0.04)))
    monotone = kind == "audio" and r_fake.random() < 0.4
    heard = utterance(r_utt, speaker, duration, lead, sr, monotone=monotone)
    speech = heard["audio"]
    mouth_src, mouth_formants = speech, heard["formants"]
    detail = fake_params = ""
    if kind == "audio":
        speech = unit_rms(vocode(speech, sr, r_fake), lead, sr)
        mouth_src = speech
        detail = "vocoder" + ("+monotone" if monotone else "")
    elif kind == "av_mismatch":
        same_voice = r_alt.random() < 0.3
        other = dict(speaker) if same_voice else draw_speaker(r_alt)
        if not same_voice and abs(np.log(other["f0"] / speaker["f0"])) < 0.15:
            other["f0"] *= 1.25 if other["f0"] < 160 else 0.8
        seen = utterance(r_alt, other, duration, float(r_alt.uniform(0.0, MAX_LEAD_S)), sr)
        # the face mouths the utterance of `other` while the clip plays `heard`
        mouth_src, mouth_formants = seen["audio"], seen["formants"]
        detail = "same_voice" if same_voice else "other_voice"
    elif kind == "lpc_voice":
        speech, fake_params = lpc_vocode(speech, sr, r_new)  # the face keeps mouthing the real voice
        detail = "lpc"

    face_h = nz["face_frac"] * min(w, hgt)
    fx = w / 2 + nz["face_dx"] * w
    fy = np.clip(hgt * (0.47 + nz["face_dy"]), 0.62 * face_h, hgt - 0.55 * face_h)
    look = draw_look(r_face)
    g = draw_geometry(r_face, face_h)
    if ident is not None:  # the scene's lighting stays the clip's own
        look = {**ident["look"], "light": look["light"]}
        g = draw_geometry(np.random.default_rng(ident["geometry_seed"]), face_h)
    base, alpha = build_base(g, look)
    bg = background(r_face, w, hgt, (fx, fy, face_h))
    motion = head_motion(r_face, n_frames, fps, face_h)
    eyes = blinks(r_face, n_frames, fps)
    gaze = np.clip(ndimage.gaussian_filter1d(r_face.normal(0, 1, n_frames), fps * 0.5) * 3, -1, 1)

    final = unit_rms(speech, lead, sr)
    partial = PartialFake(r_new, g, nz) if kind == "partial" else None
    if partial is not None and partial.mode != "video":
        final = partial.audio(final, speaker, nz)
    audio = mix_audio(final, nz, r_nuis)
    track = mouth_track(mouth_src, mouth_formants, sr, fps, n_frames)
    fake: Any = None
    if kind == "visual":
        fake = _VisualFake(r_fake, g, look, base, track)
        detail = fake.mode
    elif kind == "reenact":
        fake = ReenactFake(r_new, g, look, base, n_frames)
        detail, fake_params = fake.mode, fake.params()
    elif kind == "lag_sync":
        track, fake_params = lagged_track(track, fps, r_new)
        detail = "varying_lag"
    elif partial is not None:
        if partial.mode == "both" and partial.new_track is not None:  # the decoded face mouths the new words
            track = {k: np.where(partial.frames, partial.new_track[k], v) for k, v in track.items()}
        fake = partial if partial.video else None
        detail, fake_params = partial.mode, partial.params()

    bg8 = np.clip(bg + 0.5, 0, 255).astype(np.uint8)
    # sensor noise as saturating uint8 add/subtract: much cheaper per frame than float arithmetic
    noise_bank = [np.rint(r_nuis.standard_normal((hgt, w, 3), dtype=np.float32) * np.float32(nz["noise_sigma"]))
                  for _ in range(4)]
    noise_bank = [(np.clip(z, 0, 255).astype(np.uint8), np.clip(-z, 0, 255).astype(np.uint8)) for z in noise_bank]

    def frames() -> Iterator[np.ndarray]:
        for f in range(n_frames):
            state = (float(track["open"][f]), float(track["width"][f]), float(eyes[f]), float(gaze[f]))
            patch = draw_dynamic(base, g, look, *state)
            if fake is not None:
                patch = fake.apply(patch, f, state)
            dx, dy, ang, sc = motion[f]
            m = cv2.getRotationMatrix2D((g["cx"], g["cy"]), float(ang), float(sc))
            m[:, 2] += (fx + dx - g["cx"], fy + dy - g["cy"])
            corners = np.array([[0, 0, 1], [g["pw"], 0, 1], [0, g["ph"], 1], [g["pw"], g["ph"], 1]]) @ m.T
            x0, y0 = max(0, int(corners[:, 0].min()) - 1), max(0, int(corners[:, 1].min()) - 1)
            x1, y1 = min(w, int(corners[:, 0].max()) + 2), min(hgt, int(corners[:, 1].max()) + 2)
            frame = bg8.copy()
            if x1 > x0 and y1 > y0:
                m[:, 2] -= (x0, y0)
                size = (x1 - x0, y1 - y0)
                warped = cv2.warpAffine(patch, m, size, flags=cv2.INTER_LINEAR)
                al = cv2.warpAffine(alpha, m, size, flags=cv2.INTER_LINEAR)
                frame[y0:y1, x0:x1] = cv2.blendLinear(warped, frame[y0:y1, x0:x1], al, 1.0 - al)
            pos, neg = noise_bank[int(r_frame.integers(len(noise_bank)))]
            yield cv2.subtract(cv2.add(frame, pos), neg)

    params = {k: v for k, v in nz.items() if k not in ("face_dx", "face_dy")}
    params.update({"face_x": round(float(fx), 2), "face_y": round(float(fy), 2), "face_h": round(float(face_h), 2),
                   "detail": detail, "fake_params": fake_params, "identity": identity,
                   "identity_pool": {"p": "train_val", "t": "test_only"}.get(identity[:1], ""),
                   "seg_start": partial.start if partial is not None else "",
                   "seg_end": partial.end if partial is not None else ""})
    return {"frames": frames(), "audio": audio, "params": params}


def _encode(path: Path, frames: Iterator[np.ndarray], audio: np.ndarray, p: dict[str, Any]) -> None:
    """Write H.264 video and AAC audio to an mp4 with PyAV (libx264, single-threaded so output is repeatable)."""
    # veryfast with the cheapest motion search: a third quicker at the same size (mbtree, kept on, is what stops
    # the sensor noise from inflating the files); the "fast" AAC coder is about 3x quicker than the default
    # two-loop search, at the same bitrate
    write_mp4(path, frames, audio, width=p["width"], height=p["height"], fps=p["fps"], sample_rate=p["sample_rate"],
              vcodec=_video_codec() or "libx264",
              video_options={"crf": str(p["crf"]), "preset": "veryfast", "threads": "1", "x264-params": "me=dia:subme=1"},
              audio_options={"aac_coder": "fast"}, audio_bitrate=p["audio_bitrate"], container_format="mp4")


def _video_codec() -> str | None:
    """The H.264 encoder PyAV offers (libx264 in the PyPI wheels), or None when it has none."""
    for name in ("libx264", "h264"):
        if name in av.codecs_available:
            return name
    return None


def _encode_ffmpeg(path: Path, frames: Iterator[np.ndarray], audio: np.ndarray, p: dict[str, Any]) -> None:
    """Fallback writer: raw RGB frames piped to the static ffmpeg of imageio-ffmpeg, the audio from a wav."""
    import subprocess
    import tempfile
    import wave

    import imageio_ffmpeg

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "audio.wav"
        with wave.open(str(wav), "wb") as fh:
            fh.setnchannels(audio.shape[0])
            fh.setsampwidth(2)
            fh.setframerate(p["sample_rate"])
            fh.writeframes((np.clip(audio.T, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes())
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{p['width']}x{p['height']}", "-r", str(p["fps"]),
               "-i", "-", "-i", str(wav), "-map", "0:v", "-map", "1:a",
               "-c:v", "libx264", "-preset", "veryfast", "-crf", str(p["crf"]), "-x264-params", "me=dia:subme=1",
               "-threads", "1", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", str(p["audio_bitrate"]),
               "-f", "mp4", str(path)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdin is not None
        try:
            for rgb in frames:
                proc.stdin.write(np.ascontiguousarray(rgb).tobytes())
        finally:
            proc.stdin.close()
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            proc.wait()
        if proc.returncode != 0:
            raise RuntimeError(f"ffmpeg failed on {path.name}: {err.strip()[-500:]}")


def _make_clip(job: tuple[dict[str, Any], int, str]) -> dict[str, Any]:
    """Pool worker: render and encode one clip (atomically); errors are returned, not raised."""
    clip, seed, out_dir = job
    path = Path(out_dir) / SPLIT_DIRS[clip["split"]] / f"{clip['name']}.mp4"
    tmp = path.with_name(path.name + ".part")
    row = dict(clip)
    try:
        rendered = _render_clip(clip, seed)
        write = _encode if _video_codec() else _encode_ffmpeg
        write(tmp, rendered["frames"], rendered["audio"], rendered["params"])
        os.replace(tmp, path)
        row.update(rendered["params"])
        row["error"] = ""
    except Exception as exc:  # one broken clip must not lose the others; it is reported at the end
        tmp.unlink(missing_ok=True)
        row["error"] = f"{type(exc).__name__}: {exc}"
    return row


def _init_worker() -> None:
    cv2.setNumThreads(1)  # the pool already uses every core


# ----------------------------------------------------------------------------------------------------------------
# Public API


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    """Write a CSV atomically (tmp name + os.replace)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)


def make_sample_dataset(out: Path, n: int = 100, seed: int = 0, progress: bool = True,
                        workers: int | None = None) -> dict[str, Any]:
    """Write a small FFDV-layout dataset of synthetic talking-face clips, real and fake.

    Layout: ``out/data/{trainset,valset,testset}/*.mp4``, ``out/data/train_label.txt`` and ``val_label.txt``
    (``video_name,target``, 1 = fake), ``out/data/test_template.csv`` (``video_name,score``, score empty, shuffled
    rows). Answers lie outside the data folder: ``out/answers/test_label.txt``, ``out/answers/manipulations.csv``
    (``video_name,split,target,kind,identity``) and ``out/answers/clip_params.csv`` (every drawn parameter, for
    audits: identity and its pool, format, levels, face placement, ``detail`` (the manipulation's mode),
    ``fake_params`` (``k=v;...``) and ``seg_start`` / ``seg_end`` (seconds) of the ``partial`` fakes).

    Args:
        out: Output folder; ``data/`` and ``answers/`` are created in it. Old mp4s of the split folders are removed.
        n: Number of clips (at least ``MIN_CLIPS``); about 1/2 train, 1/6 val, 1/3 test, half of each split fake;
            the test split's fakes are 40 % training kinds and 60 % test-only kinds.
        seed: Seed; the same seed gives the same names, labels, frames and audio samples.
        progress: Show a progress bar (core.progress).
        workers: Processes (default: usable cores, at most n).

    Returns:
        Dict with ``data_root`` and ``answers_dir`` (Paths), ``counts`` (``{split: {kind: count, "total": count}}``),
        ``errors`` (list of ``(video_name, message)`` for clips that could not be written; those are left out of
        the label files) and ``seconds``.
    """
    t0 = time.time()
    out = Path(out)
    plan = _plan(n, seed)
    data_root, answers = out / "data", out / "answers"
    keep = {f"{c['name']}.mp4" for c in plan}
    for sub in SPLIT_DIRS.values():
        (data_root / sub).mkdir(parents=True, exist_ok=True)
        for old in [*(data_root / sub).glob("*.mp4"), *(data_root / sub).glob("*.mp4.part")]:
            if old.name not in keep:  # clips of an earlier run with other names, and half-written files
                old.unlink()
    answers.mkdir(parents=True, exist_ok=True)

    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = max(1, min(int(workers), n))
    jobs = [(c, seed, str(data_root)) for c in plan]
    rows: list[dict[str, Any]] = []
    bar = progress_bar(total=n, desc="sample clips", unit="clip", disable=not progress)
    if workers == 1:
        _init_worker()
        for job in jobs:
            rows.append(_make_clip(job))
            bar.update()
    else:
        # spawn, not fork: a fork after OpenCV/BLAS started their threads can deadlock the workers
        with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            for row in pool.imap_unordered(_make_clip, jobs, chunksize=1):
                rows.append(row)
                bar.update()
    bar.close()
    rows.sort(key=lambda r: r["index"])
    errors = [(r["name"], r["error"]) for r in rows if r["error"]]
    ok = [r for r in rows if not r["error"]]

    for split, fname in (("train", "train_label.txt"), ("val", "val_label.txt")):
        _write_csv(data_root / fname, ["video_name", "target"],
                   [[f"{r['name']}.mp4", r["target"]] for r in ok if r["split"] == split])
    test = [r for r in ok if r["split"] == "test"]
    order = np.random.default_rng(np.random.SeedSequence([seed, 0x7E57])).permutation(len(test))
    _write_csv(data_root / "test_template.csv", ["video_name", "score"],
               [[f"{test[i]['name']}.mp4", ""] for i in order])
    _write_csv(answers / "test_label.txt", ["video_name", "target"], [[f"{r['name']}.mp4", r["target"]] for r in test])
    _write_csv(answers / "manipulations.csv", ["video_name", "split", "target", "kind", "identity"],
               [[f"{r['name']}.mp4", r["split"], r["target"], r["kind"], r["identity"]] for r in ok])
    param_cols = ["identity", "identity_pool", "width", "height", "fps", "n_frames", "duration", "sample_rate",
                  "channels", "lead", "crf", "audio_bitrate", "noise_sigma", "speech_db", "noise_db", "face_frac",
                  "face_x", "face_y", "face_h", "detail", "fake_params", "seg_start", "seg_end"]
    _write_csv(answers / "clip_params.csv", ["video_name", "split", "target", "kind"] + param_cols,
               [[f"{r['name']}.mp4", r["split"], r["target"], r["kind"]]
                + [round(r[c], 4) if isinstance(r[c], float) else r[c] for c in param_cols] for r in ok])
    counts: dict[str, dict[str, int]] = {}
    for split in SPLIT_DIRS:
        sel = [r["kind"] for r in ok if r["split"] == split]
        counts[split] = {k: sel.count(k) for k in KINDS}
        counts[split]["total"] = len(sel)
    if errors:
        print(f"sample-data: {len(errors)} clip(s) failed and were left out:")
        for name, msg in errors:
            print(f"  {name}.mp4: {msg}")
    return {"data_root": data_root, "answers_dir": answers, "counts": counts, "errors": errors,
            "seconds": round(time.time() - t0, 2)}
