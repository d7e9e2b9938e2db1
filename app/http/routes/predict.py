"""``POST /predict``: images (+ optional person boxes) -> keypoints as JSON.

The route parses HTTP, makes one service call (:meth:`app.engine.service.PoseService.infer`) and
renders its answer.
"""

from __future__ import annotations

import base64
import time
from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Query, Request, Response, UploadFile
from pydantic import Field

from app.engine.inference import PredictOptions, UploadRequest
from app.http.deps import BoxesParam, InferenceQuery, inference_request
from app.http.errors import error_responses
from app.http.schemas import (
    Heatmaps,
    ImageResult,
    Keypoint,
    ModelSummary,
    Person,
    PredictResponse,
    Size,
    Timing,
)
from models.inference.pipeline import keypoint_visible
from models.inference.predictor import Predictor
from models.pose.persons import PersonResult

router = APIRouter(tags=["inference"])

FilesParam = Annotated[
    list[UploadFile], File(description="One or more images (JPEG, PNG, WebP or BMP).")
]


class PredictQuery(InferenceQuery):
    """``/predict``'s query parameters."""

    heatmaps: bool = Field(False, description="Include raw heatmaps (base64).")


def model_summary(
    predictor: Predictor, options: PredictOptions, *, detection_off: str | None = None
) -> ModelSummary:
    """Which model answered and how (``options`` resolved: the flip test and decode used;
    ``detection_off``: why there is no person detector)."""
    spec = predictor.spec
    w, h = predictor.input_size
    return ModelSummary(
        name=predictor.config.name,
        category=spec.category,
        keypoints=list(spec.names),
        skeleton=[[int(a), int(b)] for a, b in spec.skeleton],
        input_size=Size(width=w, height=h),
        flip_test=bool(options.flip_test),
        decode=options.decode_mode or predictor.decode_mode,  # type: ignore[arg-type]
        detection_off=detection_off,
    )


def person(
    names: tuple[str, ...], r: PersonResult, kpt_thr: float, *, image_size: tuple[int, int]
) -> Person:
    """One person's JSON: its box xyxy, where the box came from, keypoints in image pixels
    (``visible``: score at least ``kpt_thr`` and inside the ``image_size`` ``(w, h)`` image)."""
    visible = keypoint_visible(
        r.scores, kpt_thr, keypoints=r.keypoints, image_size=image_size
    ).tolist()
    kps = [
        Keypoint(name=n, x=float(x), y=float(y), score=float(s), visible=v)
        for n, (x, y), s, v in zip(
            names, r.keypoints.tolist(), r.scores.tolist(), visible, strict=True
        )
    ]
    hm = None
    if r.heatmaps is not None:
        arr = np.ascontiguousarray(r.heatmaps, dtype="<f4")
        k, hh, ww = arr.shape
        hm = Heatmaps(shape=[k, hh, ww], data=base64.b64encode(arr.tobytes()).decode("ascii"))
    return Person(
        bbox=[float(v) for v in r.box],
        bbox_score=r.box_score,
        bbox_source=r.box_source,
        score=float(np.mean(r.scores)) if len(r.scores) else 0.0,
        keypoints=kps,
        heatmaps=hm,
    )


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=error_responses(400, 401, 413, 415, 422, 500, 503, 504),
    summary="Keypoints of the persons in one or more images",
)
async def predict(
    request: Request,
    query: Annotated[PredictQuery, Query()],
    files: FilesParam,
    boxes: BoxesParam = None,
) -> Response:
    """Per image the persons (given boxes, detected, or the whole image; best box score first)
    and their K keypoints."""
    start = time.perf_counter()
    service, deadline = inference_request(request, query)
    job = UploadRequest(
        files,
        boxes,
        query.options(heatmaps=query.heatmaps),
        deadline=deadline,
        budget=request.app.state.pixel_budget,
    )
    found = await service.infer(job)
    inferred, decoded = time.perf_counter(), found.decoded
    predictor, options = found.predictor, found.options
    names = predictor.spec.names
    answer = [
        ImageResult(
            filename=img.filename,
            width=img.width,
            height=img.height,
            persons=[
                person(names, r, query.kpt_thr, image_size=(img.width, img.height)) for r in people
            ],
        )
        for img, people in zip(found.images, found.persons, strict=True)
    ]
    total = time.perf_counter()
    timing = Timing(
        total_ms=round((total - start) * 1e3, 3),
        decode_ms=round((decoded - start) * 1e3, 3),
        inference_ms=round((inferred - decoded) * 1e3, 3),
    )
    server_timing = (
        f"decode;dur={timing.decode_ms}, inference;dur={timing.inference_ms}, "
        f"total;dur={timing.total_ms}"
    )
    summary = model_summary(predictor, options, detection_off=service.detector_off)
    body = PredictResponse(model=summary, images=answer, timing=timing)
    # Serialised here by pydantic-core (schema unchanged: response_model above); FastAPI's own
    # path would validate the whole model again and encode it in Python (BENCHMARKS.md,
    # "First changes, measured side by side").
    return Response(
        body.model_dump_json(),
        media_type="application/json",
        headers={"Server-Timing": server_timing},
    )
