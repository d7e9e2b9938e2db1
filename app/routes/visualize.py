"""``POST /visualize``: one image -> a PNG with heatmaps and/or the skeleton drawn over it."""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, File, Query, Request, Response, UploadFile

from app.errors import ApiError, error_responses
from app.overlay import Mode, encode_png, render
from app.routes.predict import BoxesParam, DecodeParam, FlipParam
from app.routes.uploads import (
    deadline_of,
    prepare,
    require_api_key,
    require_multipart,
    service_of,
)

router = APIRouter(tags=["inference"], dependencies=[Depends(require_api_key)])

PNG_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "The overlay as a PNG."}
}


@router.post(
    "/visualize",
    response_class=Response,
    dependencies=[Depends(require_multipart)],
    responses={**PNG_RESPONSE, **error_responses(400, 401, 413, 415, 422, 500, 503, 504)},
    summary="Heatmaps and skeleton drawn over one image (PNG)",
)
async def visualize(
    request: Request,
    file: Annotated[UploadFile, File(description="One image (JPEG, PNG, WebP or BMP).")],
    boxes: BoxesParam = None,
    flip_test: FlipParam = None,
    decode: DecodeParam = None,
    mode: Annotated[Mode, Query(description="What to draw.")] = "both",
    keypoint: Annotated[
        str | None, Query(description="Show this keypoint's heatmap only (a name).")
    ] = None,
    alpha: Annotated[float, Query(ge=0, le=1, description="Heatmap opacity.")] = 0.5,
    threshold: Annotated[
        float, Query(ge=0, le=1, description="Draw keypoints scoring at least this.")
    ] = 0.3,
) -> Response:
    """The image at its oriented size, heatmaps blended in their crops, skeleton on top."""
    service = service_of(request)
    settings = service.settings
    deadline = deadline_of(request, settings)
    predictor, _ = service.require_ready()
    names = predictor.spec.names
    channel = None
    if keypoint is not None:
        if keypoint not in names:
            raise ApiError(422, "unknown_keypoint",
                           f"keypoint {keypoint!r} is not one of {', '.join(names)}")  # fmt: skip
        channel = names.index(keypoint)
    prepared = await prepare([file], boxes, settings, predictor, service.decode_limiter)
    (results,) = await service.infer(
        prepared.crops,
        flip_test=flip_test,
        mode=decode,
        want_heatmaps=mode != "skeleton",
        deadline=deadline,
    )
    image, crops = prepared.images[0], prepared.crops[0]

    def draw() -> bytes:
        out = render(image.pixels, crops, results, predictor.spec, predictor.input_size,
                     mode=mode, channel=channel, alpha=alpha, threshold=threshold)  # fmt: skip
        return encode_png(out)

    png = await anyio.to_thread.run_sync(draw)
    return Response(png, media_type="image/png")
