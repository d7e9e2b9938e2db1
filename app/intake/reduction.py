"""Reduced-scale decoding: which factor a large JPEG is decoded at, and the pixel map it implies.

A JPEG can be decoded at 1/2, 1/4 or 1/8 of its size per axis for a fraction of the memory and
time of a full decode (libjpeg's scaled inverse DCT, Pillow's ``Image.draft``): each decoded
pixel is the mean of a ``factor x factor`` block of the original. The pose model's crops and
the detector's input are a few hundred pixels high, so a 39 MP photo rarely needs its full
resolution. ``HEATPOSE_DECODE_MAX_SIDE`` sets how far a JPEG may be reduced
(:func:`jpeg_reduction`); 0 decodes everything at full size.

Answers stay in the ORIGINAL image's pixels. :class:`Reduction` is the one map between the two:
client boxes go in (:meth:`Reduction.boxes_in`), results come out
(:meth:`Reduction.people_out`). Pixel centres map as under any resize by ``f`` (here
``f = 1 / factor``): ``x_decoded = (x + 0.5) * f - 0.5``
(:func:`models.pose.persons.resize_points`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from models.pose import geometry
from models.pose.persons import BoxError, PersonBoxes, PersonResult, validate_boxes

if TYPE_CHECKING:
    from models.pose.crops import Pixels

FACTORS = (8, 4, 2)
"""The reductions a JPEG decoder offers, largest first."""


def jpeg_reduction(size: tuple[int, int], max_side: int) -> int:
    """The factor (1, 2, 4 or 8) a ``size = (W, H)`` JPEG is decoded at under ``max_side``.

    The largest of 2, 4, 8 that keeps the longer side at least ``max_side`` pixels (``1`` when
    the image is no longer than ``max_side``, or ``max_side`` is 0), then what Pillow's
    ``JpegImageFile.draft`` grants for a request of ``(W // factor, H // factor)`` (less for an
    image whose shorter side is under ``factor`` pixels): the decoded size is then
    ``(ceil(W / factor), ceil(H / factor))``.
    """
    w, h = size
    longer = max(w, h)
    if max_side <= 0 or longer <= max_side:
        return 1
    return _granted(size, next((f for f in FACTORS if -(-longer // f) >= max_side), 1))


def _granted(size: tuple[int, int], want: int) -> int:
    """The factor Pillow's ``draft`` grants a ``(W, H)`` JPEG asked for 1/``want``."""
    if want == 1:
        return 1
    w, h = size
    granted = min(w // max(1, w // want), h // max(1, h // want))  # as Pillow's draft decides
    return next((f for f in (*FACTORS, 1) if granted >= f), 1)


@dataclass(frozen=True)
class PoseNeed:
    """What one image's pose crops need from its decode, when the detector will not see it.

    Attributes:
        boxes: the client's ``(N, 4)`` ``[x1, y1, x2, y2]`` boxes, original image px, as sent
            (validated here as the service will); ``None`` = one person, the whole image.
        input_size: the model input ``(w, h)``, crop-input px.
    """

    boxes: np.ndarray | Sequence[Any] | None
    input_size: tuple[int, int]

    def factor(self, size: tuple[int, int]) -> int:
        """The largest factor (1, 2, 4 or 8, as Pillow grants it for a ``size = (W, H)`` JPEG)
        at which every person's crop region (:func:`models.pose.geometry.box_to_center_scale`, in
        decoded px) is still at least the model input per axis: each crop pixel then spans at
        least one decoded pixel, so the crop is never enlarged from the reduced image. ``1``
        for boxes the service will refuse (it says why). ``size`` is the stored size; the
        image as displayed may have its axes swapped (EXIF), so both are checked."""
        want = min(self._want(size), self._want((size[1], size[0])))
        return _granted(size, want)

    def _want(self, size: tuple[int, int]) -> int:
        w, h = size
        if self.boxes is None:
            return _whole_image_want(size, self.input_size)
        try:
            boxes = validate_boxes(self.boxes, w, h)
        except (BoxError, ValueError, TypeError):
            return 1
        return _want(boxes, self.input_size)


def _want(boxes: np.ndarray, input_size: tuple[int, int]) -> int:
    """The largest of :data:`FACTORS` (or 1) keeping every ``(N, 4)`` box's crop region at
    least ``input_size`` per axis."""
    if len(boxes) == 0:
        return 1
    _, scale = geometry.box_to_center_scale(geometry.xyxy_to_xywh(boxes), input_size)
    least = (scale / np.asarray(input_size, dtype=np.float64)).min()  # px per crop px
    return next((f for f in FACTORS if least >= f), 1)


@functools.lru_cache(maxsize=256)
def _whole_image_want(size: tuple[int, int], input_size: tuple[int, int]) -> int:
    """:func:`_want` of one person filling a ``size`` image (most uploads: a few sizes)."""
    return _want(PersonBoxes.whole_image(*size).boxes, input_size)


def decode_factor(size: tuple[int, int], max_side: int, need: PoseNeed | None = None) -> int:
    """The factor a ``size = (W, H)`` JPEG is decoded at: :func:`jpeg_reduction` under
    ``max_side``, or more where ``need`` (the image's pose crops alone) allows it
    (:meth:`PoseNeed.factor`). ``max_side`` 0 decodes at full size whatever ``need`` says."""
    if max_side <= 0:
        return 1
    base = jpeg_reduction(size, max_side)
    return base if need is None else max(base, need.factor(size))


def reduced_size(size: tuple[int, int], factor: int) -> tuple[int, int]:
    """``(W, H)`` decoded at 1/``factor``: ``(ceil(W / factor), ceil(H / factor))``."""
    return -(-size[0] // factor), -(-size[1] // factor)


@dataclass(frozen=True)
class Reduction:
    """How a decoded image relates to the original image (both oriented as displayed).

    Attributes:
        factor: 1 (decoded at full size), 2, 4 or 8: the decoded image is 1/``factor`` of the
            original per axis.
        size: the original image's ``(W, H)`` in pixels.
    """

    factor: int
    size: tuple[int, int]

    @classmethod
    def none(cls, image: Pixels) -> Reduction:
        """An ``(H, W, 3)`` image decoded at full size."""
        return cls(1, (int(image.shape[1]), int(image.shape[0])))

    def boxes_in(self, boxes: PersonBoxes) -> PersonBoxes:
        """Boxes in original image px -> decoded image px (unchanged at factor 1)."""
        if self.factor == 1:
            return boxes
        return boxes.resized(1.0 / self.factor)

    def people_out(self, people: list[PersonResult]) -> list[PersonResult]:
        """Persons found in the decoded image -> original image px: keypoints, box, region
        (unchanged at factor 1; heatmaps stay in heatmap px)."""
        if self.factor == 1:
            return people
        return [p.resized(float(self.factor)) for p in people]

    def people_in(self, people: list[PersonResult]) -> list[PersonResult]:
        """Persons in original image px -> decoded image px (to draw them on the decoded
        image; unchanged at factor 1)."""
        if self.factor == 1:
            return people
        return [p.resized(1.0 / self.factor) for p in people]
