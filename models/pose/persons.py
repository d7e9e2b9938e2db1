"""Persons: the one place where person boxes are validated, and the result type for one person.

A box is ``[x1, y1, x2, y2]`` in image pixels (``(x, y)``, the image as displayed). Boxes come
from the client, from a person detector, or stand for the whole image; :class:`PersonBoxes`
records which, and :class:`PersonResult` carries it through to the answer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

BoxSource = Literal["client", "detector", "image"]
"""Where a person box came from: the client's request, a person detector, or the whole image."""


class BoxError(ValueError):
    """A person box that cannot be used; the message names the box (``boxes[i][j] = ...``)."""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
        v, (bool, np.bool_)
    )


def resize_points(points: np.ndarray, fx: float, fy: float) -> np.ndarray:
    """``(..., 2)`` ``(x, y)`` px of an image -> px of that image resized by ``(fx, fy)``
    (new size / old size per axis): pixel centres map as under a resize,
    ``x' = (x + 0.5) * fx - 0.5``. Float64."""
    f = np.array([fx, fy])
    return (np.asarray(points, dtype=np.float64) + 0.5) * f - 0.5


MIN_BOX_SIZE = 1.0
"""The smallest width and height of a person box, image px (a smaller box has no pixel to
crop; a subnormal one would make the crop's warp singular)."""

BOX_MARGIN = 1.0
"""How far a box may reach past the image, in image sizes: every ``x`` within
``[-BOX_MARGIN * width, (1 + BOX_MARGIN) * width]``, every ``y`` likewise with the height
(beyond, the crop would be nearly all padding, and drawing would overflow int32 pixels)."""


def box_problem(box: Sequence[float], width: int, height: int) -> str | None:
    """Why ``[x1, y1, x2, y2]`` (image px, finite floats) cannot be a person box of a
    ``width`` x ``height`` image, or ``None`` when it can (the rules of :func:`validate_boxes`
    past the type checks)."""
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        return "has zero or negative area (need x2 > x1 and y2 > y1)"
    if x2 - x1 < MIN_BOX_SIZE or y2 - y1 < MIN_BOX_SIZE:
        return (
            f"is {x2 - x1:.3g}x{y2 - y1:.3g} px; a box is at least {MIN_BOX_SIZE:g} px wide "
            "and high"
        )
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        return f"lies wholly outside the {width}x{height} image"
    mx, my = BOX_MARGIN * width, BOX_MARGIN * height
    if x1 < -mx or y1 < -my or x2 > width + mx or y2 > height + my:
        return (
            f"reaches too far past the {width}x{height} image (x within "
            f"[{-mx:g}, {width + mx:g}], y within [{-my:g}, {height + my:g}])"
        )
    return None


def validate_boxes(
    boxes: np.ndarray | Sequence[Any], width: int, height: int, *, label: str = "boxes"
) -> np.ndarray:
    """Check one image's person boxes against its size.

    A box may stick out of the image, but not lie wholly outside it, nor reach more than
    :data:`BOX_MARGIN` image sizes past it; it is at least :data:`MIN_BOX_SIZE` px wide and
    high. Boxes that pass give finite crops and keypoints (:mod:`models.pose.geometry` never raises
    on them).

    Args:
        boxes: ``(N, 4)`` ``[x1, y1, x2, y2]`` image px (an array or nested lists).
        width, height: the image size, pixels.
        label: how messages name the list (``boxes[2]`` -> ``boxes[2][0] = [...]``).

    Returns:
        ``(N, 4)`` float64 boxes, image px.

    Raises:
        BoxError: a box that is not 4 numbers, NaN/inf, too large a number, zero or negative
            area, smaller than the minimum, wholly outside the ``width`` x ``height`` image or
            too far past it.
    """
    if isinstance(boxes, np.ndarray):
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise BoxError(f"{label} must be an (N, 4) array, got shape {boxes.shape}")
        rows: Sequence[Any] = boxes.tolist()
    else:
        rows = boxes
    out = np.zeros((len(rows), 4), dtype=np.float64)
    for j, box in enumerate(rows):
        where = f"{label}[{j}] = {_short(box)}"
        if not isinstance(box, (list, tuple, np.ndarray)) or len(box) != 4:
            raise BoxError(f"{label}[{j}] must be a list of 4 numbers [x1, y1, x2, y2]")
        if not all(_is_number(v) for v in box):
            raise BoxError(f"{label}[{j}] must contain numbers only, got {_short(box)}")
        try:
            x1, y1, x2, y2 = (float(v) for v in box)
        except OverflowError:
            raise BoxError(f"{where} contains a number too large for a pixel coordinate") from None
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            raise BoxError(f"{where} contains NaN or infinity")
        problem = box_problem((x1, y1, x2, y2), width, height)
        if problem is not None:
            raise BoxError(f"{where} {problem}")
        out[j] = (x1, y1, x2, y2)
    return out


