"""What the routes depend on, as FastAPI dependencies (the full-stack template's ``api/deps.py``).

Handlers take these as parameters: the service (:data:`ServiceDep`), the request deadline
(:data:`DeadlineDep`), the API-key and multipart checks (as route ``dependencies=``), and the
query and form parameters that ``/predict`` and ``/visualize`` share (:data:`BoxesParam`,
:data:`FlipParam`, :data:`DecodeParam`), so both routes document and parse them alike.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Form, Query, Request

from app.admission import PixelLease
from app.auth import check_api_key
from app.errors import ApiError
from app.metrics import ARRIVAL_KEY
from app.service import PoseService
from models.codec import DecodeMode


def get_service(request: Request) -> PoseService:
    """The app's :class:`PoseService`."""
    service: PoseService = request.app.state.service
    return service


ServiceDep = Annotated[PoseService, Depends(get_service)]


async def require_api_key(request: Request, service: ServiceDep) -> None:
    """401 unless the configured API key (if any) is presented."""
    key = service.settings.api_key
    check_api_key(None if key is None else key.get_secret_value(), request)


async def require_multipart(request: Request) -> None:
    """415 unless the request body is ``multipart/form-data``."""
    ct = request.headers.get("content-type", "")
    if not ct.lower().startswith("multipart/form-data"):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"the request content type is {ct.split(';')[0] or 'missing'!r}; send the images "
            "as multipart/form-data with one or more 'files' parts",
        )


def request_deadline(request: Request, service: ServiceDep) -> float:
    """``time.monotonic()`` deadline: arrival + ``HEATPOSE_REQUEST_TIMEOUT_S``."""
    arrival = request.scope.get(ARRIVAL_KEY, time.monotonic())
    return float(arrival) + service.settings.request_timeout_s


DeadlineDep = Annotated[float, Depends(request_deadline)]


async def pixel_lease(request: Request, deadline: DeadlineDep) -> AsyncIterator[PixelLease]:
    """This request's share of the pixel budget (:mod:`app.admission`), given back at its end."""
    lease = PixelLease(request.app.state.pixel_budget, deadline)
    try:
        yield lease
    finally:
        await lease.release()


PixelLeaseDep = Annotated[PixelLease, Depends(pixel_lease)]

BOXES_DOC = (
    "JSON: per file, in upload order, a list of person boxes [x1, y1, x2, y2] in pixels of the "
    "image as displayed, or null for 'the whole image is one person'. Absent = whole images. "
    "Example for two files: [[[10, 20, 110, 320]], null]"
)
FLIP_DOC = "Average with the horizontally flipped crop (default: the service's setting)."
DECODE_DOC = "Heatmap decoding (default: the service's setting, else the checkpoint's)."

BoxesParam = Annotated[str | None, Form(description=BOXES_DOC)]
FlipParam = Annotated[bool | None, Query(description=FLIP_DOC)]
DecodeParam = Annotated[DecodeMode | None, Query(description=DECODE_DOC)]
