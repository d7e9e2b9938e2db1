"""Which boxes each image gets: the client's, a person detector's, or the whole image.

Written once here; :class:`models.inference.pipeline.PosePipeline` (CLI, evaluation) and the service
(:mod:`app.engine.service`, around its detector batcher) both follow it:

1. :func:`given_boxes`: the client's boxes, validated against the image's size and mapped
   into the pixels the image was decoded at (a :class:`Frame`);
2. :func:`to_detect`: which images go to the detector (:data:`DetectMode`);
3. the caller runs its detector on those images (synchronously or through a batcher);
4. :func:`person_boxes`: per image the detector's boxes, else the client's, else the whole
   image.

Boxes are ``[x1, y1, x2, y2]``: the client's in the original image's px, the results in the
decoded image's px (the same at full size, :class:`FullSize`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from models.pose.persons import PersonBoxes

__all__ = [
    "DetectMode",
    "Frame",
    "FullSize",
    "PipelineError",
    "given_boxes",
    "needs_detection",
    "person_boxes",
    "to_detect",
]

DetectMode = Literal["auto", "true", "false"]
"""``auto``: detect only in images without client boxes (when there is a detector); ``true``:
detect in every image (the detector's boxes replace the client's); ``false``: never detect
(images without client boxes are one whole-image person)."""

ClientBoxes = PersonBoxes | np.ndarray | Sequence[Any] | None
"""One image's boxes from the caller: ``(N, 4)`` image px (validated here), a
:class:`~models.pose.persons.PersonBoxes` (used as given), or ``None`` (none given)."""


class PipelineError(ValueError):
    """A request the pipeline cannot serve as asked (``detect="true"`` without a detector)."""


class Frame(Protocol):
    """How an image as decoded relates to the original (e.g.
    :class:`app.intake.reduction.Reduction`).

    Attributes:
        size: the original image's ``(W, H)``, px.
    """

    @property
    def size(self) -> tuple[int, int]: ...

    def boxes_in(self, boxes: PersonBoxes) -> PersonBoxes:
        """Boxes in original image px -> decoded image px."""
        ...


@dataclass(frozen=True)
class FullSize:
    """An image decoded at full size: the decoded px are the original's."""

    size: tuple[int, int]

    @classmethod
    def of(cls, image: Any) -> FullSize:
        """The frame of an ``(H, W, 3)`` image (numpy or torch)."""
        return cls((int(image.shape[1]), int(image.shape[0])))

    def boxes_in(self, boxes: PersonBoxes) -> PersonBoxes:
        return boxes


def needs_detection(client_boxes: ClientBoxes, detect: DetectMode, *, has_detector: bool) -> bool:
    """Whether one image goes to the detector.

    ``auto``: when the client gave no boxes and there is a detector; ``true``: always;
    ``false``: never.

    Raises:
        PipelineError: ``detect="true"`` without a detector; an unknown ``detect`` value.
    """
    if detect == "false":
        return False
    if detect == "true":
        if not has_detector:
            raise PipelineError("detect=true but no person detector is loaded")
        return True
    if detect == "auto":
        return client_boxes is None and has_detector
    raise PipelineError(f"detect must be auto, true or false, got {detect!r}")


def given_boxes(
    boxes: Sequence[ClientBoxes] | None, frames: Sequence[Frame]
) -> list[PersonBoxes | None]:
    """Per image the caller's boxes, validated against the original image's size and mapped
    to the decoded image's px (a ``PersonBoxes`` is used as given), or ``None`` where none
    were given; ``boxes=None`` = none anywhere.

    Raises:
        ValueError: ``len(boxes) != len(frames)``.
        BoxError: naming the box (``boxes[i][j] = ...``).
    """
    if boxes is not None and len(boxes) != len(frames):
        raise ValueError(f"got {len(frames)} images but {len(boxes)} box lists")
    out: list[PersonBoxes | None] = []
    for i, frame in enumerate(frames):
        raw = None if boxes is None else boxes[i]
        if raw is None or isinstance(raw, PersonBoxes):
            out.append(raw)
        else:
            given = PersonBoxes.from_client(raw, *frame.size, label=f"boxes[{i}]")
            out.append(frame.boxes_in(given))
    return out


def to_detect(
    boxes: Sequence[ClientBoxes] | None,
    detect: DetectMode,
    *,
    num_images: int,
    has_detector: bool,
) -> list[int]:
    """The indexes of the images that go to the detector (:func:`needs_detection` of each
    image's client boxes; ``boxes=None`` = none anywhere).

    Raises:
        PipelineError: see :func:`needs_detection`.
    """
    return [
        i
        for i in range(num_images)
        if needs_detection(None if boxes is None else boxes[i], detect, has_detector=has_detector)
    ]


def person_boxes(
    given: Sequence[PersonBoxes | None],
    found: Mapping[int, PersonBoxes],
    frames: Sequence[Frame],
) -> list[PersonBoxes]:
    """Per image its persons in decoded px: the detector's (``found``, by image index), else
    the client's (``given``), else the whole original image."""
    out = []
    for i, (g, frame) in enumerate(zip(given, frames, strict=True)):
        p = found.get(i, g)
        out.append(p if p is not None else frame.boxes_in(PersonBoxes.whole_image(*frame.size)))
    return out
