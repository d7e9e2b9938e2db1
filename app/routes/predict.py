"""``POST /predict``: images (+ optional person boxes) -> keypoints as JSON."""

from __future__ import annotations

import base64
import time
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile

from app.batch_worker import CropResult
from app.errors import ApiError, error_responses
from app.routes.uploads import (
    deadline_of,
    prepare,
    require_api_key,
    require_multipart,
    service_of,
)
from app.schemas import (
    Heatmaps,
    ImageResult,
    Keypoint,
    ModelSummary,
    Person,
    PredictResponse,
    Size,
    Timing,
)
from app.settings import DecodeMode
from models.predictor import Predictor

router = APIRouter(tags=["inference"], dependencies=[Depends(require_api_key)])

FILES_DOC = "One or more images (JPEG, PNG, WebP or BMP)."
BOXES_DOC = (
    "JSON: per file, in upload order, a list of person boxes [x1, y1, x2, y2] in pixels of the "
    "image as displayed, or null for 'the whole image is one person'. Absent = whole images. "
    "Example for two files: [[[10, 20, 110, 320]], null]"
)
FLIP_DOC = "Average with the horizontally flipped crop (default: the service's setting)."
DECODE_DOC = "Heatmap decoding (default: the service's setting, else the checkpoint's)."

FilesParam = Annotated[list[UploadFile], File(description=FILES_DOC)]
BoxesParam = Annotated[str | None, Form(description=BOXES_DOC)]
FlipParam = Annotated[bool | None, Query(description=FLIP_DOC)]
DecodeParam = Annotated[DecodeMode | None, Query(description=DECODE_DOC)]


def model_summary(predictor: Predictor, flip: bool, mode: str) -> ModelSummary:
    """Which model answered and how (``mode`` is the decode mode used)."""
    spec = predictor.spec
    w, h = predictor.input_size
    return ModelSummary(
        name=predictor.config.name,
        keypoints=list(spec.names),
        skeleton=[[int(a), int(b)] for a, b in spec.skeleton],
        input_size=Size(width=w, height=h),
        flip_test=flip,
        decode=mode,  # type: ignore[arg-type]
    )


def person(names: tuple[str, ...], box: np.ndarray, r: CropResult) -> Person:
    """One person's JSON: ``box`` xyxy and keypoints in image pixels."""
    kps = [
        Keypoint(name=n, x=float(x), y=float(y), score=float(s))
        for n, (x, y), s in zip(names, r.keypoints.tolist(), r.scores.tolist(), strict=True)
    ]
    hm = None
    if r.heatmaps is not None:
        arr = np.ascontiguousarray(r.heatmaps, dtype="<f4")
        k, hh, ww = arr.shape
        hm = Heatmaps(shape=[k, hh, ww], data=base64.b64encode(arr.tobytes()).decode("ascii"))
    return Person(
        bbox=[float(v) for v in box],
        score=float(np.mean(r.scores)) if len(r.scores) else 0.0,
        keypoints=kps,
        heatmaps=hm,
    )


@router.post(
    "/predict",
    response_model=PredictResponse,
    dependencies=[Depends(require_multipart)],
    responses=error_responses(400, 401, 413, 415, 422, 500, 503, 504),
    summary="Keypoints of the persons in one or more images",
)
async def predict(
    request: Request,
    response: Response,
    files: FilesParam,
    boxes: BoxesParam = None,
    flip_test: FlipParam = None,
    decode: DecodeParam = None,
    heatmaps: Annotated[bool, Query(description="Include raw heatmaps (base64).")] = False,
) -> PredictResponse:
    """Per image the persons (given boxes, or the whole image) and their K keypoints."""
    start = time.perf_counter()
    service = service_of(request)
    settings = service.settings
    deadline = deadline_of(request, settings)
    predictor, _ = service.require_ready()
    prepared = await prepare(files, boxes, settings, predictor, service.decode_limiter)
    if time.monotonic() >= deadline:
        raise ApiError(504, "timeout", "the request passed its deadline while decoding")
    decoded = time.perf_counter()
    flip = predictor.flip_test if flip_test is None else flip_test
    mode = decode or predictor.decode_mode
    results = await service.infer(
        prepared.crops, flip_test=flip, mode=mode, want_heatmaps=heatmaps, deadline=deadline
    )
    inferred = time.perf_counter()
    names = predictor.spec.names
    images = [
        ImageResult(
            filename=img.filename,
            width=img.width,
            height=img.height,
            persons=[person(names, box, r) for box, r in zip(c.boxes, res, strict=True)],
        )
        for img, c, res in zip(prepared.images, prepared.crops, results, strict=True)
    ]
    total = time.perf_counter()
    timing = Timing(
        total_ms=round((total - start) * 1e3, 3),
        decode_ms=round((decoded - start) * 1e3, 3),
        inference_ms=round((inferred - decoded) * 1e3, 3),
    )
    response.headers["Server-Timing"] = (
        f"decode;dur={timing.decode_ms}, inference;dur={timing.inference_ms}, "
        f"total;dur={timing.total_ms}"
    )
    return PredictResponse(model=model_summary(predictor, flip, mode), images=images, timing=timing)
