import pytest
import torch

from ffdv_utils.models.registry import build_model


@pytest.mark.parametrize("name", ["mobilenetv3_small_100", "test_efficientnet", "test_resnet"])
def test_backbones_whose_pooled_width_differs_from_num_features(name):
    # mobilenetv3's pooled output (1024) is wider than num_features (576): the head must follow the real width
    model = build_model({"model": name, "model_type": "audio"}).eval()
    with torch.no_grad():
        out = model({"mel": torch.randn(2, 3, 64, 64)})["logit"]
    assert out.shape == (2,) and torch.isfinite(out).all()
