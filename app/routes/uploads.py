"""What ``/predict`` and ``/visualize`` share: reading and decoding the uploaded images.

:func:`read_images` checks the multipart files (count, content types), reads them and decodes
them in a worker thread (``anyio.to_thread``), bounded so decoding cannot starve the model's
thread of CPU. Cropping is the service's (:meth:`app.service.PoseService.predict`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import anyio
import anyio.to_thread
from fastapi import UploadFile

from app.admission import PixelLease
from app.device_path import Uploads
from app.errors import ApiError
from app.intake import DecodedImage, check_content_type, pixels_to_decode
from app.reduction import PoseNeed
from app.settings import Settings
from models.detector_input import detector_pixels


async def read_images(
    files: list[UploadFile],
    settings: Settings,
    limiter: anyio.CapacityLimiter | None = None,
    lease: PixelLease | None = None,
    needs: Sequence[PoseNeed | None] | None = None,
    detected: Sequence[bool] | None = None,
) -> list[DecodedImage]:
    """Validate, read and decode the uploads of one request (:func:`read_uploads`, then its
    decoding in a worker thread, bounded by ``limiter``)."""
    decode_all = await read_uploads(files, settings, lease=lease, needs=needs, detected=detected)
    return await anyio.to_thread.run_sync(decode_all, limiter=limiter)


async def read_uploads(
    files: list[UploadFile],
    settings: Settings,
    *,
    lease: PixelLease | None = None,
    needs: Sequence[PoseNeed | None] | None = None,
    full_size: bool = False,
    detected: Sequence[bool] | None = None,
) -> Callable[[], list[DecodedImage]]:
    """Validate and read the uploads of one request; returns their decoding, for the caller
    to run in a worker thread (with more work: :meth:`app.service.PoseService.predict_uploads`
    crops in the same thread): an :class:`app.device_path.Uploads`, Pillow when called, so
    the service may decode the JPEGs on its device instead (``HEATPOSE_DECODE``).

    With a ``lease`` the pixels the images will decode to (read from their headers; large JPEGs
    are decoded at reduced scale, ``HEATPOSE_DECODE_MAX_SIDE``) are taken from the pixel budget
    before any is decoded (:mod:`app.admission`: 413 over a limit, waiting for room until the
    deadline). ``needs``: per image what its pose crops need when no detector will see it
    (:meth:`app.service.PoseService.pose_needs`): such a JPEG is decoded as small as its crops
    allow. An image the detector will see (``detected``; by default where ``needs`` is
    ``None``) is charged the detector path's share too
    (:func:`models.detector_input.detector_pixels`). ``full_size``: the service decodes the
    JPEGs on its device at full size (:attr:`app.service.PoseService.decodes_on_device`), so
    they are charged at full size.

    Raises:
        ApiError: 400/413/415/422 for bad input (see :mod:`app.intake`).
        DeadlineExceeded: no room in the pixel budget before the deadline.
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
    wants = list(needs) if needs is not None else [None] * len(datas)
    max_pixels, max_side = settings.max_image_pixels, settings.decode_max_side
    if lease is not None:
        pixels = [
            pixels_to_decode(d, 0, None) if full_size else pixels_to_decode(d, max_side, n)
            for d, n in zip(datas, wants, strict=True)
        ]
        by_needs = [needs is not None and n is None for n in wants]
        seen = detected if detected is not None else by_needs
        # what the detector path holds for the images it will see
        extra = sum(detector_pixels(p) for p, d in zip(pixels, seen, strict=True) if d)
        await lease.acquire_with(sum(pixels), extra)

    return Uploads(datas, names, wants, max_pixels, max_side)
