"""Predictor: a figure drawn at a known place comes back at the right image coordinates.

The network is replaced by a fixed, known function of the input (a bright-spot detector: a
stride-4 Gaussian filter over one colour channel), so the heatmaps are forced and every
other stage (cropping, colour order, normalisation, flip test, decoding, mapping back to
image pixels) is the real code.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from models.inference.predictor import Crops, Predictor, normalize_crops, split
from models.pose.persons import BoxError, PersonBoxes
from models.weights.checkpoint import ModelBundle, build_model, load, save
from models.weights.model_config import ModelConfig
from tests.helpers.networks import with_batchnorm_statistics

INPUT = (96, 128)  # (w, h)
HEATMAP = (24, 32)


class SpotDetector(nn.Module):
    """K identical heatmaps = Gaussian-filtered channel ``channel`` of the input, at stride 4.

    Output pixel (X, Y) is centred on input pixel (4X, 4Y): the codec's own convention, so a
    spot at input pixel x decodes to x.
    """

    def __init__(self, k: int, channel: int = 0) -> None:
        super().__init__()
        self.k, self.channel = k, channel
        r = torch.arange(-6, 7, dtype=torch.float32)
        g = torch.exp(-(r**2) / (2 * 2.0**2))
        self.register_buffer("kernel", (g[:, None] * g[None, :])[None, None] / g.sum() ** 2)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        c = x[:, self.channel : self.channel + 1]
        c = c - c.amin(dim=(2, 3), keepdim=True)
        out = nn.functional.conv2d(c, self.kernel, stride=4, padding=6)
        return out.repeat(1, self.k, 1, 1)


def _config(color_order: str = "RGB") -> ModelConfig:
    codec = {"input_size": list(INPUT), "heatmap_size": list(HEATMAP), "sigma": 2.0}
    return ModelConfig(depth=18, codec_params={**codec, "blur_kernel": 11}, color_order=color_order)


def _scene(
    spots: list[tuple[float, float]], colour: tuple[int, int, int], radius: int = 6
) -> np.ndarray:
    """A 900x1200 RGB image with sub-pixel-placed bright discs (anti-aliased)."""
    image = np.full((900, 1200, 3), 20, np.uint8)
    for x, y in spots:
        # cv2 draws with 4 fractional bits: centre (x, y) exactly up to 1/16 px.
        cv2.circle(image, (round(x * 16), round(y * 16)), radius * 16, colour, -1, cv2.LINE_AA, 4)
    return image


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("mode", ["dark", "shift"])
def test_spot_comes_back_at_image_coordinates(flip: bool, mode: str) -> None:
    spots = [(700.3, 400.7), (210.8, 655.2)]
    image = _scene(spots, (255, 0, 0))
    boxes = [[600, 250, 800, 550], [150, 560, 290, 760]]
    model = SpotDetector(17, channel=0)
    pred = Predictor(ModelBundle(model, _config()), device="cpu", flip_test=flip, decode_mode=mode)
    (people,) = pred.predict([image], [boxes])
    assert pred.model.calls == 1  # both persons, and their flipped crops, in one forward pass
    assert model.calls == 0  # the Predictor runs its own (BatchNorm-folded) copy
    for person, (x, y), box in zip(people, spots, boxes, strict=True):
        np.testing.assert_allclose(person.box, box)
        zoom = person.scale[0] / INPUT[0]  # image px per input px
        err = np.abs(person.keypoints - [x, y]).max(axis=0)
        # Without flip: sub-pixel. With flip the SimpleBaselines merge (flip back, shift one
        # heatmap pixel right) leaves a known +1/4-heatmap-pixel bias on the flipped half, so
        # x moves by about +1/8 heatmap px = +0.5 input px.
        # DARK is sub-pixel; the quarter-pixel shift is off by up to ~1/4 heatmap px = 1 input px.
        tol = 0.35 if mode == "dark" else 1.1
        assert err[0] < (tol + 0.5 * flip) * zoom, (err, zoom)
        assert err[1] < tol * zoom, (err, zoom)
        assert person.scores.shape == (17,) and person.keypoints.shape == (17, 2)


def test_flip_bias_is_the_expected_half_input_pixel() -> None:
    image = _scene([(600.0, 450.0)], (255, 0, 0))
    box = [[500, 300, 700, 600]]
    model = SpotDetector(17)
    pred = Predictor(ModelBundle(model, _config()), "cpu")
    plain = pred.predict([image], [box], flip_test=False)
    flipped = pred.predict([image], [box], flip_test=True)
    zoom = plain[0][0].scale[0] / INPUT[0]
    dx = (flipped[0][0].keypoints[:, 0] - plain[0][0].keypoints[:, 0]) / zoom  # input px
    assert np.all((dx > 0.2) & (dx < 0.8)), dx
    dy = (flipped[0][0].keypoints[:, 1] - plain[0][0].keypoints[:, 1]) / zoom
    assert np.abs(dy).max() < 0.05


def test_colour_order_comes_from_the_checkpoint() -> None:
    # A blue spot: a BGR model's channel 0 is blue, an RGB model's channel 0 is red.
    image = _scene([(640.0, 300.0)], (0, 0, 255))
    box = [[540, 150, 740, 450]]
    bgr = Predictor(ModelBundle(SpotDetector(17), _config("BGR")), "cpu", flip_test=False)
    rgb = Predictor(ModelBundle(SpotDetector(17), _config("RGB")), "cpu", flip_test=False)
    found = bgr.predict([image], [box])[0][0]
    assert np.abs(found.keypoints - [640, 300]).max() < 1.0
    blind = rgb.predict([image], [box])[0][0]
    assert blind.scores.max() < 0.25 * found.scores.max()


def test_many_images_whole_image_default_and_heatmaps() -> None:
    a = _scene([(300.0, 500.0)], (255, 0, 0), radius=40)
    b = _scene([(900.0, 200.0)], (255, 0, 0))
    model = SpotDetector(17)
    pred = Predictor(ModelBundle(model, _config()), "cpu", flip_test=False)
    out = pred.predict([a, b], [None, np.zeros((0, 4))], return_heatmaps=True)
    assert len(out[0]) == 1 and out[1] == []
    np.testing.assert_allclose(out[0][0].box, [0, 0, 1200, 900])
    assert out[0][0].heatmaps is not None and out[0][0].heatmaps.shape == (17, 32, 24)
    # Whole image (4:3) into a 3:4 crop: a coarse zoom, still within a few image pixels.
    zoom = out[0][0].scale[0] / INPUT[0]
    assert np.abs(out[0][0].keypoints - [300, 500]).max() < 1.0 * zoom
    with pytest.raises(ValueError, match="2 images but 1 box lists"):
        pred.predict([a, b], [None])
    with pytest.raises(ValueError, match="x2 > x1"):
        pred.predict([a], [[[10, 10, 5, 20]]])


def test_real_checkpoint_round_trip_through_predictor(tmp_path) -> None:
    config = _config()
    torch.manual_seed(0)
    model = with_batchnorm_statistics(build_model(config)).eval()
    save(tmp_path / "m.safetensors", model, config)
    bundle = load(tmp_path / "m.safetensors")
    pred = Predictor(bundle, "cpu", flip_test=True)
    # The Predictor runs its own copy with the BatchNorms folded; the bundle's stays whole.
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in pred.model.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in bundle.model.modules())
    image = _scene([(100.0, 100.0)], (255, 255, 255))
    crops = pred.crop(image, [[50, 50, 150, 200]])
    hm = pred.heatmaps(crops.images, flip=False)
    with torch.no_grad():
        ref = model(normalize_crops(crops.images, pred.config, pred.device))
    torch.testing.assert_close(hm, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
    assert hm.shape == (1, 17, 32, 24)
    # Per-crop flip mask: flipping only the second crop leaves the first untouched.
    two = np.concatenate([crops.images, crops.images])
    mixed = pred.heatmaps(two, flip=np.array([False, True]))
    torch.testing.assert_close(mixed[0], hm[0])
    assert not torch.allclose(mixed[1], ref[0])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_within_amp_tolerance() -> None:
    image = _scene([(700.3, 400.7)], (255, 0, 0))
    box = [[600, 250, 800, 550]]
    cpu = Predictor(ModelBundle(SpotDetector(17), _config()), "cpu").predict([image], [box])
    gpu = Predictor(ModelBundle(SpotDetector(17), _config()), "cuda").predict([image], [box])
    assert np.abs(cpu[0][0].keypoints - gpu[0][0].keypoints).max() < 0.5


def test_each_person_carries_its_box_and_where_it_came_from() -> None:
    a = _scene([(300.0, 500.0)], (255, 0, 0))
    b = _scene([(700.3, 400.7)], (255, 0, 0))
    pred = Predictor(ModelBundle(SpotDetector(17), _config()), "cpu", flip_test=False)
    detected = PersonBoxes(np.array([[600.0, 250, 800, 550]]), np.array([0.8]), "detector")
    whole, given, found = pred.predict([a, a, b], [None, [[200, 350, 400, 650]], detected])
    assert [p.box_source for p in whole + given + found] == ["image", "client", "detector"]
    assert whole[0].box_score is None and given[0].box_score is None
    assert found[0].box_score == pytest.approx(0.8)
    np.testing.assert_allclose(given[0].box, [200, 350, 400, 650])
    np.testing.assert_allclose(found[0].box, [600, 250, 800, 550])
    zoom = found[0].scale[0] / INPUT[0]
    assert np.abs(found[0].keypoints - [700.3, 400.7]).max() < 1.1 * zoom
    with pytest.raises(BoxError, match=r"boxes\[0\] = .*wholly outside the 1200x900 image"):
        pred.crop(a, [[1300, 0, 1400, 100]])


def test_crops_concat_and_split_are_inverse() -> None:
    pred = Predictor(ModelBundle(SpotDetector(17), _config()), "cpu")
    image = _scene([(300.0, 500.0)], (255, 0, 0))
    parts = [pred.crop(image, [[0, 0, 100, 100], [50, 50, 300, 400]]), pred.crop(image, [])]
    parts.append(pred.crop(image))
    batch = Crops.concat(parts)
    assert len(batch) == 3 and batch.box_sources == ("client", "client", "image")
    np.testing.assert_array_equal(batch.images[2], parts[2].images[0])
    assert split(list(range(3)), [len(p) for p in parts]) == [[0, 1], [], [2]]
    with pytest.raises(ValueError, match="cannot be split"):
        split([0, 1], [1, 2])


@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_normalize_crops_against_numpy(order: str) -> None:
    cfg = _config(order)
    crops = np.random.default_rng(4).integers(0, 256, (3, 32, 24, 3), dtype=np.uint8)
    x = normalize_crops(crops, cfg, torch.device("cpu"))
    assert x.shape == (3, 3, 32, 24) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    rgb = crops[..., ::-1] if order == "BGR" else crops  # the network's channel order
    mean, std = np.float32(cfg.mean), np.float32(cfg.std)
    want = ((rgb.astype(np.float32) - mean) / std).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(x.numpy(), want)  # the same float32 operations: equal


@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_flip_test_per_crop_equals_mirroring_the_normalised_input(order: str) -> None:
    """The mirrored crops are made from the uint8 crops before normalising (cheaper); the
    heatmaps must equal the textbook computation: normalise, mirror the network input along
    its width, forward both, merge (numpy reference of flip back + shift + mean)."""
    from models.pose.keypoints import COCO_KEYPOINTS

    torch.manual_seed(0)
    model = build_model(_config(order)).eval()
    pred = Predictor(ModelBundle(model, _config(order)), "cpu")
    crops = np.random.default_rng(5).integers(0, 256, (4, INPUT[1], INPUT[0], 3), dtype=np.uint8)
    mask = np.array([True, False, True, False])
    got = pred.heatmaps(crops, mask).numpy()
    with torch.inference_mode():
        x = normalize_crops(crops, pred.config, pred.device)
        plain = pred.model(x).numpy()
        mirrored = pred.model(x.flip(-1)).numpy()
    back = mirrored[:, list(COCO_KEYPOINTS.flip_indices), :, ::-1]
    shifted = np.concatenate([back[..., :1], back[..., :-1]], axis=-1)
    want = np.where(mask[:, None, None, None], (plain + shifted) / 2, plain)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    everything = pred.heatmaps(crops, True).numpy()  # all mirrored: the no-index path
    np.testing.assert_allclose(everything, (plain + shifted) / 2, rtol=1e-4, atol=1e-6)
