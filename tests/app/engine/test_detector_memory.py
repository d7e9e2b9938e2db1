"""What the detector path holds is bounded and budgeted: an image is brought down to the
largest detector input before it is queued, its boxes map back to the image's pixels, and the
pixel budget charges the detector's share (:mod:`models.detection.detector_input`)."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
import torch

from models.detection.detector_input import (
    DETECTOR_MAX_SIDE,
    DETECTOR_MIN_SIDE,
    DETECTOR_PIXEL_COST,
    detector_pixels,
    shrink_for_detector,
)
from tests.helpers.detectors import StandInDetector
from tests.helpers.images import encode

pytestmark = pytest.mark.anyio

W, H = 4000, 1500  # a wide photo: the longer side sets the factor (1333 / 4000)
RECT = (1000, 300, 2200, 1200)  # a bright person-sized rectangle, image px (x1, y1, x2, y2)


def scene() -> np.ndarray:
    a = np.zeros((H, W, 3), np.uint8)
    x1, y1, x2, y2 = RECT
    a[y1:y2, x1:x2] = 255
    return a


def test_shrink_brings_large_images_to_the_largest_detector_input() -> None:
    a = scene()
    small, fx, fy = shrink_for_detector(a)
    assert small.shape == (round(H * DETECTOR_MAX_SIDE / W), DETECTOR_MAX_SIDE, 3)
    assert (fx, fy) == (small.shape[1] / W, small.shape[0] / H)
    t_small, tfx, tfy = shrink_for_detector(torch.from_numpy(a))
    assert tuple(t_small.shape) == small.shape and (tfx, tfy) == (fx, fy)
    diff = np.abs(t_small.numpy().astype(int) - small.astype(int))
    assert diff.mean() < 0.5  # both average areas; they split edge pixels differently
    tall = np.zeros((1200, 1000, 3), np.uint8)  # the shorter side sets it (800 / 1000)
    assert shrink_for_detector(tall)[0].shape == (960, DETECTOR_MIN_SIDE, 3)
    ok = np.zeros((480, 640, 3), np.uint8)
    assert shrink_for_detector(ok) == (ok, 1.0, 1.0) or shrink_for_detector(ok)[0] is ok


def test_detector_share_is_bounded_by_the_largest_input() -> None:
    assert detector_pixels(640 * 480) == 640 * 480 * DETECTOR_PIXEL_COST
    big = detector_pixels(8000 * 5000)
    assert big == DETECTOR_MIN_SIDE * DETECTOR_MAX_SIDE * DETECTOR_PIXEL_COST


class BrightBox(StandInDetector):
    """A detector stand-in: one person, the box of the bright pixels of the image it is given
    (so its answer is in the pixels of what it saw); records the sizes it saw, holds on
    ``gate`` (:class:`tests.helpers.detectors.StandInDetector`)."""

    def __init__(self) -> None:
        super().__init__(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
        self.sizes: list[tuple[int, int]] = []
        self.lookup = self.bright

    def bright(self, im: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = np.asarray(im)
        self.sizes.append((a.shape[1], a.shape[0]))
        ys, xs = np.nonzero(a[..., 0] > 127)
        if len(xs) == 0:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        box = [xs.min() - 0.5, ys.min() - 0.5, xs.max() + 0.5, ys.max() + 0.5]
        return np.array([box], np.float32), np.array([0.9], np.float32)


async def test_the_detector_sees_a_small_copy_and_the_budget_charges_its_share(
    serve_app,
) -> None:
    det = BrightBox()
    files = [("files", ("big.png", encode(scene()), "image/png"))]
    limits = {"max_image_pixels": W * H, "max_inflight_pixels": 4 * W * H}
    limits["max_request_pixels"] = 4 * W * H
    async with serve_app(stand_in=det, **limits) as (client, app):
        det.sizes.clear()
        det.gate = threading.Event()
        pending = asyncio.ensure_future(client.post("/predict", files=files))
        budget = app.state.pixel_budget
        for _ in range(200):  # until the request holds its pixels and waits on the detector
            await asyncio.sleep(0.02)
            if budget.in_use and app.state.service.detector_batcher.in_flight:
                break
        held = budget.in_use
        det.gate.set()
        r = await pending
        assert budget.in_use == 0
    assert held == W * H + detector_pixels(W * H)
    assert r.status_code == 200, r.text
    assert det.sizes == [(DETECTOR_MAX_SIDE, round(H * DETECTOR_MAX_SIDE / W))]
    (person,) = r.json()["images"][0]["persons"]
    # the box found in the small copy, in the upload's pixels: the rectangle, within a pixel
    # of the small copy (W / 1333 = 3 image px)
    np.testing.assert_allclose(person["bbox"], RECT, atol=W / DETECTOR_MAX_SIDE + 0.5)


@pytest.mark.slow
async def test_a_request_that_fits_without_the_detector_share_is_not_refused_for_it(
    serve_app,
) -> None:
    det = BrightBox()
    files = [("files", ("big.png", encode(scene()), "image/png"))]
    async with serve_app(stand_in=det, max_image_pixels=W * H) as (client, app):
        det.gate = threading.Event()
        pending = asyncio.ensure_future(client.post("/predict", files=files))
        budget = app.state.pixel_budget
        for _ in range(200):
            await asyncio.sleep(0.02)
            if budget.in_use and app.state.service.detector_batcher.in_flight:
                break
        held = budget.in_use
        det.gate.set()
        r = await pending
    assert r.status_code == 200, r.text
    assert held == budget.total == 2 * W * H  # the whole budget: it runs alone
