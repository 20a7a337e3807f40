"""Models: every model type trains a step on tiny tensors; MaRLe's losses and masks; the 200M rule; local weights."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ffdv_utils.features.batches import ClipDataset, batch_loader
from ffdv_utils.models.backbones import create_backbone, resolve_pretrained
from ffdv_utils.models.layers import noisy_or_logit
from ffdv_utils.models.marle import (
    MarleModel,
    RegionAttention,
    diversity_loss,
    relation_mask,
    temporal_consistency_loss,
)
from ffdv_utils.models.registry import build_model, model_inputs, parameter_count
from ffdv_utils.models.rules import MAX_PARAMS, ModelRuleError, count_parameters
from ffdv_utils.models.sync import (
    lip_sync_cue,
    mouth_spread,
    sample_at_frames,
    speech_energy,
)
from ffdv_utils.training.loop import TRAIN_DEFAULTS, fit
from ffdv_utils.training.losses import total_loss

TINY = {"model": "test_resnet", "pretrained": False}
CASES = [
    {"model_type": "audio"},
    {"model_type": "visual", "aggregate": "mean"},
    {"model_type": "visual", "aggregate": "max"},
    {"model_type": "visual", "aggregate": "topk", "topk": 2},
    {"model_type": "visual", "aggregate": "attention"},
    {"model_type": "fusion"},
    {"model_type": "fusion", "sync": False, "modality_dropout": 0.5},
    {"model_type": "fusion", "fusion_head": "linear"},
    {"model_type": "fusion", "fusion_head": "or"},
    {"model_type": "marle"},
    {"model_type": "marle", "marle_mask": "random", "marle_audio": "both"},
    {"model_type": "marle", "marle_mask": "none", "marle_audio": "sync", "marle_stage": 3},
]


def tiny_batch(b: int = 2, t: int = 4, size: int = 32, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"mel": torch.randn(b, 3, size, size, generator=g), "faces": torch.randn(b, t, 3, size, size, generator=g),
            "has_audio": torch.ones(b), "target": torch.tensor([0.0, 1.0] * (b // 2))}


@pytest.mark.parametrize("over", CASES, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_forward_and_one_training_step(over: dict) -> None:
    torch.manual_seed(0)
    params = {**TRAIN_DEFAULTS, **TINY, **over}
    model = build_model(params)
    batch = tiny_batch()
    model.train()
    out = model(batch)
    assert out["logit"].shape == (2,)
    assert torch.isfinite(out["logit"]).all()
    if over["model_type"] == "marle":
        assert out["aux_loss"].ndim == 0 and torch.isfinite(out["aux_loss"])
        assert set(out["aux_terms"]) == {"diversity", "temporal"}
    loss = total_loss(out, batch["target"], params)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    loss.backward()
    opt.step()
    changed = sum(not torch.equal(a, p.detach()) for a, p in zip(before, model.parameters()))
    assert changed > len(before) // 2, "most parameters should receive a gradient"
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(batch)["logit"]).all()
    assert model_inputs(model) == (("faces",) if over["model_type"] == "visual" or
                                          (over["model_type"] == "marle" and "marle_audio" not in over)
                                          else ("mel",) if over["model_type"] == "audio" else ("mel", "faces"))


@pytest.mark.slow
def test_fit_runs_each_model_type_on_in_memory_data(tmp_path, monkeypatch) -> None:
    """The real loop (datasets -> prepare_batch -> augment -> model -> loss -> metrics) for fusion and MaRLe: the
    weights move, and the reported validation metrics are those of the saved checkpoint's scores."""
    from sklearn.metrics import roc_auc_score

    from ffdv_utils.models.checkpoint import load_model
    from ffdv_utils.training.evaluate import predict_loader
    from ffdv_utils.training.runtime import seed_everything

    monkeypatch.setenv("FFDV_OUTPUTS", str(tmp_path))
    rng = np.random.default_rng(0)
    n = 8
    mels = rng.integers(0, 255, (n, 32, 32), dtype=np.uint8)
    faces = rng.integers(0, 255, (n, 4, 32, 32, 3), dtype=np.uint8)
    targets = np.array([0, 1] * (n // 2), np.float32)
    for kind in ("fusion", "marle"):
        params = {**TRAIN_DEFAULTS, **TINY, "model_type": kind, "marle_audio": "sync", "epochs": 1,
                  "batch_size": 4, "progress": False, "resume": False, "run_name": f"t-{kind}",
                  "select_metric": "last", "amp": False}
        tr = ClipDataset([f"c{i}" for i in range(n)], targets, mels=mels, faces=faces, av_swap_prob=0.5)
        va = ClipDataset([f"v{i}" for i in range(n)], targets, mels=mels, faces=faces)
        result = fit(params, None, tr, va)
        assert result["n_params"] == count_parameters(build_model(params))
        seed_everything(int(params["seed"]))  # fit's initial weights: the same seed, then build_model
        init = dict(build_model(params).named_parameters())
        ckpt = tmp_path / f"t-{kind}" / "checkpoints" / "best.pt"
        model, _ = load_model(ckpt, device="cpu")
        trained = dict(model.named_parameters())
        moved = [k for k, v in init.items() if not torch.equal(v, trained[k])]
        assert len(moved) > len(init) // 2, f"{kind}: only {len(moved)} of {len(init)} parameters changed"
        val = pd.read_csv(tmp_path / f"t-{kind}" / "val_predictions.csv")
        assert val.video_name.tolist() == va.names
        assert result["val_auc"] == pytest.approx(roc_auc_score(val.target, val.score), abs=1e-12)
        _, scores = predict_loader(model, batch_loader(va, 64), torch.device("cpu"))
        np.testing.assert_allclose(val.score, scores, rtol=0, atol=1e-6)  # the checkpoint's own scores


def test_av_swap_labels_the_pair_fake_and_keeps_each_branch_truth() -> None:
    n = 6
    mels = np.stack([np.full((4, 4), i, np.uint8) for i in range(n)])
    faces = np.zeros((n, 2, 4, 4, 3), np.uint8)
    targets = np.array([0, 1, 0, 1, 0, 0], np.float32)
    ds = ClipDataset([str(i) for i in range(n)], targets, mels=mels, faces=faces, av_swap_prob=1.0)
    for i in range(n):
        item = ds[i]
        src = int(item["mel"][0, 0, 0])
        assert src != i  # another clip's audio
        assert float(item["target"]) == 1.0
        assert float(item["target_audio"]) == targets[src] and float(item["target_visual"]) == targets[i]
        assert float(item["target_sync"]) == 1.0
    batch = ds.get_batch([0, 1, 2])
    assert torch.equal(batch["target_sync"], torch.ones(3))
    untouched = ClipDataset([str(i) for i in range(n)], targets, mels=mels, faces=faces, av_swap_prob=1e-9)
    sync = torch.stack([untouched[i]["target_sync"] for i in range(n)])
    assert torch.equal(sync[targets == 0], torch.zeros(4)) and sync[targets == 1].isnan().all()  # unknown
    out = {"logit": torch.zeros(2), "branch_logits": {"audio": torch.full((2,), 5.0), "visual": torch.zeros(2)}}
    p = {**TRAIN_DEFAULTS, "branch_loss": 1.0}
    fake = torch.ones(2)
    own = total_loss(out, fake, p, {"audio": torch.zeros(2)})  # the audio branch is judged on its own truth
    assert own > total_loss(out, fake, p) + 4.0
    out["branch_logits"]["sync"] = torch.full((2,), 5.0)
    out["explicit_branches"] = ("sync",)
    base = total_loss(out, fake, p)  # no sync target given: the sync branch adds nothing
    assert torch.isclose(base, total_loss({**out, "branch_logits": {
        k: v for k, v in out["branch_logits"].items() if k != "sync"}}, fake, p))
    half = total_loss(out, fake, p, {"sync": torch.tensor([0.0, float("nan")])})
    assert half > base + 4.0  # only the item with a sync target counts


def test_noisy_or_logit_is_the_probability_that_any_branch_fires() -> None:
    z = torch.tensor([[0.3, -1.2, 2.0], [-4.0, -4.0, -4.0]])
    expected = 1 - (1 - torch.sigmoid(z)).prod(1)
    assert torch.allclose(torch.sigmoid(noisy_or_logit(z)), expected, atol=1e-5)
    off = noisy_or_logit(z, torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]))
    assert torch.allclose(torch.sigmoid(off[0]), 1 - (1 - torch.sigmoid(z[0, :2])).prod(), atol=1e-5)
    model = build_model({**TINY, "model_type": "fusion", "fusion_head": "or"}).eval()
    with torch.no_grad():
        p0 = torch.sigmoid(model(tiny_batch())["logit"])
    assert torch.allclose(p0, torch.full_like(p0, 0.5), atol=0.15)  # branches start low, the clip score near 0.5


