"""Box IoU and OKS matrices against direct per-pair computations."""

from __future__ import annotations

import numpy as np
import pytest

from models.pose.keypoints import COCO_KEYPOINTS
from models.video.similarity import box_iou, oks_matrix

SIGMAS = np.array(COCO_KEYPOINTS.sigmas)


def test_box_iou_against_hand_computed_pairs() -> None:
    a = np.array([[0, 0, 10, 10], [5, 5, 15, 15], [0, 0, 0, 10]], dtype=float)
    b = np.array([[0, 0, 10, 10], [10, 10, 20, 20], [2, 0, 12, 10]], dtype=float)
    iou = box_iou(a, b)
    assert iou.shape == (3, 3)
    assert iou[0, 0] == 1.0 and iou[0, 1] == 0.0  # touching corners share no area
    assert iou[0, 2] == pytest.approx(80 / 120)
    assert iou[1, 1] == pytest.approx(25 / 175)
    assert np.all(iou[2] == 0.0)  # an empty box


def test_oks_with_validity_masks_averages_only_shared_keypoints() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 100, (2, 17, 2)), rng.uniform(0, 100, (3, 17, 2))
    va, vb = rng.random((2, 17)) > 0.3, rng.random((3, 17)) > 0.3
    vb[2] = False  # no keypoint in common
    area_a, area_b = np.array([900.0, 4000.0]), np.array([1000.0, 2500.0, 50.0])
    got = oks_matrix(a, area_a, b, area_b, SIGMAS, valid_a=va, valid_b=vb)
    for i in range(2):
        for j in range(2):
            s2 = (area_a[i] + area_b[j]) / 2
            d2 = ((a[i] - b[j]) ** 2).sum(-1)
            e = np.exp(-d2 / (2 * s2 * (2 * SIGMAS) ** 2))
            assert got[i, j] == pytest.approx(e[va[i] & vb[j]].mean())
    assert np.isnan(got[:, 2]).all()
    full = oks_matrix(a, area_a, b, area_b, SIGMAS)
    assert full[0, 0] == pytest.approx(
        oks_matrix(a, area_a, b, area_b, SIGMAS, valid_a=np.ones((2, 17), bool))[0, 0]
    )
    with pytest.raises(ValueError, match="sigmas"):
        oks_matrix(a[:, :5], area_a, b[:, :5], area_b, SIGMAS)