@dataclass(frozen=True)
class PersonBoxes:
    """The persons of one image: where they are, how sure, and who said so.

    Build them with :meth:`from_client` (validated) or :meth:`whole_image`; a person detector
    builds them directly with ``source="detector"`` and its scores.

    Attributes:
        boxes: ``(N, 4)`` float64 ``[x1, y1, x2, y2]`` image px.
        scores: ``(N,)`` detector confidences, or ``None`` (boxes from the client or the image).
        source: where the boxes came from.
    """

    boxes: np.ndarray
    scores: np.ndarray | None
    source: BoxSource

    @classmethod
    def from_client(
        cls, boxes: np.ndarray | Sequence[Any], width: int, height: int, *, label: str = "boxes"
    ) -> PersonBoxes:
        """A caller's boxes, validated by :func:`validate_boxes` (raises :class:`BoxError`)."""
        return cls(validate_boxes(boxes, width, height, label=label), None, "client")

    @classmethod
    def whole_image(cls, width: int, height: int) -> PersonBoxes:
        """One person filling the ``width`` x ``height`` image."""
        return cls(np.array([[0.0, 0.0, float(width), float(height)]]), None, "image")

    def __len__(self) -> int:
        return len(self.boxes)

    def usable(self, width: int, height: int) -> PersonBoxes:
        """These boxes without the ones :func:`box_problem` refuses in a ``width`` x ``height``
        image (non-finite, too small, outside or too far past it): what a detector found is
        held to the rules a client's boxes are."""
        b = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        keep = [
            k
            for k, box in enumerate(b.tolist())
            if all(math.isfinite(v) for v in box) and box_problem(box, width, height) is None
        ]
        if len(keep) == len(b):
            return self
        scores = None if self.scores is None else np.asarray(self.scores)[keep]
        return replace(self, boxes=b[keep], scores=scores)

    def resized(self, fx: float, fy: float | None = None) -> PersonBoxes:
        """These boxes in the image resized by ``(fx, fy)`` (``fy`` = ``fx`` when omitted):
        corners map by :func:`resize_points`, so box centres move as pixel centres do."""
        corners = resize_points(self.boxes.reshape(-1, 2), fx, fx if fy is None else fy)
        return replace(self, boxes=corners.reshape(-1, 4))


@dataclass
class PersonResult:
    """One person's answer, carrying everything needed to report or draw it.

    Attributes:
        box: ``(4,)`` ``[x1, y1, x2, y2]`` image px.
        keypoints: ``(K, 2)`` float32 ``(x, y)`` image px.
        scores: ``(K,)`` float32 heatmap maxima.
        center: ``(2,)`` centre and ``scale``: ``(2,)`` size ``(w, h)`` of the region that was
            cropped, image px.
        box_score: the detector's confidence in ``box``; ``None`` when the box was not detected.
        box_source: ``"client"``, ``"detector"`` or ``"image"`` (the whole image).
        heatmaps: ``(K, H, W)`` float32 heatmap px when asked for, else ``None``.
    """

    box: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    box_score: float | None = None
    box_source: BoxSource = "client"
    heatmaps: np.ndarray | None = None

    def resized(self, fx: float, fy: float | None = None) -> PersonResult:
        """This person in its image resized by ``(fx, fy)`` (new size / old size per axis;
        ``fy`` = ``fx`` when omitted): keypoints, box corners and centre map by
        :func:`resize_points`, the region size ``scale`` is multiplied; heatmaps (heatmap px)
        and scores are unchanged."""
        f = (fx, fx if fy is None else fy)
        return replace(
            self,
            keypoints=resize_points(self.keypoints, *f).astype(self.keypoints.dtype),
            box=resize_points(np.asarray(self.box).reshape(2, 2), *f).reshape(4),
            center=resize_points(self.center, *f),
            scale=np.asarray(self.scale, dtype=np.float64) * np.array(f),
        )
