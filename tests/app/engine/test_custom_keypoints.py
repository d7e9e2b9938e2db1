"""A checkpoint of other keypoints (a four-legged animal, K = 12): /predict returns its names and
skeleton, /visualize draws its links and colours its keypoints by side."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from app.render.overlay import PALETTE
from models.inference.predictor import Predictor
from models.pose.codec import HeatmapCodec
from models.pose.keypoints import KeypointSpec
from models.weights.checkpoint import build_model, load, save
from models.weights.model_config import ModelConfig
from tests.helpers.images import encode
from training.synthetic import synthetic_animal

pytestmark = pytest.mark.anyio

NAMES = synthetic_animal.NAMES
LINKS = ((0, 1), (1, 2), (2, 3), (1, 4), (4, 5), (1, 6), (6, 7), (2, 8), (8, 9), (2, 10), (10, 11))
ANIMAL = KeypointSpec(
    names=NAMES,
    flip_indices=(0, 1, 2, 3, 6, 7, 4, 5, 10, 11, 8, 9),
    skeleton=LINKS,
    sigmas=(0.026,) + (0.07,) * 11,
    upper_body=(0, 1, 4, 5, 6, 7),
    lower_body=(2, 3, 8, 9, 10, 11),
)


@pytest.fixture(scope="module")
def animal_checkpoint(module_tmp: Callable[[str], Path]) -> Path:
    """ResNet-18, input 128x96 (w x h, landscape), the animal's 12 keypoints; a head with clear
    maxima (std 0.05) so keypoints spread over the crop."""
    torch.manual_seed(3)
    codec = HeatmapCodec(input_size=(128, 96), heatmap_size=(32, 24))
    config = ModelConfig(name="tiny-animal", depth=18, spec=ANIMAL, codec_params=codec.to_dict())
    model = build_model(config)
    with torch.no_grad():
        for m in [*model.deconv_layers, model.final_layer]:
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                m.weight.normal_(0.0, 0.05)
    path = module_tmp("animal") / "animal.safetensors"
    save(path, model, config)
    return path


async def test_predict_and_visualize_use_the_checkpoints_keypoints(
    serve_app, animal_checkpoint: Path
) -> None:
    rng = np.random.default_rng(7)
    image = np.asarray(
        cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (320, 240)), np.uint8
    )
    files = [("files", ("a.png", encode(image), "image/png"))]
    async with serve_app(checkpoint=str(animal_checkpoint)) as (client, _):
        r = await client.post("/predict", files=files, params={"flip_test": "false"})
        assert r.status_code == 200, r.text
        body = r.json()
        v = await client.post(
            "/visualize",
            files=[("file", ("a.png", encode(image), "image/png"))],
            params={"mode": "skeleton", "kpt_thr": 0.0, "flip_test": "false"},
        )
        assert v.status_code == 200, v.text
    assert body["model"]["keypoints"] == list(NAMES)
    assert body["model"]["skeleton"] == [list(link) for link in LINKS]
    (person,) = body["images"][0]["persons"]
    assert [k["name"] for k in person["keypoints"]] == list(NAMES)
    (want,) = Predictor(load(animal_checkpoint), device="cpu", flip_test=False).predict([image])[0]
    got = np.array([[k["x"], k["y"]] for k in person["keypoints"]])
    np.testing.assert_allclose(got, want.keypoints, atol=0.05)

    drawn = np.asarray(Image.open(io.BytesIO(v.content)).convert("RGB")).astype(int)
    changed = np.abs(drawn - image.astype(int)).sum(-1) > 30
    pts = np.rint(got).astype(int)
    inside = [i for i in range(12) if 2 <= pts[i, 0] < 318 and 2 <= pts[i, 1] < 238]
    far = [i for i in inside if all(np.abs(pts[i] - pts[j]).max() > 8 for j in range(12) if j != i)]
    assert len(far) >= 4, pts  # enough keypoints apart from the others to check their colour
    for i in far:  # each keypoint's disc has the person's colour (the first of the palette)
        x, y = pts[i]
        assert tuple(drawn[y, x]) == PALETTE[0], (NAMES[i], drawn[y, x])
    long = [(a, b) for a, b in LINKS if a in inside and b in inside]
    long = [(a, b) for a, b in long if np.abs(pts[a] - pts[b]).max() > 12]
    assert len(long) >= 4
    for a, b in long:  # every link of the animal's skeleton is drawn along its length
        for t in (0.4, 0.5, 0.6):
            x, y = np.rint(pts[a] + t * (pts[b] - pts[a])).astype(int)
            assert changed[y - 1 : y + 2, x - 1 : x + 2].any(), (NAMES[a], NAMES[b], t)
