"""The box rules (:func:`models.pose.persons.validate_boxes`): finite, ordered, at least
``MIN_BOX_SIZE``, within ``BOX_MARGIN`` of the image; what passes crops without raising and
maps back to finite points."""

from __future__ import annotations

import numpy as np
import pytest

from models.pose.geometry import (
    box_to_center_scale,
    crop_person,
    crop_to_image,
    get_warp_matrix,
    xyxy_to_xywh,
)
from models.pose.persons import BOX_MARGIN, MIN_BOX_SIZE, BoxError, PersonBoxes, validate_boxes

W, H = 320, 240
INPUT = (96, 128)


@pytest.mark.parametrize(
    ("box", "why"),
    [
        ([0, 0, 5e-324, 5e-324], "at least 1 px"),
        ([10, 10, 10.5, 30], "at least 1 px"),
        ([0, 0, 3e9, 240], "too far past the 320x240 image"),
        ([-1e100, -1e100, 1e100, 1e100], "too far past"),
        ([-W - 1, 0, 10, 10], "x within [-320, 640]"),
        ([0, 0, 10, 2 * H + 1], "y within [-240, 480]"),
        ([5, 5, 5, 9], "zero or negative area"),
        ([W, 0, W + 5, 5], "wholly outside"),
        ([0, 0, float("nan"), 5], "NaN or infinity"),
        ([0, 0, 10**400, 5], "too large"),
    ],
)
def test_refused_boxes_name_the_box_and_the_rule(box: list, why: str) -> None:
    with pytest.raises(BoxError) as e:
        validate_boxes([[1, 1, 50, 50], box], W, H, label="boxes[3]")
    assert str(e.value).startswith("boxes[3][1] = ") and why in str(e.value), str(e.value)


# Boxes at the edges of the rules: each must pass, crop, and map back to finite points.
EDGE_BOXES = [
    [0, 0, MIN_BOX_SIZE, MIN_BOX_SIZE],
    [W - 1, H - 1, W - 1 + MIN_BOX_SIZE, H - 1 + MIN_BOX_SIZE],
    [-BOX_MARGIN * W, -BOX_MARGIN * H, (1 + BOX_MARGIN) * W, (1 + BOX_MARGIN) * H],
    [-BOX_MARGIN * W, H - 1, 0.5, H - 1 + MIN_BOX_SIZE],
    [0.5, 0.5, 0.5 + MIN_BOX_SIZE, (1 + BOX_MARGIN) * H],
]


@pytest.mark.parametrize("box", EDGE_BOXES)
def test_what_validation_lets_through_crops_and_maps_back_finitely(box: list) -> None:
    (checked,) = validate_boxes([box], W, H)
    center, scale = box_to_center_scale(xyxy_to_xywh(checked), INPUT)
    image = np.full((H, W, 3), 200, np.uint8)
    crop = crop_person(image, center, scale, INPUT)
    assert crop.shape == (INPUT[1], INPUT[0], 3)
    inverse = get_warp_matrix(center, scale, 0.0, INPUT, inverse=True)
    assert np.isfinite(inverse).all()
    corners = np.array([[[0.0, 0.0], [INPUT[0], INPUT[1]]]])
    back = crop_to_image(corners, center[None], scale[None], INPUT)
    assert np.isfinite(back).all()
    # the crop's region holds the box (independent: the region is the box enlarged)
    assert back[0, 0, 0] <= checked[0] and back[0, 1, 0] >= checked[2]
    assert back[0, 0, 1] <= checked[1] and back[0, 1, 1] >= checked[3]


def test_detector_boxes_are_held_to_the_same_rules() -> None:
    boxes = np.array(
        [
            [10, 10, 100, 200],  # fine
            [0, 0, 5e-324, 5e-324],  # too small
            [np.nan, 0, 5, 5],  # not finite
            [-1e100, -1e100, 1e100, 1e100],  # too far
            [20, 30, 60, 90],  # fine
        ]
    )
    found = PersonBoxes(boxes, np.array([0.9, 0.8, 0.7, 0.6, 0.5]), "detector")
    kept = found.usable(W, H)
    np.testing.assert_array_equal(kept.boxes, boxes[[0, 4]])
    np.testing.assert_array_equal(kept.scores, [0.9, 0.5])
    assert kept.source == "detector"
    fine = PersonBoxes(boxes[[0, 4]], None, "detector")
    assert fine.usable(W, H) is fine
