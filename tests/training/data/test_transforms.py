"""Augmentation: flip, half-body, warp + target encoding, checked against independent maths."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from models.pose.codec import HeatmapCodec
from models.pose.keypoints import COCO_KEYPOINTS
from training.data.transforms import NO_AUGMENT, AugmentParams, TopDownTransform, truncated_normal

CODEC = HeatmapCodec(input_size=(96, 128), heatmap_size=(24, 32), sigma=2.0)


def _scene(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A textured (H, W, 3) image, a person's (17, 3) keypoints and its xywh box."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(240, 320, 3), dtype=np.uint8)
    image = cv2.GaussianBlur(image, (5, 5), 0)
    kp = np.zeros((17, 3))
    kp[:, 0] = rng.uniform(110, 210, 17)
    kp[:, 1] = rng.uniform(50, 200, 17)
    kp[:, 2] = 2
    kp[3, 2] = 0  # one unlabelled point
    lo, hi = kp[kp[:, 2] > 0, :2].min(0), kp[kp[:, 2] > 0, :2].max(0)
    return image, kp, np.concatenate([lo - 5, hi - lo + 10])


def _expected_crop_points(points: np.ndarray, center, scale, rot: float) -> np.ndarray:
    """Image px -> input px with OpenCV's rotation matrix (independent of models.pose.geometry):
    rotate by ``rot`` about the centre, zoom w / scale_w, move the centre to (w/2, h/2)."""
    w, h = CODEC.input_size
    m = cv2.getRotationMatrix2D((float(center[0]), float(center[1])), rot, w / scale[0])
    m[:, 2] += (w / 2 - center[0], h / 2 - center[1])
    return points @ m[:, :2].T + m[:, 2]


def test_truncated_normal_stays_in_bounds_with_truncated_std() -> None:
    x = truncated_normal(np.random.default_rng(0), 200_000)
    assert np.abs(x).max() <= 1.0
    # Var of N(0,1) truncated to [-1, 1]: 1 - 2 phi(1) / (2 Phi(1) - 1) = 0.2911.
    assert x.std() == pytest.approx(np.sqrt(0.29113), abs=0.003)
    assert abs(x.mean()) < 0.005


@pytest.mark.parametrize("seed", range(4))
def test_flip_mirrors_keypoints_swaps_sides_and_mirrors_the_crop(seed: int) -> None:
    image, kp, box = _scene(seed)
    plain = TopDownTransform(CODEC, COCO_KEYPOINTS, NO_AUGMENT)
    flip = TopDownTransform(CODEC, COCO_KEYPOINTS, replace(NO_AUGMENT, flip_prob=1.0))
    a = plain(image, kp, box, np.random.default_rng(1))
    b = flip(image, kp, box, np.random.default_rng(1))
    w = CODEC.input_size[0]
    swap = list(COCO_KEYPOINTS.flip_indices)
    labelled = kp[swap, 2] > 0
    # Image column j -> W-1-j and the crop centre follows, so crop x -> w - x.
    np.testing.assert_allclose(b.keypoints[labelled, 0], w - a.keypoints[swap][labelled, 0])
    np.testing.assert_allclose(b.keypoints[labelled, 1], a.keypoints[swap][labelled, 1])
    np.testing.assert_array_equal(b.visible, kp[swap, 2])
    np.testing.assert_array_equal(b.weights, a.weights[swap])
    diff = np.abs(b.image[:, 1:].astype(int) - a.image[:, ::-1][:, :-1].astype(int))
    assert diff.max() <= 1


@pytest.mark.parametrize("seed", range(6))
def test_decoded_targets_give_back_the_warped_keypoints(seed: int) -> None:
    image, kp, box = _scene(seed)
    params = AugmentParams(flip_prob=0.0, half_body_prob=0.0, shift_prob=1.0, rotate_prob=1.0)
    s = TopDownTransform(CODEC, COCO_KEYPOINTS, params)(image, kp, box, np.random.default_rng(seed))
    assert s.rotation != 0.0
    expected = _expected_crop_points(kp[:, :2], s.center, s.scale, s.rotation)
    np.testing.assert_allclose(s.keypoints, expected, atol=1e-4)
    decoded, _ = CODEC.decode(torch.from_numpy(s.heatmaps)[None], mode="dark")
    decoded = decoded[0].numpy()
    hm = expected / np.asarray(CODEC.stride)  # heatmap px
    margin = 4  # DARK needs 2 px; the blur (zero padding) needs a little more
    inside = (
        (hm[:, 0] > margin)
        & (hm[:, 0] < CODEC.heatmap_size[0] - 1 - margin)
        & (hm[:, 1] > margin)
        & (hm[:, 1] < CODEC.heatmap_size[1] - 1 - margin)
        & (kp[:, 2] > 0)
    )
    assert inside.sum() >= 1
    np.testing.assert_array_less(np.abs(decoded[inside] - expected[inside]), 0.05)
    assert np.all(s.weights[kp[:, 2] == 0] == 0)
    assert s.image.shape == (128, 96, 3) and s.image.dtype == np.uint8
    assert s.heatmaps.shape == (17, 32, 24)


def test_half_body_centres_the_chosen_half() -> None:
    image, kp, box = _scene(0)
    params = replace(NO_AUGMENT, half_body_prob=1.0, upper_body_prob=1.0)
    s = TopDownTransform(CODEC, COCO_KEYPOINTS, params)(image, kp, box, np.random.default_rng(0))
    upper = [i for i in COCO_KEYPOINTS.upper_body if kp[i, 2] > 0]
    np.testing.assert_allclose(s.center, kp[upper, :2].mean(0))
    w, h = CODEC.input_size
    np.testing.assert_allclose(s.keypoints[upper].mean(0), [w / 2, h / 2], atol=1e-6)
    # The half's extent, padded 1.5x, fits the crop: every upper-body point is inside it.
    assert np.all((s.keypoints[upper] >= 0) & (s.keypoints[upper] <= [w, h]))


def test_colour_order_rgb_from_bgr() -> None:
    image = np.zeros((100, 100, 3), np.uint8)
    image[..., 0] = 200  # blue in BGR
    kp = np.tile([50.0, 50.0, 2.0], (17, 1))
    s = TopDownTransform(CODEC, COCO_KEYPOINTS, NO_AUGMENT)(
        image, kp, np.array([20.0, 20, 60, 60]), np.random.default_rng(0)
    )
    centre = s.image[64, 48]
    assert centre[2] == 200 and centre[0] == 0  # RGB: blue is the last channel
