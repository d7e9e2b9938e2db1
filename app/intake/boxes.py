"""The ``boxes`` form field: per image a list of person boxes ``[x1, y1, x2, y2]``.

Format: a JSON list with one entry per uploaded file, in upload order. Each entry is either
``null`` (the whole image is one person) or a list of boxes in the pixels of the image as
displayed (after EXIF orientation). An empty list means "no persons in this image".

Only the JSON structure is checked here (before any image is decoded); each box's values are
validated against its image by :func:`models.pose.persons.validate_boxes`, the one box check.
"""

from __future__ import annotations

import json
from typing import Any

from app.errors import ApiError


def _bad(message: str) -> ApiError:
    return ApiError(422, "invalid_boxes", message)


def parse_boxes_field(text: str | None, num_images: int, max_boxes: int) -> list[list[Any] | None]:
    """Parse the JSON structure (no image sizes needed yet).

    Args:
        text: the raw form field; ``None`` or blank = every image is one whole-image person.
        num_images: the number of uploaded files; the list must have exactly this many entries.
        max_boxes: most boxes accepted for one image.

    Returns:
        Per image ``None`` or its raw list of boxes (validated later, against the image size).

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
    return value
