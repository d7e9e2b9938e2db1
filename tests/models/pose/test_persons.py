"""Persons in resized images: points map as cv2.resize maps pixel centres."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from models.pose.persons import PersonBoxes, PersonResult, resize_points


def centroid(image: np.ndarray) -> np.ndarray:
    ys, xs = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    w = image.astype(np.float64)
    return np.array([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])


@pytest.mark.parametrize(
    "f,interp", [(0.25, cv2.INTER_AREA), (0.5, cv2.INTER_AREA), (3.0, cv2.INTER_LINEAR)]
)
def test_resize_points_follows_cv2_resize(f: float, interp: int) -> None:
    image = np.zeros((64, 96), np.float32)
    image[20:24, 36:44] = 1.0  # a blob centred at (39.5, 21.5)
    small = cv2.resize(image, (round(96 * f), round(64 * f)), interpolation=interp)
    np.testing.assert_allclose(resize_points(centroid(image), f, f), centroid(small), atol=1e-4)


def test_boxes_and_results_resize_alike() -> None:
    boxes = PersonBoxes(np.array([[10.0, 20.0, 50.0, 100.0]]), np.array([0.9]), "detector")
    small = boxes.resized(0.5, 0.25)
    np.testing.assert_allclose(small.boxes, [[4.75, 4.625, 24.75, 24.625]])
    assert small.source == "detector" and small.scores is boxes.scores
    person = PersonResult(
        box=boxes.boxes[0],
        keypoints=np.array([[30.0, 60.0]], np.float32),
        scores=np.ones(1, np.float32),
        center=np.array([30.0, 60.0]),
        scale=np.array([50.0, 100.0]),
        heatmaps=np.zeros((1, 4, 3), np.float32),
    )
    out = person.resized(0.5, 0.25)
    np.testing.assert_allclose(out.box, small.boxes[0])
    np.testing.assert_allclose(out.keypoints, [[14.75, 14.625]])
    assert out.keypoints.dtype == np.float32 and out.heatmaps is person.heatmaps
    np.testing.assert_allclose(out.center, [14.75, 14.625])
    np.testing.assert_allclose(out.scale, [25, 25])
    back = out.resized(2.0, 4.0)
    np.testing.assert_allclose(back.keypoints, person.keypoints, atol=1e-5)
    np.testing.assert_allclose(back.box, person.box)
