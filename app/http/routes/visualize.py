"""``POST /visualize``: one image -> a PNG with heatmaps and/or the skeleton drawn over it.

The route parses HTTP, makes one service call (:meth:`app.engine.service.PoseService.infer`) and
renders its answer. Rendering runs like decoding: on a worker thread under the service's
limiter, with the request's pixels still leased (:mod:`app.engine.admission`) and within its
deadline (checked before and after: a request whose deadline passed gets 504 without, or instead of,
its PNG).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, File, Query, Request, Response, UploadFile
from pydantic import Field

from app.engine.admission import fit_for_render
from app.engine.failures import DeadlineExceeded
from app.engine.inference import Answer, UploadRequest
from app.engine.service import PoseService
from app.errors import ApiError
from app.http.deps import BoxesParam, InferenceQuery, inference_request
from app.http.errors import error_responses
from app.intake.uploads import DecodedImage
from app.render.overlay import Mode, encode_png, render
from models.inference.predictor import Predictor
from models.pose.persons import PersonResult

router = APIRouter(tags=["inference"])

PNG_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "The overlay as a PNG."}
}
FileParam = Annotated[UploadFile, File(description="One image (JPEG, PNG, WebP or BMP).")]


class VisualizeQuery(InferenceQuery):
    """``/visualize``'s query parameters."""

    mode: Mode = Field("both", description="What to draw.")
    keypoint: str | None = Field(None, description="Show this keypoint's heatmap only (a name).")
    alpha: float = Field(0.5, ge=0, le=1, description="Heatmap opacity.")
    max_side: int = Field(
        2048, ge=64, le=8192, description="Longest side of the PNG (larger images shrink)."
    )


@router.post(
    "/visualize",
    response_class=Response,
    responses={**PNG_RESPONSE, **error_responses(400, 401, 413, 415, 422, 500, 503, 504)},
    summary="Heatmaps and skeleton drawn over one image (PNG)",
)
async def visualize(
    request: Request,
    query: Annotated[VisualizeQuery, Query()],
    file: FileParam,
    boxes: BoxesParam = None,
) -> Response:
    """The image at its oriented size (at most ``max_side``), heatmaps blended where they are
    hot, each person's box (index, score) and skeleton in its own colour."""
    service, deadline = inference_request(request, query)
    mode, keypoint = query.mode, query.keypoint

    def check_keypoint(predictor: Predictor) -> None:
        names = predictor.spec.names
        if keypoint is not None and keypoint not in names:
            message = f"keypoint {keypoint!r} is not one of {', '.join(names)}"
            raise ApiError(422, "unknown_keypoint", message)

    async def draw(answer: Answer) -> bytes:
        names = answer.predictor.spec.names
        channel = None if keypoint is None else names.index(keypoint)
        (image,), (people,) = answer.images, answer.persons
        return await _draw(service, image, people, query, channel=channel, deadline=deadline)

    job = UploadRequest(
        [file],
        boxes,
        query.options(heatmaps=mode != "skeleton"),
        deadline=deadline,
        budget=request.app.state.pixel_budget,
        pose_sized=False,  # drawn on the image: decoded by Pillow, not for the crops alone
        check_model=check_keypoint,
    )
    answer = await service.infer(job, finish=draw)  # drawn while its pixels are still leased
    return Response(answer.rendered, media_type="image/png")


async def _draw(
    service: PoseService,
    image: DecodedImage,
    people: list[PersonResult],
    query: VisualizeQuery,
    *,
    channel: int | None,
    deadline: float,
) -> bytes:
    """The overlay PNG, rendered on a worker thread within the request's deadline."""
    predictor = service.model

    def draw() -> bytes:
        # Drawn on the decoded image (maybe reduced): the persons mapped into its pixels.
        decoded = image.scale.people_in(people)
        pixels, drawn = fit_for_render(image.host, decoded, service.settings.max_render_pixels)
        out = render(
            pixels,
            drawn,
            predictor.spec,
            predictor.input_size,
            mode=query.mode,
            channel=channel,
            alpha=query.alpha,
            kpt_thr=query.kpt_thr,
            max_side=query.max_side,
        )
        return encode_png(out)

    check_deadline(deadline, "before rendering")
    png = await anyio.to_thread.run_sync(draw, limiter=service.image_work_limiter)
    check_deadline(deadline, "while rendering")
    return png


def check_deadline(deadline: float, when: str) -> None:
    """Raise :class:`~app.engine.failures.DeadlineExceeded` (504) when ``deadline`` has passed."""
    if time.monotonic() >= deadline:
        raise DeadlineExceeded(f"the request passed its deadline {when} the overlay")
