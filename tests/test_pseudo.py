"""Pseudo-fakes (``ffdv_utils.pseudo``): deterministic, each family changes only what it says, only real clips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ffdv_utils.features.batches import ClipDataset
from ffdv_utils.pseudo import FAMILIES, PseudoFakes, family_of
from ffdv_utils.pseudo.families import MOUTH_BOX


def _clip(seed: int = 0, t: int = 8, s: int = 64) -> dict:
    """A textured clip: face crops with a bright ellipse "face", a mel image with speech-like columns."""
    rng = np.random.default_rng(seed)
    faces = rng.integers(40, 90, (t, s, s, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:s, 0:s]
    inner = ((xx - s / 2) / (0.3 * s)) ** 2 + ((yy - 0.55 * s) / (0.38 * s)) ** 2 < 1
    faces[:, inner] += np.uint8(120)
    for f in range(t):  # a mouth that opens and closes
        r = int(2 + 4 * abs(np.sin(f / 2)))
        faces[f, int(0.75 * s) - r:int(0.75 * s) + r, int(0.42 * s):int(0.58 * s)] = 10
    mel = np.clip(rng.normal(90, 25, (48, 96)) + 60 * np.sin(np.arange(96) / 5)[None, :], 0, 255).astype(np.uint8)
    mouths = rng.integers(0, 255, (t, 24, 24, 3), dtype=np.uint8)
    return {"faces": faces, "mel": mel, "mouths": mouths, "has_audio": True}


def _run(name: str, clip: dict, seed: int = 3, key: str = "clip5", variant: int = 0,
         local: float = 0.0) -> tuple[dict, tuple[str, ...]]:
    out = dict(clip)
    branches = PseudoFakes({name: 1.0}, seed=seed, local=local).apply_one(name, out, key, variant)
    return out, branches


@pytest.mark.parametrize("name", list(FAMILIES))
def test_a_family_is_deterministic_for_clip_and_variant(name: str) -> None:
    clip = _clip()
    a, _ = _run(name, clip)
    b, _ = _run(name, clip, seed=4)  # a variant's content does not depend on the training seed (cached embeddings)
    changed = [k for k in ("faces", "mel", "mouths") if not np.array_equal(a[k], clip[k])]
    assert changed, f"{name} changed nothing"
    assert all(np.array_equal(a[k], b[k]) for k in ("faces", "mel", "mouths"))
    others = [_run(name, clip, variant=1)[0], _run(name, clip, key="clip6")[0]]
    assert all(any(not np.array_equal(a[k], o[k]) for k in changed) for o in others)  # another variant, another clip
    assert np.array_equal(clip["faces"], _clip()["faces"])  # the input arrays are never edited in place


def test_the_draw_is_deterministic_for_seed_epoch_and_clip_name() -> None:
    pf = PseudoFakes({"voice": 0.3, "splice": 0.3}, seed=1, variants=4)
    draws = [pf.draw(f"c{i}", 0) for i in range(200)]
    assert draws == [PseudoFakes({"voice": 0.3, "splice": 0.3}, seed=1, variants=4).draw(f"c{i}", 0)
                     for i in range(200)]
    assert draws != [pf.draw(f"c{i}", 1) for i in range(200)]  # a new draw every epoch
    assert draws != [PseudoFakes({"voice": 0.3, "splice": 0.3}, seed=2, variants=4).draw(f"c{i}", 0)
                     for i in range(200)]
    made = [d for d in draws if d is not None]
    assert 0.45 < len(made) / len(draws) < 0.75  # the probabilities add up to 0.6
    assert {d[1] for d in made} == {0, 1, 2, 3} and {d[0] for d in made} == {"voice", "splice"}


def test_the_draw_does_not_depend_on_the_order_families_are_listed_in() -> None:
    # a preset lists families as typed, a run's params.yaml sorted: the same settings must draw the same pseudo-fakes
    typed = PseudoFakes({"voice": 0.2, "face_blend": 0.2, "splice": 0.2}, seed=3)
    sorted_ = PseudoFakes({"face_blend": 0.2, "splice": 0.2, "voice": 0.2}, seed=3)
    draws = [typed.draw(f"c{i}", 2) for i in range(300)]
    assert draws == [sorted_.draw(f"c{i}", 2) for i in range(300)]
    assert {d[0] for d in draws if d is not None} == {"voice", "face_blend", "splice"}


@pytest.mark.parametrize("name", ["face_blend", "voice", "av_offset", "mouth_reorder"])
def test_a_partial_pseudo_fake_changes_one_segment_only(name: str) -> None:
    clip = _clip(t=16)
    for variant in range(4):
        whole, _ = _run(name, clip, variant=variant)
        part, _ = _run(name, clip, variant=variant, local=1.0)
        start, end = part["segment"]
        assert 0.25 - 1e-9 <= end - start <= 0.6 + 1e-9 and 0 <= start and end <= 1
        t, w = clip["faces"].shape[0], clip["mel"].shape[1]
        frames_in = ((np.arange(t) + 0.5) / t >= start) & ((np.arange(t) + 0.5) / t < end)
        cols_in = ((np.arange(w) + 0.5) / w >= start) & ((np.arange(w) + 0.5) / w < end)
        # outside the segment: the real clip; inside: the whole-clip pseudo-fake
        assert np.array_equal(part["faces"][~frames_in], clip["faces"][~frames_in])
        assert np.array_equal(part["faces"][frames_in], whole["faces"][frames_in])
        assert np.array_equal(part["mouths"][~frames_in], clip["mouths"][~frames_in])
        assert np.array_equal(part["mel"][:, ~cols_in], clip["mel"][:, ~cols_in])
        assert np.array_equal(part["mel"][:, cols_in], whole["mel"][:, cols_in])
        assert any(not np.array_equal(part[k], clip[k]) for k in ("faces", "mel", "mouths"))


def test_face_blend_changes_only_the_inner_face() -> None:
    clip = _clip()
    out, branches = _run("face_blend", clip)
    assert branches == ("visual",)
    assert np.array_equal(out["mel"], clip["mel"]) and np.array_equal(out["mouths"], clip["mouths"])
    diff = np.abs(out["faces"].astype(int) - clip["faces"].astype(int)).max(axis=(0, 3))
    s = diff.shape[0]
    assert diff[s // 2 - 4:s // 2 + 4, s // 2 - 4:s // 2 + 4].mean() > 3  # the centre is blended
    corners = np.concatenate([diff[:5, :5].ravel(), diff[:5, -5:].ravel(), diff[-5:, :5].ravel(), diff[-5:, -5:].ravel()])
    assert corners.max() == 0  # far outside the ellipse nothing moves


def test_voice_changes_the_spectrum_but_keeps_the_loudness_of_every_column() -> None:
    clip = _clip()
    for variant in range(6):  # every op mix the family can draw
        out, branches = _run("voice", clip, variant=variant)
        assert branches == ("audio",) and np.array_equal(out["faces"], clip["faces"])
        assert np.abs(out["mel"].astype(int) - clip["mel"].astype(int)).mean() > 1
        env, env0 = out["mel"].astype(float).mean(0), clip["mel"].astype(float).mean(0)
        assert np.corrcoef(env, env0)[0, 1] > 0.97, variant  # the words: the energy envelope stays


def test_av_offset_moves_the_sound_against_the_picture() -> None:
    clip = _clip()
    out, branches = _run("av_offset", clip)
    assert branches == ("sync",) and np.array_equal(out["faces"], clip["faces"])
    mel, new = clip["mel"], out["mel"]
    shifts = [k for k in range(-30, 31) if k and (np.array_equal(new[:, k:], mel[:, :-k]) if k > 0
                                                   else np.array_equal(new[:, :k], mel[:, -k:]))]
    assert len(shifts) == 1 and 0.08 * 96 - 1 <= abs(shifts[0]) <= 0.2 * 96 + 1


def test_mouth_reorder_touches_the_mouth_only() -> None:
    clip = _clip()
    out, branches = _run("mouth_reorder", clip)
    assert set(branches) == {"visual", "sync"} and np.array_equal(out["mel"], clip["mel"])
    s = clip["faces"].shape[1]
    diff = np.abs(out["faces"].astype(int) - clip["faces"].astype(int)).max(axis=(0, 3))
    r0, r1, c0, c1 = (int(v * s) for v in MOUTH_BOX)
    assert diff[r0:r1, c0:c1].max() > 0 and diff[: r0 - 6].max() == 0 and diff[:, : c0 - 6].max() == 0
    assert sorted(map(bytes, out["mouths"])) == sorted(map(bytes, clip["mouths"]))  # the same mouths, reordered
    assert not np.array_equal(out["mouths"], clip["mouths"])


def test_splice_replaces_one_run_of_frames_or_one_span_of_the_mel() -> None:
    clip = _clip(t=16)
    kinds = set()
    for variant in range(8):
        out, branches = _run("splice", clip, variant=variant)
        if "visual" in branches:
            same = [np.array_equal(out["faces"][f], clip["faces"][f]) for f in range(16)]
            changed = np.flatnonzero(~np.array(same))
            assert len(changed) and changed.max() - changed.min() + 1 <= 0.4 * 16 + 1  # one contiguous run
            assert np.array_equal(out["mel"], clip["mel"])
        else:
            cols = np.flatnonzero((out["mel"] != clip["mel"]).any(0))
            assert len(cols) and cols.max() - cols.min() + 1 <= 0.3 * 96 + 1
            assert np.array_equal(out["faces"], clip["faces"])
        kinds.add(branches)
    assert len(kinds) == 2  # both modalities get spliced


def test_the_loader_turns_only_real_clips_into_pseudo_fakes_with_branch_targets() -> None:
    n, t, s = 12, 4, 48
    rng = np.random.default_rng(0)
    targets = np.array([0, 1] * (n // 2), np.float32)
    faces = rng.integers(0, 255, (n, t, s, s, 3), dtype=np.uint8)
    mels = rng.integers(0, 255, (n, 32, 64), dtype=np.uint8)
    pseudo = PseudoFakes({"face_blend": 0.5, "voice": 0.5}, seed=1)
    ds = ClipDataset([f"c{i}" for i in range(n)], targets, mels=mels, faces=faces, pseudo=pseudo)
    ds.embeddings = {"face_emb": np.zeros((n, t, 8), np.float16)}
    batch = ds.get_batch(list(range(n)), epoch=0)
    fam = batch["pseudo_family"]
    assert all(fam[i] == "" for i in range(n) if targets[i] == 1)  # fakes stay as they are
    made = [i for i in range(n) if fam[i]]
    assert made and all(targets[i] == 0 for i in made) and set(fam[i] for i in made) == {"face_blend", "voice"}
    for i in range(n):
        changed_faces = not np.array_equal(batch["faces"][i].permute(0, 2, 3, 1).numpy(), faces[i])
        changed_mel = not np.array_equal(batch["mel"][i, 0].numpy(), mels[i])
        assert changed_faces == (fam[i] == "face_blend") == bool(batch["face_stale"][i])
        assert changed_mel == (fam[i] == "voice") == bool(batch["mel_stale"][i])
        assert float(batch["target"][i]) == (1.0 if fam[i] or targets[i] else 0.0)
        if fam[i]:
            assert float(batch["target_visual"][i]) == float(fam[i] == "face_blend")
            assert float(batch["target_audio"][i]) == float(fam[i] == "voice")
            assert float(batch["target_sync"][i]) == 0.0
    again = ds.get_batch(list(range(n)), epoch=0)
    assert torch.equal(again["faces"], batch["faces"]) and torch.equal(again["mel"], batch["mel"])
    assert torch.equal(ds[made[0]]["faces"], batch["faces"][made[0]])  # an item is its batch row
    other = ds.get_batch(list(range(n)), epoch=1)["pseudo_family"]
    assert other != fam  # a new draw every epoch
    # the draw follows the clip, not its row: the same clips in another order get the same pseudo-fakes
    order = list(range(n))[::-1]
    shuffled = ClipDataset([f"c{i}" for i in order], targets[order], mels=mels[order], faces=faces[order],
                           pseudo=PseudoFakes({"face_blend": 0.5, "voice": 0.5}, seed=1))
    again = shuffled.get_batch(list(range(n)), epoch=0)
    assert again["pseudo_family"] == fam[::-1]
    assert torch.equal(again["faces"], batch["faces"].flip(0)) and torch.equal(again["mel"], batch["mel"].flip(0))


def test_pseudo_fake_settings_are_checked() -> None:
    assert family_of({"pseudo_fakes": {"voice": 0.2, "face_blend": 0.0}}) == {"voice": 0.2}
    assert family_of({"pseudo_fakes": {"voice": 0.2}, "pseudo_fakes_off": ["voice"]}) == {}
    with pytest.raises(ValueError, match="unknown pseudo-fake family"):
        family_of({"pseudo_fakes": {"deepfake": 0.2}})
    with pytest.raises(ValueError, match="add up to"):
        family_of({"pseudo_fakes": {"voice": 0.7, "splice": 0.6}})
