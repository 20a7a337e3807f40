"""The profile detector: the measured signatures mean what they say, and the model builds, trains and reloads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ffdv_utils.features.batches import prepare_batch
from ffdv_utils.features.params import mel_params
from ffdv_utils.models.profile import ProfileModel, sharpness_signature, spectral_profile
from ffdv_utils.models.registry import backbone_names, create_model


def _mel(band_rows: int, h: int = 64, w: int = 80, seed: int = 0) -> torch.Tensor:
    """A uint8 mel image whose top ``h - band_rows`` rows (high frequencies, row 0 on top) hold no energy."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w), np.uint8)
    img[h - band_rows:] = rng.integers(120, 250, size=(band_rows, w))
    img[:, ::4] //= 8  # pauses: quiet columns the profile leaves out
    return torch.from_numpy(img)[None, None]


def test_the_spectral_profile_sees_where_the_band_ends() -> None:
    full = prepare_batch({"mel": _mel(64)})["mel"]
    narrow = prepare_batch({"mel": _mel(24)})["mel"]
    pf, pn = spectral_profile(full, 8)[0], spectral_profile(narrow, 8)[0]
    assert pf.shape == (8,)
    assert float(pn[:4].max()) < 0.05 < float(pf[:4].min())  # nothing above the cut-off
    assert torch.allclose(pf[-2:], pn[-2:], atol=0.1)  # the speech band itself alike
    # pauses are left out: the louder half of the columns decides
    assert float(pf[-1]) > 0.45


def test_the_sharpness_signature_tells_a_soft_pasted_mouth_and_steady_frames() -> None:
    rng = np.random.default_rng(0)
    t, s = 6, 64
    camera = rng.integers(0, 255, size=(1, t, s, s, 3), dtype=np.uint8)
    soft_mouth = camera.copy()
    r0, r1, c0, c1 = int(0.65 * s), int(0.9 * s), int(0.25 * s), int(0.75 * s)
    soft_mouth[:, :, r0:r1, c0:c1] = soft_mouth[:, :, r0:r1, c0:c1].mean(axis=(2, 3), keepdims=True).astype(np.uint8)

    def sig(x: np.ndarray) -> torch.Tensor:
        faces = torch.from_numpy(x).permute(0, 1, 4, 2, 3)
        return sharpness_signature(prepare_batch({"faces": faces})["faces"])[0]

    cam, soft = sig(camera), sig(soft_mouth)
    assert soft[0] < cam[0] - 1.0  # mouth far less sharp than the eyes
    # a camera whose focus drifts between frames spreads more than a generator's steady frames
    import cv2

    drifting = camera.copy()
    for i in range(0, t, 2):  # every other frame out of focus
        drifting[0, i] = cv2.GaussianBlur(drifting[0, i], (5, 5), 1.5)
    assert sig(drifting)[7] > cam[7] + 0.3


def test_the_profile_model_builds_from_params_trains_and_reloads() -> None:
    p = {"model_type": "profile", "profile_bins": 16}
    assert backbone_names(p) == []
    model = create_model(p)
    assert isinstance(model, ProfileModel) and model.inputs == ("mel", "faces")
    assert create_model({**p, "profile_faces": False}).inputs == ("mel",)
    assert sum(t.numel() for t in model.parameters()) == 16 + 8 + 1
    torch.manual_seed(0)
    mels = torch.cat([_mel(64, seed=i) for i in range(8)] + [_mel(20, seed=i) for i in range(8)])
    faces = torch.randint(0, 255, (16, 4, 3, 32, 32), dtype=torch.uint8)
    b = prepare_batch({"mel": mels, "faces": faces, "target": torch.tensor([0.0] * 8 + [1.0] * 8)})
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(b)["logit"], b["target"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        logit = model(b)["logit"]
    assert float(logit[8:].min()) > float(logit[:8].max())  # band-limited clips score as fake
    again = create_model(p)
    again.load_state_dict(model.state_dict())
    again.eval()
    with torch.no_grad():
        assert torch.equal(again(b)["logit"], logit)


def test_the_wide_preset_is_the_baseline_image_at_48_khz() -> None:
    wide, seed = mel_params({"mel_preset": "wide"}), mel_params({"mel_preset": "seed"})
    assert wide["sr"] == 48000 and wide["fmax"] == 0.0
    assert {k: v for k, v in wide.items() if k not in ("sr", "preset")} == \
        {k: v for k, v in seed.items() if k not in ("sr", "preset")}
    with pytest.raises(ValueError, match="unknown mel_preset"):
        mel_params({"mel_preset": "widest"})


@pytest.mark.slow
def test_a_run_with_profile_weight_joins_the_profile_part_in_the_test_api(sample: dict, tmp_path) -> None:
    """The profile part is fitted on the run's training clips, saved in the one checkpoint with its weight, and the
    test API scores (1 - w) * network + w * profile part, exactly as validation did."""
    from ffdv_utils.core.runs import Run
    from ffdv_utils.data.splits import labelled_clips
    from ffdv_utils.detector import ProfileScorer, load_detector, profile_signatures
    from ffdv_utils.inference.score import score_table
    from ffdv_utils.training.loop import TRAIN_DEFAULTS, fit

    p = {**TRAIN_DEFAULTS, "data_root": str(sample["data_root"]), "model_type": "audio", "model": "test_resnet",
         "image_size": 64, "face_frames": 2, "face_size": 32, "feature_workers": 1, "epochs": 1, "batch_size": 8,
         "progress": False, "device": "cpu", "profile_weight": 0.3, "profile_mel_preset": "seed", "run_name": "pp"}
    result = fit(p, Run(name="pp", dir=tmp_path / "pp", params=p))
    assert {"val_auc_model", "val_auc_profile"} <= set(result) and result["profile_n_fit"] > 0
    ckpt = tmp_path / "pp" / "checkpoints" / "best.pt"
    saved = load_detector(ckpt, "cpu")
    assert saved.weights["profile"] == 0.3
    scorer = saved.parts[0].scorer
    assert isinstance(scorer, ProfileScorer) and scorer.mel_preset == "seed"
    clips = labelled_clips(sample["data_root"], ("val",))[["video_name", "path"]]
    sig = profile_signatures(saved.params, clips)
    assert sig.shape == (len(clips), 40) and np.isfinite(sig).all()
    part = scorer.score(saved.params, clips)
    again = ProfileScorer.from_state(scorer.state()).score(saved.params, clips)
    assert np.array_equal(part, again) and ((part > 0) & (part < 1)).all()
    api = score_table(list(clips.path), ckpt, device="cpu")
    net = result.predictions.set_index("video_name")
    for name, s in zip(api.video_name, api.score):
        if name in net.index:
            assert abs(s - net.loc[name, "score"]) < 1e-4  # validation's joined score = the test API's
    with pytest.raises(ValueError, match="real and fake"):
        ProfileScorer("seed").fit(saved.params, clips.assign(target=0))
