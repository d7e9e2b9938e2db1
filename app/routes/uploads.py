"""What ``/predict`` and ``/visualize`` share: reading and decoding the uploaded images.

:func:`read_images` checks the multipart files (count, content types), reads them and decodes
them in a worker thread (``anyio.to_thread``), bounded so decoding cannot starve the model's
thread of CPU. Cropping is the service's (:meth:`app.service.PoseService.predict`).
"""

from __future__ import annotations

import anyio
import anyio.to_thread
from fastapi import UploadFile

from app.errors import ApiError
from app.intake import DecodedImage, check_content_type, decode_image
from app.settings import Settings


async def read_images(
    files: list[UploadFile], settings: Settings, limiter: anyio.CapacityLimiter | None = None
) -> list[DecodedImage]:
    """Validate, read and decode the uploads of one request.

    Raises:
        ApiError: 400/413/415/422 for bad input (see :mod:`app.intake`).
    """
    if not files:
        raise ApiError(422, "no_files", "send at least one image in a 'files' part")
    if len(files) > settings.max_images_per_request:
        raise ApiError(
            413,
            "too_many_files",
            f"{len(files)} files in one request; at most {settings.max_images_per_request} "
            "(HEATPOSE_MAX_IMAGES_PER_REQUEST)",
        )
    names = [f.filename or f"file{i}" for i, f in enumerate(files)]
    for f, name in zip(files, names, strict=True):
        check_content_type(f.content_type, name)
    datas = [await f.read() for f in files]

    def decode_all() -> list[DecodedImage]:
        max_pixels = settings.max_image_pixels
        return [decode_image(d, n, max_pixels) for d, n in zip(datas, names, strict=True)]

    return await anyio.to_thread.run_sync(decode_all, limiter=limiter)