@pytest.mark.parametrize("over", [{"model_type": "fusion"}, {"model_type": "marle", "marle_audio": "mel"}])
def test_grad_cam_maps_for_mel_and_faces(over: dict) -> None:
    from ffdv_utils.training.gradcam import grad_cam

    torch.manual_seed(0)
    model = build_model({**TINY, **over})
    batch = tiny_batch(t=3, size=32)
    cams = grad_cam(model, batch)
    assert cams["mel"].shape == (2, 32, 32) and cams["faces"].shape == (2, 3, 32, 32)
    for key in ("mel", "faces"):
        assert np.isfinite(cams[key]).all() and cams[key].min() >= 0 and cams[key].max() <= 1 + 1e-6
    assert all(p.grad is None for p in model.parameters())  # explaining leaves no gradients behind


def test_diversity_loss_decreases_when_optimised() -> None:
    torch.manual_seed(0)
    att = RegionAttention(channels=16, n_regions=4, dim=8)
    fmap = torch.rand(6, 16, 5, 5)
    opt = torch.optim.Adam(att.parameters(), lr=0.05)
    losses = []
    for _ in range(40):
        v, _ = att(fmap)
        loss = diversity_loss(v)
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_diversity_and_temporal_losses_on_known_inputs() -> None:
    eye = torch.eye(3).expand(2, 3, 3)  # orthogonal regions
    assert float(diversity_loss(eye)) == pytest.approx(0.0, abs=1e-6)
    same = torch.ones(2, 3, 4)  # identical regions: every off-diagonal cosine is 1
    assert float(diversity_loss(same)) == pytest.approx(1.0, abs=1e-6)
    still = torch.randn(1, 1, 3, 4).expand(2, 5, 3, 4)
    assert float(temporal_consistency_loss(still)) == pytest.approx(0.0, abs=1e-6)
    assert float(temporal_consistency_loss(torch.randn(2, 5, 3, 4))) > 0.1


