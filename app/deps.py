"""What the routes depend on, as FastAPI dependencies (the full-stack template's ``api/deps.py``).

Handlers take these as parameters: the service (:data:`ServiceDep`), the request deadline
(:data:`DeadlineDep`), the API-key and multipart checks (as route ``dependencies=``), and the
query and form parameters that ``/predict`` and ``/visualize`` share (:data:`BoxesParam`,
:data:`FlipParam`, :data:`DecodeParam`), so both routes document and parse them alike.
Every dependency is ``async def``: FastAPI runs a plain ``def`` one in its thread pool, a
thread hop per dependency per request (benchmarks/bench_overhead.py).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Form, Query, Request

from app.admission import PixelLease
from app.auth import check_api_key
from app.errors import ApiError
from app.metrics import ARRIVAL_KEY
from app.service import PoseService, PredictOptions
from models.codec import DecodeMode
from models.pipeline import DetectMode, PipelineOptions


async def get_service(request: Request) -> PoseService:
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


async def request_deadline(request: Request, service: ServiceDep) -> float:
    """``time.monotonic()`` deadline: arrival + ``HEATPOSE_REQUEST_TIMEOUT_S``."""
    arrival = request.scope.get(ARRIVAL_KEY, time.monotonic())
    return float(arrival) + service.settings.request_timeout_s


DeadlineDep = Annotated[float, Depends(request_deadline)]


async def reject_unknown_query(request: Request) -> None:
    """422 naming every query parameter the route does not take (a typo must not be ignored)."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known: set[str] = set()
    todo = [dependant]
    while todo:  # the route's own query parameters and those of its dependencies
        d = todo.pop()
        known.update(p.alias for p in d.query_params)
        todo.extend(d.dependencies)
    unknown = sorted(k for k in request.query_params if k not in known)
    if unknown:
        raise ApiError(
            422,
            "unknown_query_parameter",
            f"unknown query parameter(s) {', '.join(map(repr, unknown))}; this route takes "
            f"{', '.join(sorted(known))}",
        )


@dataclass(frozen=True)
class DetectionParams:
    """The person-detection query parameters of ``/predict`` and ``/visualize``."""

    detect: DetectMode
    bbox_thr: float
    max_persons: int
    kpt_thr: float

    def options(
        self, *, flip_test: bool | None, decode: DecodeMode | None, heatmaps: bool
    ) -> PredictOptions:
        """The request's :class:`~app.service.PredictOptions` with these parameters."""
        return PredictOptions(
            flip_test=flip_test,
            decode=decode,
            heatmaps=heatmaps,
            detect=self.detect,
            bbox_thr=self.bbox_thr,
            max_persons=self.max_persons,
            kpt_thr=self.kpt_thr,
        )


_DEFAULTS = PipelineOptions()
DETECT_DOC = (
    "Run the person detector: auto = on images without boxes (when the service has a "
    "detector), true = on every image (its boxes replace given ones), false = never (images "
    "without boxes are one whole-image person)."
)


async def detection_params(
    service: ServiceDep,
    detect: Annotated[DetectMode, Query(description=DETECT_DOC)] = _DEFAULTS.detect,
    bbox_thr: Annotated[
        float, Query(ge=0, le=1, description="Keep detected boxes scoring at least this.")
    ] = _DEFAULTS.bbox_thr,
    max_persons: Annotated[
        int,
        Query(
            ge=1,
            description="At most this many detected persons an image (best kept); "
            "at most HEATPOSE_MAX_PERSONS.",
        ),
    ] = _DEFAULTS.max_persons,
    kpt_thr: Annotated[
        float,
        Query(ge=0, description="Keypoints scoring below it are visible=false (not drawn)."),
    ] = _DEFAULTS.kpt_thr,
) -> DetectionParams:
    """The detection parameters, ``max_persons`` checked against ``HEATPOSE_MAX_PERSONS``."""
    limit = service.settings.max_persons
    if max_persons > limit:
        raise ApiError(
            422,
            "invalid_max_persons",
            f"max_persons={max_persons} is more than this service allows ({limit}, "
            "HEATPOSE_MAX_PERSONS)",
        )
    return DetectionParams(detect, bbox_thr, max_persons, kpt_thr)


DetectionDep = Annotated[DetectionParams, Depends(detection_params)]


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
