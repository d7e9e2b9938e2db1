"""One inference request as the service takes it: what the routes parsed, and its answer.

:class:`PredictOptions` are a request's options (query parameters or a stream's settings).

:class:`UploadRequest` is what ``/predict`` and ``/visualize`` hand to
:meth:`app.engine.service.PoseService.infer`, their one service call; :class:`Answer` is what comes
back for them to render. :class:`FrameRequest` is a stream's frame for
:meth:`app.engine.service.PoseService.infer_frame`. :func:`read_uploads` is the intake step of
``infer``: the multipart files checked (count, content types), read, and their pixels taken
from the pixel budget before any is decoded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import UploadFile

from app.engine.admission import PixelBudget, PixelLease
from app.errors import ApiError
from app.intake.device_path import Uploads
from app.intake.reduction import PoseNeed
from app.intake.uploads import DecodedImage, check_content_type, pixels_to_decode
from app.settings import Settings
from models.detection.detector_input import detector_pixels
from models.inference.box_plan import DetectMode
from models.pose.codec import DecodeMode
from models.pose.persons import PersonResult

if TYPE_CHECKING:
    from models.inference.predictor import Predictor
    from models.video.video_tracking import FramePlan


@dataclass(frozen=True)
class PredictOptions:
    """How to infer one request; ``None`` = the service's default (:meth:`PoseService.resolve`).

    Attributes:
        flip_test: average with the horizontally flipped crop.
        decode_mode: heatmap decoding (``?decode=``; :data:`models.pose.codec.DECODE_MODES`).
        heatmaps: return each person's ``(K, H, W)`` heatmaps.
        detect: which images go to the person detector
        (:data:`models.inference.pipeline.DetectMode`). bbox_thr: detector box score threshold;
        ``max_persons``: at most this many detected
            persons an image (best box scores kept).
        kpt_thr: keypoints below it are reported not visible (the routes apply it).
    """

    flip_test: bool | None = None
    decode_mode: DecodeMode | None = None
    heatmaps: bool = False
    detect: DetectMode = "auto"
    bbox_thr: float = 0.3
    max_persons: int = 20
    kpt_thr: float = 0.3


@dataclass(frozen=True)
class UploadRequest:
    """One ``/predict`` or ``/visualize`` request, parsed from HTTP but not yet checked
    further than its query and API key (:func:`app.http.deps.inference_request`).

    Attributes:
        files: the multipart ``files`` parts, in upload order.
        boxes: the raw ``boxes`` form field (:func:`app.intake.boxes.parse_boxes_field`).
        options: the request's options, unresolved (``None`` = the service's default).
        deadline: ``time.monotonic()`` deadline of the request.
        budget: the process-wide pixel budget (:mod:`app.engine.admission`).
        pose_sized: decode each image for its pose crops (as small as they allow, on the
            device where ``HEATPOSE_DECODE`` says: ``/predict``); ``False``: Pillow, reduced
            by ``HEATPOSE_DECODE_MAX_SIDE`` only (``/visualize`` draws on the image).
        check_model: the route's own check of the served model, after readiness and before
            anything is read (``/visualize``'s keypoint name); raises ``ApiError``.
    """

    files: Sequence[UploadFile]
    boxes: str | None
    options: PredictOptions
    deadline: float
    budget: PixelBudget
    pose_sized: bool = True
    check_model: Callable[[Predictor], None] | None = None


@dataclass(frozen=True)
class Answer:
    """What :meth:`app.engine.service.PoseService.infer` found, for the route to render.

    Attributes:
        images: the decoded images (names, original sizes, pixels maybe reduced).
        persons: per image its persons, keypoints in original image px, sorted
            (:func:`models.inference.pipeline.sort_persons`).
        options: the options used, every default filled in.
        predictor: the model that answered (keypoint spec, input size, name).
        decoded: the ``time.perf_counter()`` at which decoding ended.
        rendered: what the ``finish`` step given to ``infer`` returned (``None`` without one).
    """

    images: list[DecodedImage]
    persons: list[list[PersonResult]]
    options: PredictOptions
    predictor: Predictor
    decoded: float
    rendered: Any = None


@dataclass(frozen=True)
class FrameRequest:
    """One frame of a WebSocket stream (:mod:`app.http.routes.stream`), its size already checked.

    Attributes:
        data, name: the frame's bytes and its name in messages (``frame <seq>``).
        options: the stream's options, resolved when it opened.
        deadline: ``time.monotonic()`` deadline of the frame.
        budget: the process-wide pixel budget (:mod:`app.engine.admission`).
        plan: where to look in a ``(width, height)`` frame
            (:meth:`models.video.video_tracking.VideoTracker.plan`).
    """

    data: bytes
    name: str
    options: PredictOptions
    deadline: float
    budget: PixelBudget
    plan: Callable[[int, int], FramePlan]


async def read_uploads(
    files: Sequence[UploadFile],
    settings: Settings,
    *,
    lease: PixelLease | None = None,
    needs: Sequence[PoseNeed | None] | None = None,
    full_size: bool = False,
    detected: Sequence[bool] | None = None,
) -> Callable[[], list[DecodedImage]]:
    """Validate and read the uploads of one request; returns their decoding, for the caller
    to run in a worker thread (with more work: :meth:`app.engine.service.PoseService.infer` crops in
    the same thread): an :class:`app.intake.device_path.Uploads`, Pillow when called, so
    the service may decode the JPEGs on its device instead (``HEATPOSE_DECODE``).

    With a ``lease`` the pixels the images will decode to (read from their headers; large JPEGs
    are decoded at reduced scale, ``HEATPOSE_DECODE_MAX_SIDE``) are taken from the pixel budget
    before any is decoded (:mod:`app.engine.admission`: 413 over a limit, waiting for room until the
    deadline). ``needs``: per image what its pose crops need when no detector will see it
    (:meth:`app.engine.service.PoseService.pose_needs`): such a JPEG is decoded as small as its
    crops allow. An image the detector will see (``detected``; by default where ``needs`` is
    ``None``) is charged the detector path's share too
    (:func:`models.detection.detector_input.detector_pixels`). ``full_size``: the service decodes
    the JPEGs on its device at full size (:attr:`app.engine.service.PoseService.decodes_on_device`),
    so they are charged at full size.

    Raises:
        ApiError: 400/413/415/422 for bad input (see :mod:`app.intake.uploads`).
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