def test_relation_mask_rules() -> None:
    rel = torch.tensor([[9.0, 1.0, 5.0], [2.0, 9.0, 7.0], [3.0, 6.0, 9.0]])
    m = relation_mask(rel, "min", ratio=0.5)  # 6 off-diagonal entries: the 3 smallest (1, 2, 3) go
    assert m.tolist() == [[False, True, False], [True, False, False], [True, False, False]]
    assert not relation_mask(rel, "none", 0.5).any()
    big = torch.randn(64, 6, 6)
    r = relation_mask(big, "random", 0.3, generator=torch.Generator().manual_seed(0))
    assert not r.diagonal(dim1=-2, dim2=-1).any()
    assert 0.2 < r.float().sum() / (64 * 30) < 0.4
    with pytest.raises(ValueError):
        relation_mask(rel, "max", 0.5)


def test_masking_only_in_training() -> None:
    torch.manual_seed(0)
    model = MarleModel("test_resnet", n_regions=4, dim=8, hidden=8, mask="random", mask_ratio=0.9)
    v = torch.randn(2, 3, 4, 8)
    model.eval()
    a1, a2 = model.adjacency(v), model.adjacency(v)
    assert torch.equal(a1, a2) and (a1 > 0).all()
    model.train()
    masked = model.adjacency(v)
    assert (masked == 0).any()
    assert torch.allclose(masked.sum(-1), torch.ones(2, 3, 4))


