"""The ``boxes`` form field: per image a list of person boxes ``[x1, y1, x2, y2]``.

Format: a JSON list with one entry per uploaded file, in upload order. Each entry is either
``null`` (the whole image is one person) or a list of boxes in the pixels of the image as
displayed (after EXIF orientation). An empty list means "no persons in this image".
A box may stick out of the image, but not lie wholly outside it.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from app.errors import ApiError


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _bad(message: str) -> ApiError:
    return ApiError(422, "invalid_boxes", message)


def parse_boxes(text: str | None, num_images: int, max_boxes: int) -> list[list[Any] | None]:
    """Parse the JSON structure (no image sizes needed yet).

    Args:
        text: the raw form field; ``None`` or blank = every image is one whole-image person.
        num_images: the number of uploaded files; the list must have exactly this many entries.
        max_boxes: most boxes accepted for one image.

    Returns:
        Per image ``None`` or the raw list of boxes (checked by :func:`check_boxes`).

    Raises:
        ApiError: 422 ``invalid_boxes`` naming the problem.
    """
    if text is None or not text.strip():
        return [None] * num_images
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, int too long, too deep
        raise _bad(f"boxes is not valid JSON: {e}") from None
    if not isinstance(value, list):
        raise _bad("boxes must be a JSON list with one entry (a list of boxes, or null) per file")
    if len(value) != num_images:
        raise _bad(
            f"boxes has {len(value)} entries but {num_images} file(s) were uploaded; "
            "give one list of [x1, y1, x2, y2] boxes (or null) per file, in upload order"
        )
    for i, entry in enumerate(value):
        if entry is None:
            continue
        if not isinstance(entry, list):
            raise _bad(f"boxes[{i}] must be a list of [x1, y1, x2, y2] boxes or null")
        if len(entry) > max_boxes:
            raise _bad(f"boxes[{i}] has {len(entry)} boxes; at most {max_boxes} per image")
        for j, box in enumerate(entry):
            if not isinstance(box, list) or len(box) != 4:
                raise _bad(f"boxes[{i}][{j}] must be a list of 4 numbers [x1, y1, x2, y2]")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box):
                raise _bad(f"boxes[{i}][{j}] must contain numbers only, got {_short(box)}")
    return value


def check_boxes(raw: list[Any] | None, index: int, width: int, height: int) -> np.ndarray | None:
    """Validate one image's boxes against its size.

    Args:
        raw: the entry from :func:`parse_boxes`.
        index: the image's position, for messages.
        width, height: the oriented image size in pixels.

    Returns:
        ``(N, 4)`` float64 xyxy boxes in image pixels, or ``None`` (the whole image).

    Raises:
        ApiError: 422 for NaN/inf, zero or negative area, or a box wholly outside the image.
    """
    if raw is None:
        return None
    out = np.zeros((len(raw), 4), dtype=np.float64)
    for j, box in enumerate(raw):
        where = f"boxes[{index}][{j}] = {_short(box)}"
        try:
            x1, y1, x2, y2 = (float(v) for v in box)
        except OverflowError:
            raise _bad(f"{where} contains a number too large for a pixel coordinate") from None
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            raise _bad(f"{where} contains NaN or infinity")
        if x2 <= x1 or y2 <= y1:
            raise _bad(f"{where} has zero or negative area (need x2 > x1 and y2 > y1)")
        if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
            raise _bad(f"{where} lies wholly outside the {width}x{height} image")
        out[j] = (x1, y1, x2, y2)
    return out
