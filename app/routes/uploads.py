"""What ``/predict`` and ``/visualize`` share: auth, service lookup, reading the uploads.

:func:`prepare` turns the multipart files and the ``boxes`` field into decoded images and
person crops. The cheap checks run on the event loop; decoding and cropping run in a worker
thread (``anyio.to_thread``), bounded so they cannot starve the model's thread of CPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
from fastapi import Request, UploadFile

from app.auth import check_api_key
from app.boxes import check_boxes, parse_boxes
from app.errors import ApiError
from app.intake import DecodedImage, check_content_type, decode_image
from app.metrics import ARRIVAL_KEY
from app.service import PoseService
from app.settings import Settings
from models.predictor import Crops, Predictor


def service_of(request: Request) -> PoseService:
    """The app's :class:`PoseService`."""
    service: PoseService = request.app.state.service
    return service


async def require_api_key(request: Request) -> None:
    """Dependency: 401 unless the configured API key (if any) is presented."""
    key = service_of(request).settings.api_key
    check_api_key(None if key is None else key.get_secret_value(), request)


async def require_multipart(request: Request) -> None:
    """Dependency: 415 unless the request body is ``multipart/form-data``."""
    ct = request.headers.get("content-type", "")
    if not ct.lower().startswith("multipart/form-data"):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"the request content type is {ct.split(';')[0] or 'missing'!r}; send the images "
            "as multipart/form-data with one or more 'files' parts",
        )


def deadline_of(request: Request, settings: Settings) -> float:
    """``time.monotonic()`` deadline: arrival + ``HEATPOSE_REQUEST_TIMEOUT_S``."""
    arrival = request.scope.get(ARRIVAL_KEY, time.monotonic())
    return float(arrival) + settings.request_timeout_s


@dataclass
class Prepared:
    """Decoded images and, per image, its person crops (``Predictor.crop`` output)."""

    images: list[DecodedImage]
    crops: list[Crops]


async def prepare(
    files: list[UploadFile],
    boxes: str | None,
    settings: Settings,
    predictor: Predictor,
    limiter: anyio.CapacityLimiter | None = None,
) -> Prepared:
    """Validate, decode and crop the uploads of one request.

    Raises:
        ApiError: 400/413/415/422 for bad input (see :mod:`app.intake`, :mod:`app.boxes`).
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
    raw_boxes = parse_boxes(boxes, len(files), settings.max_boxes_per_image)
    datas = [await f.read() for f in files]
    return await anyio.to_thread.run_sync(
        _decode_and_crop, datas, names, raw_boxes, settings.max_image_pixels, predictor,
        limiter=limiter,
    )  # fmt: skip


def _decode_and_crop(
    datas: list[bytes],
    names: list[str],
    raw_boxes: list[Any],
    max_pixels: int,
    predictor: Predictor,
) -> Prepared:
    images, crops = [], []
    w, h = predictor.input_size
    for i, (data, name) in enumerate(zip(datas, names, strict=True)):
        img = decode_image(data, name, max_pixels)
        boxes = check_boxes(raw_boxes[i], i, img.width, img.height)
        if boxes is not None and len(boxes) == 0:
            empty = np.zeros((0, 2))
            crops.append(Crops(np.zeros((0, h, w, 3), np.uint8), empty, empty, np.zeros((0, 4))))
        else:
            crops.append(predictor.crop(img.pixels, boxes))
        images.append(img)
    return Prepared(images, crops)
