"""models/pose/crops.py: the batched on-device crops of ``Predictor.crop_many`` against the cv2
crops of ``Predictor.crop``, and tensor crops through ``Crops.concat`` / ``stack_crops`` equal to
numpy ones (nothing sent back to the host)."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from models.inference.predictor import Predictor
from models.pose.crops import Crops, device_pixels, host_pixels, join_pixels, stack_crops
from models.pose.persons import PersonBoxes


@pytest.fixture(scope="module")
def predictor(lively_r18) -> Predictor:
    return Predictor(lively_r18, device="cpu")


def scene(seed: int, h: int, w: int) -> np.ndarray:
    """A smooth ``(h, w, 3)`` uint8 image (blocks blurred by the enlargement) with noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3)).astype(np.float32)
    big = np.kron(coarse, np.ones((8, 8, 1), np.float32))[:h, :w]
    noisy = big + rng.normal(0, 6, big.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def requests() -> tuple[list[np.ndarray], list[PersonBoxes | list | None]]:
    """Three images of different sizes: client boxes (one sticking out), the whole image, no
    person, and detected boxes with scores."""
    images = [scene(0, 120, 160), scene(1, 200, 90), scene(2, 64, 64), scene(3, 150, 150)]
    boxes: list[PersonBoxes | list | None] = [
        [[10, 5, 80, 110], [100, 20, 190, 119]],
        None,
        [],
        PersonBoxes(np.array([[20.0, 30, 90, 140]]), np.array([0.8]), "detector"),
    ]
    return images, boxes


@pytest.mark.parametrize("as_tensor", [False, True])
def test_crop_many_on_device_equals_cv2_crops(predictor: Predictor, as_tensor: bool) -> None:
    images, boxes = requests()
    want = [predictor.crop(im, b) for im, b in zip(images, boxes, strict=True)]
    given = [torch.from_numpy(im) if as_tensor else im for im in images]
    got = predictor.crop_many(given, boxes, on_device=True)
    assert [len(c) for c in got] == [2, 1, 0, 1]
    for a, b in zip(want, got, strict=True):
        assert isinstance(b.images, torch.Tensor) and b.images.dtype == torch.uint8
        assert tuple(b.images.shape) == tuple(a.images.shape)
        diff = np.abs(b.images.numpy().astype(int) - a.images.astype(int))
        # cv2 interpolates in fixed point, grid_sample in float32 (models/pose/geometry.py)
        assert diff.size == 0 or (diff.max() <= 1 and diff.mean() < 0.01), diff.max()
        for field in ("centers", "scales", "boxes", "box_scores"):
            np.testing.assert_array_equal(getattr(b, field), getattr(a, field))
        assert b.box_sources == a.box_sources
    # The cv2 path of crop_many is crop itself, tensors copied to the host first.
    same = predictor.crop_many(given, boxes, on_device=False)
    for a, b in zip(want, same, strict=True):
        assert isinstance(b.images, np.ndarray)
        np.testing.assert_array_equal(b.images, a.images)


def test_crop_many_refuses_what_crop_refuses(predictor: Predictor) -> None:
    with pytest.raises(ValueError, match="uint8 RGB"):
        predictor.crop_many([torch.zeros((10, 10, 3))], [None], on_device=True)
    with pytest.raises(ValueError, match="2 images but 1 box lists"):
        predictor.crop_many([scene(0, 20, 20)] * 2, [None], on_device=True)
    with pytest.raises(ValueError, match="boxes"):
        predictor.crop_many([scene(0, 20, 20)], [[[0, 0, 0, 0]]], on_device=True)


def test_tensor_crops_concat_and_stack_as_numpy_crops(predictor: Predictor) -> None:
    images, boxes = requests()
    numpy_parts = [predictor.crop(im, b) for im, b in zip(images, boxes, strict=True)]
    tensor_parts = predictor.crop_many(images, boxes, on_device=True)
    a, b = Crops.concat(numpy_parts), Crops.concat(tensor_parts)
    assert isinstance(b.images, torch.Tensor) and len(b) == len(a) == 4
    assert np.abs(b.images.numpy().astype(int) - a.images.astype(int)).max() <= 1
    np.testing.assert_array_equal(b.centers, a.centers)
    assert b.box_sources == a.box_sources == ("client", "client", "image", "detector")
    # The batcher gathers single rows of several jobs' crops.
    rows = [b.images[3], b.images[0]]
    stacked = stack_crops(rows)
    assert isinstance(stacked, torch.Tensor)
    np.testing.assert_array_equal(stacked.numpy(), np.stack([r.numpy() for r in rows]))
    assert isinstance(stack_crops([a.images[3], a.images[0]]), np.ndarray)
    # Mixed parts become one tensor on the tensors' device.
    mixed = join_pixels([a.images[:1], b.images[1:]])
    assert isinstance(mixed, torch.Tensor)
    np.testing.assert_array_equal(mixed[:1].numpy(), a.images[:1])


def test_heatmaps_of_tensor_crops_equal_those_of_numpy_crops(predictor: Predictor) -> None:
    """normalize_crops takes a tensor batch as it is: same heatmaps as the numpy copy."""
    images, boxes = requests()
    batch = Crops.concat(predictor.crop_many(images, boxes, on_device=True))
    assert isinstance(batch.images, torch.Tensor)
    flip = np.array([True, False, True, False])
    torch.testing.assert_close(
        predictor.heatmaps(batch.images, flip),
        predictor.heatmaps(batch.images.numpy(), flip),
        rtol=0,
        atol=0,
    )


def test_host_and_device_pixels() -> None:
    a = scene(0, 10, 12)
    t = device_pixels(a, torch.device("cpu"))
    assert t.dtype == torch.uint8 and tuple(t.shape) == (10, 12, 3)
    view = t.permute(2, 0, 1).contiguous().permute(1, 2, 0)  # as decode_jpeg's output is used
    back = host_pixels(view)
    assert back.flags.c_contiguous
    np.testing.assert_array_equal(back, a)
    assert host_pixels(a) is a


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_crop_many_on_cuda_keeps_the_crops_there(lively_r18) -> None:
    own = dataclasses.replace(lively_r18, model=copy.deepcopy(lively_r18.model))  # shared
    gpu = Predictor(own, device="cuda")
    images, boxes = requests()
    want = [gpu.crop(im, b) for im, b in zip(images, boxes, strict=True)]
    got = gpu.crop_many(images, boxes, on_device=True)
    batch = Crops.concat(got)
    assert isinstance(batch.images, torch.Tensor) and batch.images.is_cuda
    diff = np.abs(batch.images.cpu().numpy().astype(int) - Crops.concat(want).images.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01
    hm = gpu.heatmaps(batch.images, False)
    assert hm.is_cuda and hm.shape[0] == 4