def test_sample_at_frames_hits_slice_centres() -> None:
    ramp = torch.arange(16, dtype=torch.float32).view(1, 1, 16)  # value == column index
    got = sample_at_frames(ramp, 4)[0, :, 0]
    assert torch.allclose(got, torch.tensor([1.5, 5.5, 9.5, 13.5]))


def _talking(open_: torch.Tensor, loud: torch.Tensor, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Faces whose lip box gets a dark hole of size ``open_`` per frame, and a mel image as loud as ``loud``."""
    b, t = open_.shape
    faces = torch.full((b, t, 3, size, size), 0.8)
    r0, c0 = int(0.62 * size), int(0.3 * size)
    for i in range(b):
        for j in range(t):
            k = int(round(float(open_[i, j]) * 6))
            faces[i, j, :, r0 + 2:r0 + 2 + k, c0 + 2:c0 + 2 + 2 * k] = -1.0
    width = 4 * t  # the mel image spans the clip; frame j sits at (j + 0.5) / t of its width
    mel = loud.repeat_interleave(4, dim=1).view(b, 1, 1, width).expand(b, 3, size, width).clone()
    return mel, faces


def test_lip_sync_cue_follows_mouth_and_sound() -> None:
    g = torch.Generator().manual_seed(0)
    talk = torch.rand(6, 12, generator=g)
    mel, faces = _talking(talk, talk)
    in_sync = lip_sync_cue(mel, faces)
    assert (in_sync > 0.9).all()  # the mouth opens exactly when it is loud
    other = torch.rand(6, 12, generator=g)  # the sound of another clip
    mel_other, _ = _talking(other, other)
    mismatch = lip_sync_cue(mel_other, faces)
    assert mismatch.abs().mean() < 0.5 and (mismatch < in_sync).all()
    # the cue looks at the lips only: a dark patch high on the face does not move it
    upper = faces.clone()
    upper[..., 2:8, 2:8] = torch.rand(6, 12, 1, 1, 1, generator=g).expand(6, 12, 3, 6, 6)
    assert torch.allclose(lip_sync_cue(mel, upper), in_sync, atol=1e-5)
    assert mouth_spread(faces).shape == (6, 12, 1) and speech_energy(mel, 12).shape == (6, 12, 1)


def test_parameter_cap_refuses_a_huge_backbone_on_the_meta_device() -> None:
    params = {"model_type": "visual", "model": "vit_huge_patch14_224", "pretrained": False}
    with torch.device("meta"), pytest.raises(ModelRuleError, match="200M"):
        build_model(params)
    assert parameter_count(params) > MAX_PARAMS  # counted, not refused


def test_max_params_refuses_a_model_over_a_smaller_limit() -> None:
    with pytest.raises(ModelRuleError, match="max_params"):
        build_model({"model_type": "audio", **TINY, "max_params": 1000})
    assert count_parameters(build_model({"model_type": "audio", **TINY, "max_params": 10_000_000})) < 10_000_000


def test_pretrained_weights_only_from_a_local_file(tmp_path) -> None:
    assert resolve_pretrained(False) == (False, None)
    with pytest.raises(ModelRuleError, match="not found"):
        resolve_pretrained(str(tmp_path / "missing.pth"))
    torch.manual_seed(1)
    source = create_backbone("test_resnet")
    weights = tmp_path / "test_resnet.pth"
    torch.save(source.state_dict(), weights)
    assert resolve_pretrained(str(weights)) == (True, str(weights))
    torch.manual_seed(2)
    loaded = create_backbone("test_resnet", str(weights))
    for (name, a), b in zip(source.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


def test_unknown_model_type_and_aggregate() -> None:
    with pytest.raises(ModelRuleError, match="model_type"):
        build_model({"model_type": "hologram", **TINY})
    with pytest.raises(ValueError, match="aggregation"):
        build_model({"model_type": "visual", "aggregate": "median", **TINY})
