"""What the routes depend on, kept cheap: each FastAPI dependency and parameter costs CPU on
every request (BENCHMARKS.md, "Third set of changes": one query model per inference route).

- :data:`ServiceDep` and :func:`require_api_key`: for the operational routes.
- The inference routes (``/predict``, ``/visualize``) take their query parameters as ONE model
  (:class:`InferenceQuery`, validated in one call; ``extra="forbid"`` names an unknown
  parameter, see :func:`app.http.errors.unknown_query_message`) and get the rest from plain
  functions: :func:`inference_request` (the service, the API key checked again after
  :class:`app.http.gate.RequestGate`, ``max_persons`` against ``HEATPOSE_MAX_PERSONS``, the
  deadline); the rest is the service's one call (:meth:`app.engine.service.PoseService.infer`).
  The multipart content type is checked by the gate, before the body is read.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Form, Request
from pydantic import BaseModel, ConfigDict, Field

from app.engine.inference import PredictOptions
from app.engine.service import PoseService
from app.errors import ApiError
from app.http.auth import check_api_key
from app.observability.metrics import ARRIVAL_KEY
from models.inference.pipeline import DetectMode, PipelineOptions
from models.pose.codec import DecodeMode


async def get_service(request: Request) -> PoseService:
    """The app's :class:`PoseService`."""
    service: PoseService = request.app.state.service
    return service


ServiceDep = Annotated[PoseService, Depends(get_service)]


async def require_api_key(request: Request, service: ServiceDep) -> None:
    """401 unless the configured API key (if any) is presented."""
    key = service.settings.api_key
    check_api_key(None if key is None else key.get_secret_value(), request)


MULTIPART_HINT = "send the images as multipart/form-data with one or more 'files' parts"


def multipart_error(content_type: str) -> ApiError | None:
    """415 unless ``content_type`` is ``multipart/form-data`` (``None`` when it is)."""
    if content_type.lower().startswith("multipart/form-data"):
        return None
    return ApiError(
        415,
        "unsupported_media_type",
        f"the request content type is {content_type.split(';')[0] or 'missing'!r}; "
        + MULTIPART_HINT,
    )


_DEFAULTS = PipelineOptions()
DETECT_DOC = (
    "Run the person detector: auto = on images without boxes (when the service has a "
    "detector), true = on every image (its boxes replace given ones), false = never (images "
    "without boxes are one whole-image person)."
)
BOXES_DOC = (
    "JSON: per file, in upload order, a list of person boxes [x1, y1, x2, y2] in pixels of the "
    "image as displayed, or null for 'the whole image is one person'. Absent = whole images. "
    "Example for two files: [[[10, 20, 110, 320]], null]"
)
FLIP_DOC = "Average with the horizontally flipped crop (default: the service's setting)."
DECODE_DOC = "Heatmap decoding (default: the service's setting, else the checkpoint's)."

BoxesParam = Annotated[str | None, Form(description=BOXES_DOC)]


class InferenceQuery(BaseModel):
    """The query parameters ``/predict`` and ``/visualize`` share (each route adds its own)."""

    model_config = ConfigDict(extra="forbid")

    detect: DetectMode = Field(_DEFAULTS.detect, description=DETECT_DOC)
    bbox_thr: float = Field(
        _DEFAULTS.bbox_thr, ge=0, le=1, description="Keep detected boxes scoring at least this."
    )
    max_persons: int = Field(
        _DEFAULTS.max_persons,
        ge=1,
        description="At most this many detected persons an image (best kept); "
        "at most HEATPOSE_MAX_PERSONS.",
    )
    kpt_thr: float = Field(
        _DEFAULTS.kpt_thr,
        ge=0,
        description="Keypoints scoring below it are visible=false (not drawn).",
    )
    flip_test: bool | None = Field(None, description=FLIP_DOC)
    decode: DecodeMode | None = Field(None, description=DECODE_DOC)

    def options(self, *, heatmaps: bool) -> PredictOptions:
        """The request's :class:`~app.engine.service.PredictOptions` (unresolved: ``None`` = the
        service's default)."""
        return PredictOptions(
            flip_test=self.flip_test,
            decode_mode=self.decode,
            heatmaps=heatmaps,
            detect=self.detect,
            bbox_thr=self.bbox_thr,
            max_persons=self.max_persons,
            kpt_thr=self.kpt_thr,
        )


def inference_request(request: Request, query: InferenceQuery) -> tuple[PoseService, float]:
    """The service and the request's ``time.monotonic()`` deadline (arrival +
    ``HEATPOSE_REQUEST_TIMEOUT_S``), after the checks the gate cannot make.

    Raises:
        ApiError: 401 without the API key (the gate checked it already; checked again here so
            the route is safe on its own), 422 ``invalid_max_persons`` over
            ``HEATPOSE_MAX_PERSONS``.
    """
    service: PoseService = request.app.state.service
    settings = service.settings
    key = settings.api_key
    check_api_key(None if key is None else key.get_secret_value(), request)
    if query.max_persons > settings.max_persons:
        raise ApiError(
            422,
            "invalid_max_persons",
            f"max_persons={query.max_persons} is more than this service allows "
            f"({settings.max_persons}, HEATPOSE_MAX_PERSONS)",
        )
    arrival = request.scope.get(ARRIVAL_KEY, time.monotonic())
    return service, float(arrival) + settings.request_timeout_s
