"""Fixtures shared by the tests of `models/` (tests define their own where they are used once)."""

import pytest
import torch

from models.weights.checkpoint import ModelBundle, build_model
from models.weights.model_config import ModelConfig

LIVELY_CODEC = {"input_size": [64, 96], "heatmap_size": [16, 24], "sigma": 2.0, "blur_kernel": 11}


@pytest.fixture(scope="session")
def lively_r18() -> ModelBundle:
    """A random ResNet-18 PoseResNet on 64x96 (w x h) crops whose heatmaps are of order 1.

    The training init (final layer std 0.001, BN at identity) gives near-zero maps, against
    which any parity check would pass; here the BN statistics and the final layer are random.
    Shared by several tests: do not modify it.
    """
    config = ModelConfig(
        name="lively-r18",
        depth=18,
        codec_params=LIVELY_CODEC,
        color_order="BGR",
        decode_mode="shift",
        metrics={"coco_val_ap": 0.5},
    )
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = build_model(config).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
        model.final_layer.weight.normal_(0.0, 0.05, generator=gen)
    return ModelBundle(model, config)
