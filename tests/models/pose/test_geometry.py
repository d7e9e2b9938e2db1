"""Geometry: warps against OpenCV, crop/map-back round trips, box -> centre/scale."""

import cv2
import numpy as np
import pytest
import torch

from models.pose import geometry as g

INPUT = (192, 256)


def test_box_to_center_scale_fixes_aspect_and_pads() -> None:
    # Tall box (w/h = 0.5 < 0.75): width is widened to 0.75 * h, then x1.25.
    center, scale = g.box_to_center_scale([10, 20, 50, 100], INPUT)
    np.testing.assert_allclose(center, [35, 70])
    np.testing.assert_allclose(scale, [75 * 1.25, 100 * 1.25])
    # Wide box: height grows to w / 0.75.
    center, scale = g.box_to_center_scale([0, 0, 150, 100], INPUT)
    np.testing.assert_allclose(scale, [150 * 1.25, 200 * 1.25])


def test_xyxy_xywh_round_trip() -> None:
    b = np.array([[1.5, 2.0, 11.5, 32.0], [0, 0, 3, 4]])
    np.testing.assert_allclose(g.xywh_to_xyxy(g.xyxy_to_xywh(b)), b)
    np.testing.assert_allclose(g.xyxy_to_xywh(b)[0], [1.5, 2.0, 10.0, 30.0])


@pytest.mark.parametrize("seed", range(5))
def test_warp_agrees_with_cv2_get_affine_transform(seed: int) -> None:
    rng = np.random.default_rng(seed)
    center = rng.uniform(50, 500, 2)
    scale = rng.uniform(40, 300, 2)
    rot = rng.uniform(-80, 80)
    m = g.get_warp_matrix(center, scale, rot, INPUT)
    # Independent construction: the same three points through OpenCV.
    rad = np.deg2rad(rot)
    sd = np.array([scale[0] / 2 * np.sin(rad), -scale[0] / 2 * np.cos(rad)])
    src = np.float32([center, center + sd, center + sd + [-sd[1], sd[0]]])
    dc = np.array([INPUT[0] / 2, INPUT[1] / 2])
    dd = np.array([0, -INPUT[0] / 2])
    dst = np.float32([dc, dc + dd, dc + dd + [-dd[1], dd[0]]])
    expected = cv2.getAffineTransform(src, dst)
    np.testing.assert_allclose(m, expected, rtol=1e-4, atol=1e-3)
    # Centre lands on the middle of the crop; the region's width spans the crop's width.
    np.testing.assert_allclose(g.transform_points(center, m), dc, atol=1e-9)


@pytest.mark.parametrize("seed", range(10))
def test_crop_then_map_back_is_identity(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    box = np.array([*rng.uniform(0, 400, 2), *rng.uniform(10, 300, 2)])
    center, scale = g.box_to_center_scale(box, INPUT)
    rot = rng.uniform(-90, 90)
    pts = rng.uniform(-50, 700, (17, 2))
    fwd = g.get_warp_matrix(center, scale, rot, INPUT)
    inv = g.get_warp_matrix(center, scale, rot, INPUT, inverse=True)
    back = g.transform_points(g.transform_points(pts, fwd), inv)
    assert np.abs(back - pts).max() < 1e-3


def test_crop_to_image_equals_inverse_warp() -> None:
    rng = np.random.default_rng(7)
    centers = rng.uniform(0, 600, (4, 2))
    scales = rng.uniform(50, 400, (4, 2))
    pts = rng.uniform(0, 192, (4, 17, 2))
    out = g.crop_to_image(pts, centers, scales, INPUT)
    for i in range(4):
        inv = g.get_warp_matrix(centers[i], scales[i], 0.0, INPUT, inverse=True)
        np.testing.assert_allclose(out[i], g.transform_points(pts[i], inv), atol=1e-6)


def test_crop_person_puts_a_pixel_where_the_warp_says() -> None:
    image = np.zeros((480, 640, 3), np.uint8)
    image[200:204, 300:304] = 255  # a bright 4x4 square centred at (301.5, 201.5)
    center, scale = g.box_to_center_scale([250, 100, 120, 240], INPUT)
    crop = g.crop_person(image, center, scale, INPUT)
    assert crop.shape == (256, 192, 3)
    ys, xs = np.nonzero(crop[..., 0] > 0)
    w = crop[ys, xs, 0].astype(np.float64)
    got = np.array([(xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()])
    expected = g.transform_points([301.5, 201.5], g.get_warp_matrix(center, scale, 0, INPUT))
    np.testing.assert_allclose(got, expected, atol=0.05)


def _persons_scene(seed: int, sharp: bool) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """3 random images of random sizes; 12 person regions, some reaching past the borders."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(3):
        h, w = (int(v) for v in rng.integers(40, 400, 2))
        if sharp:  # pixel noise: the worst case for interpolation differences
            images.append(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        else:  # photo-like smooth content
            small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
            images.append(cv2.resize(small, (w, h)))
    index = rng.integers(0, 3, 12)
    centers = np.array(
        [rng.uniform(-20, [images[i].shape[1] + 20, images[i].shape[0] + 20]) for i in index]
    )
    return images, index, np.concatenate([centers, rng.uniform(10, 300, (12, 2))], axis=1)


@pytest.mark.parametrize("sharp", [False, True])
def test_batched_device_crops_equal_cv2_crops(sharp: bool) -> None:
    """One affine_grid + grid_sample for all persons vs cv2.warpAffine person by person.

    Measured over these 20 scenes (240 crops, rotations within +-80 deg, zoom 0.16x..4.8x):
    mean |diff| below 1e-3 grey levels and max |diff| 1 on both smooth and noise images
    (cv2 rounds in fixed point, this path in float32).
    """
    size = (48, 64)
    worst_mean, worst_max = 0.0, 0
    for seed in range(20):
        images, index, regions = _persons_scene(seed, sharp)
        rots = np.random.default_rng(seed).uniform(-80, 80, len(index))
        got = g.crop_persons_batched(
            [torch.from_numpy(a) for a in images], index, regions[:, :2], regions[:, 2:], size, rots
        )
        assert got.dtype == torch.uint8 and got.shape == (len(index), 64, 48, 3)
        want = np.stack(
            [
                g.crop_person(images[i], regions[k, :2], regions[k, 2:], size, rots[k])
                for k, i in enumerate(index)
            ]
        )
        diff = np.abs(got.numpy().astype(int) - want.astype(int))
        worst_mean, worst_max = max(worst_mean, diff.mean()), max(worst_max, int(diff.max()))
        assert (want > 0).mean() > 0.3  # mostly image content, not border
    assert worst_mean < 2e-3 and worst_max <= 1, (worst_mean, worst_max)


@pytest.mark.gpu
def test_batched_device_crops_on_cuda_equal_the_cpu_path() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    images, index, regions = _persons_scene(0, sharp=True)
    args = (index, regions[:, :2], regions[:, 2:], (48, 64), np.linspace(-80, 80, 12))
    cpu = g.crop_persons_batched([torch.from_numpy(a) for a in images], *args)
    gpu = g.crop_persons_batched([torch.from_numpy(a).cuda() for a in images], *args)
    assert gpu.is_cuda
    assert (gpu.cpu().int() - cpu.int()).abs().max().item() <= 1
