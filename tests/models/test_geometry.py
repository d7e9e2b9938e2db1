"""Geometry: warps against OpenCV, crop/map-back round trips, box -> centre/scale."""

import cv2
import numpy as np
import pytest

from models import geometry as g

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
