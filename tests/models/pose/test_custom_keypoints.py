"""Other keypoints than COCO's: the flip test of a 12-keypoint animal model swaps its own pairs."""

from __future__ import annotations

import numpy as np
import torch

from models.inference.predictor import Predictor
from models.pose.codec import HeatmapCodec
from models.pose.keypoints import KeypointSpec
from models.weights.checkpoint import ModelBundle, build_model
from models.weights.model_config import ModelConfig

# A 12-keypoint animal (`heatpose synth --skeleton animal`'s names), made here: the core's tests
# do not import `training`.
LEGS = [
    f"{s}_{leg}_{j}"
    for leg in ("front", "back")
    for s in ("left", "right")
    for j in ("knee", "paw")
]
NAMES = ("nose", "withers", "tail_base", "tail_tip", *LEGS)


def _other_side(name: str) -> str:
    if name.startswith("left_"):
        return "right_" + name[5:]
    return "left_" + name[6:] if name.startswith("right_") else name


def test_flip_test_merges_with_the_animals_own_pairs() -> None:
    perm = [NAMES.index(_other_side(n)) for n in NAMES]  # by name, independently of the spec
    spec = KeypointSpec(NAMES, tuple(perm), ((0, 1),), (0.07,) * 12, (), ())
    torch.manual_seed(0)
    codec = HeatmapCodec(input_size=(64, 48), heatmap_size=(16, 12))
    config = ModelConfig(depth=18, spec=spec, codec_params=codec.to_dict())
    model = build_model(config).eval()
    with torch.no_grad():  # clear heatmaps (SimpleBaselines' std 0.001 gives ~1e-5)
        for m in [*model.deconv_layers, model.final_layer]:
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                m.weight.normal_(0.0, 0.05)
    predictor = Predictor(ModelBundle(model, config), device="cpu")
    crops = np.random.default_rng(0).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    with torch.no_grad():
        merged = predictor.heatmaps(crops, flip=True)
        plain = predictor.heatmaps(crops, flip=False)
        mirrored = predictor.heatmaps(np.ascontiguousarray(crops[:, :, ::-1]), flip=False)
    back = mirrored.flip(-1)[:, perm]  # mirror back, then swap left and right channels
    shifted = back.clone()
    shifted[..., 1:] = back[..., :-1]  # the published one-pixel shift
    assert plain.abs().max() > 0.1
    torch.testing.assert_close(merged, (plain + shifted) / 2, atol=1e-4, rtol=1e-4)
    unswapped = mirrored.flip(-1).clone()
    unswapped[..., 1:] = mirrored.flip(-1)[..., :-1]
    assert (merged - (plain + unswapped) / 2).abs().max() > 0.05  # the swap matters here
