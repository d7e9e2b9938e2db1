"""Admission control on decoded pixels: memory is budgeted, not hoped for.

A decoded image costs ``3 x width x height`` bytes and more while it is cropped or rendered, so
the per-image pixel limit alone bounds neither a request (16 images) nor the process (many
requests). :class:`PixelBudget` holds two budgets, counted in the pixels the images decode to
(read from the image headers before anything is decoded; a large JPEG decoded at reduced scale,
``HEATPOSE_DECODE_MAX_SIDE``, counts its reduced size):

- per request (``HEATPOSE_MAX_REQUEST_PIXELS``, default 2 x ``HEATPOSE_MAX_IMAGE_PIXELS``): a
  request over it can never be served: 413 ``too_many_pixels`` naming the limit;
- process-wide (``HEATPOSE_MAX_INFLIGHT_PIXELS``, default 2 x ``HEATPOSE_MAX_IMAGE_PIXELS``):
  the pixels of all requests being decoded, cropped or rendered at once. A request waits for
  room until its deadline (then 504); one that could never fit gets 413.

A :class:`PixelLease` is one request's share, taken by :func:`app.engine.inference.read_uploads`
and given back when the request ends (:meth:`app.engine.service.PoseService.infer`).

:func:`fit_for_render` bounds ``/visualize``'s rendering (``HEATPOSE_MAX_RENDER_PIXELS``): a
larger image is drawn at a reduced size, its persons scaled by the same factors.
"""

from __future__ import annotations

import asyncio
import math
import time

import numpy as np

from app.engine.failures import DeadlineExceeded
from app.errors import ApiError
from app.render.overlay import resize_with
from models.pose.persons import PersonResult


class PixelBudget:
    """The process-wide budget of pixels in flight (one per app; see the module docstring)."""

    def __init__(self, *, per_request: int, total: int) -> None:
        self.per_request = per_request
        self.total = total
        self.in_use = 0
        self._changed: asyncio.Condition | None = None

    def check(self, pixels: int) -> None:
        """413 unless a request of ``pixels`` could ever be admitted."""
        for limit, var in (
            (self.per_request, "HEATPOSE_MAX_REQUEST_PIXELS"),
            (self.total, "HEATPOSE_MAX_INFLIGHT_PIXELS"),
        ):
            if pixels > limit:
                raise ApiError(
                    413,
                    "too_many_pixels",
                    f"the images of this request decode to {pixels:,} pixels in all; at most "
                    f"{limit:,} are decoded for one request ({var}): send fewer or smaller images",
                )

    async def acquire(self, pixels: int, deadline: float) -> None:
        """Wait until ``pixels`` fit beside the others, at most until ``deadline`` (monotonic).

        Raises:
            ApiError: 413, the request can never fit. DeadlineExceeded: no room in time.
        """
        self.check(pixels)
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.in_use + pixels <= self.total),
                    max(0.0, deadline - time.monotonic()),
                )
            except asyncio.TimeoutError:
                raise DeadlineExceeded(
                    "the request passed its deadline waiting for memory to decode its images "
                    "(HEATPOSE_MAX_INFLIGHT_PIXELS)"
                ) from None
            self.in_use += pixels

    async def release(self, pixels: int) -> None:
        """Give ``pixels`` back and wake the waiting requests."""
        if pixels <= 0 or self._changed is None:
            return
        async with self._changed:
            self.in_use -= pixels
            self._changed.notify_all()


class PixelLease:
    """One request's pixels: :meth:`acquire` once its images' sizes are known, :meth:`release`
    when it ends (idempotent)."""

    def __init__(self, budget: PixelBudget, deadline: float) -> None:
        self.budget = budget
        self.deadline = deadline
        self.pixels = 0

    async def acquire(self, pixels: int) -> None:
        """Take ``pixels`` more for this request (see :meth:`PixelBudget.acquire`)."""
        self.budget.check(self.pixels + pixels)
        await self.budget.acquire(pixels, self.deadline)
        self.pixels += pixels

    async def acquire_with(self, pixels: int, extra: int) -> None:
        """Take ``pixels`` (decoded images: 413 when they can never fit) and ``extra`` more
        (what the person detector holds for them, :func:`models.detection.detector_input.
        detector_pixels`) as far as the limits allow: a request that fits without its extra is
        never refused for it; it waits for the whole budget instead and runs alone."""
        budget = self.budget
        self.budget.check(self.pixels + pixels)
        room = min(budget.per_request, budget.total) - self.pixels
        await self.acquire(max(pixels, min(pixels + extra, room)))

    async def release(self) -> None:
        """Give everything back."""
        pixels, self.pixels = self.pixels, 0
        await self.budget.release(pixels)


def fit_for_render(
    image: np.ndarray, people: list[PersonResult], max_pixels: int
) -> tuple[np.ndarray, list[PersonResult]]:
    """``image (H, W, 3)`` shrunk to at most ``max_pixels`` (area interpolation) and ``people``
    mapped into it (:func:`app.render.overlay.resize_with`).

    Images within the bound come back unchanged (the same objects).
    """
    height, width = image.shape[:2]
    if width * height <= max_pixels:
        return image, people
    f = math.sqrt(max_pixels / (width * height))
    return resize_with(image, people, (max(1, int(width * f)), max(1, int(height * f))))
