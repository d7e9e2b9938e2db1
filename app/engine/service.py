"""The running model: checkpoint, :class:`~models.inference.predictor.Predictor`, batcher,
readiness.

:class:`PoseService` is what the routes talk to. Its life: :meth:`start` (load the checkpoint,
build the predictor, warm up, start the batcher; ``ready`` turns true), then requests, then
:meth:`begin_drain` (``ready`` false, new work refused) and :meth:`stop` (queued work finishes
within the grace period, the device is released).

:meth:`infer` is the one call of an upload request (``/predict``, ``/visualize``): readiness
(checked once), option defaults, the ``boxes`` field, queue room, the pixel lease, decoding
sized for the crops, then the request stages (:mod:`app.engine.stages`). :meth:`infer_frame`
is a stream frame's one call: pixel lease, decoding, the tracker's plan, readiness, then the
same stages: person boxes (:mod:`models.inference.box_plan`; the detector batcher where a
detector plugs in), cropping, one submission of all crops to the pose batcher, and regrouping
per image. They raise the
batchers' domain exceptions (``NotServing``, ``QueueFull``, ``DeadlineExceeded``,
``BatchFailed``), ``BoxError`` and ``ApiError``; :mod:`app.http.errors` maps them to HTTP answers.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import cv2
import torch

from app.engine.admission import PixelLease
from app.engine.detector_batcher import DetectorBatcher
from app.engine.failures import NotServing
from app.engine.inference import Answer, FrameRequest, PredictOptions, UploadRequest, read_uploads
from app.engine.pose_batcher import Batcher, PoseReplica
from app.engine.selfcheck import Report, check_service
from app.engine.stages import PoseStages
from app.engine.startup import (
    StartupError,
    optional_person_detectors,
    pick_devices,
    pose_replicas,
    resolve_checkpoint,
    served_onnx_sha256,
)
from app.engine.warmup import warm_detector, warm_replicas
from app.intake import device_path
from app.intake.boxes import parse_boxes_field
from app.intake.reduction import PoseNeed, Reduction
from app.intake.uploads import DecodedImage, decode_image, pixels_to_decode
from app.observability.metrics import Metrics
from app.settings import Settings
from models.detection.detector_input import detector_pixels
from models.inference.box_plan import (
    PipelineError,
    to_detect,
)
from models.inference.pipeline import Detector
from models.inference.predictor import Predictor
from models.pose.persons import PersonResult
from models.weights.checkpoint import CheckpointError, load
from models.weights.model_config import ModelConfig

if TYPE_CHECKING:
    from models.video.video_tracking import FramePlan

log = logging.getLogger("heatpose.app")


class PoseService:
    """Owns the models (pose, person detector) and their batchers for one app instance.

    Args:
        detector: a person detector to use instead of the one ``HEATPOSE_DETECTOR`` names
            (anything with :meth:`models.detection.detector.PersonDetector.detect`: tests pass
            stand-ins).
    """

    def __init__(
        self, settings: Settings, metrics: Metrics, *, detector: Detector | None = None
    ) -> None:
        self.settings = settings  # after start: what serves (the self-check's fallbacks)
        self.configured = settings  # as given
        self.selfcheck: Report | None = None  # app/engine/selfcheck.py; None until it passed
        self.metrics = metrics
        self.given_detector = detector
        self.detector: Detector | None = None
        self.detector_label: str | None = None  # the weights (file) or the stand-in's type
        self.detector_off: str | None = None  # without a detector: why, and how to send boxes
        self.onnx_sha256: str | None = None  # the ONNX file the backend runs, if any
        self.detector_batcher: DetectorBatcher | None = None
        self.predictor: Predictor | None = None  # the first device's (crops, model info)
        self.predictors: list[Predictor] = []  # one per device (HEATPOSE_DEVICE)
        self.batcher: Batcher | None = None
        self.config: ModelConfig | None = None
        self.checkpoint_path: Path | None = None
        self.draining = False  # SIGTERM seen: /ready is false, requests are still served
        self.stopping = False  # the drain delay is over: new inference is refused
        self.started_at: float | None = None
        self.image_work_limiter: anyio.CapacityLimiter | None = None
        self.stages: PoseStages | None = None  # the request stages, once started

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Load, warm up, start batching. Raises :class:`StartupError` with a fix-it message.

        May be called again after :meth:`stop` (an app's lifespan can run more than once).
        """
        s = self.settings = self.configured
        self.draining = self.stopping = False
        self.selfcheck = None
        devices = pick_devices(s.device)
        if s.torch_threads is not None:
            torch.set_num_threads(s.torch_threads)  # process-wide, like the setting
        if s.cv2_threads:
            # process-wide too; OpenCV's own pool would wake a helper thread for every small
            # crop (BENCHMARKS.md, "Threads")
            cv2.setNumThreads(s.cv2_threads)
        path = await anyio.to_thread.run_sync(resolve_checkpoint, s.checkpoint)
        try:
            bundle = await anyio.to_thread.run_sync(load, path)
        except CheckpointError as e:
            raise StartupError(f"HEATPOSE_CHECKPOINT={s.checkpoint!r}: {e}") from e
        predictors = await anyio.to_thread.run_sync(pose_replicas, bundle, devices, s)
        predictor = predictors[0]
        self.predictor, self.predictors = predictor, predictors
        self.config, self.checkpoint_path = bundle.config, path
        try:
            # Every forward batch size (app/engine/warmup.py); without warm-up one pass still runs.
            await anyio.to_thread.run_sync(warm_replicas, predictors, s, self.metrics)
        except CheckpointError as e:
            raise StartupError(f"HEATPOSE_CHECKPOINT={s.checkpoint!r}: {e}") from e
        self.batcher = Batcher(
            replicas=[PoseReplica(str(p.device), p.heatmaps, p.decode) for p in predictors],
            max_batch_size=s.max_batch_size,
            max_queue_delay_s=s.max_queue_delay_s,
            max_queued=s.max_queued_persons,
            metrics=self.metrics,
        )
        self.batcher.start()
        await self._start_detector(devices, [str(p.device) for p in predictors])
        await check_service(self)  # the built-in request, before /ready (app/engine/selfcheck.py)
        # Image decoding, cropping and drawing run in worker threads; bounded so they cannot
        # crowd out the model.
        self.image_work_limiter = anyio.CapacityLimiter(max(2, os.cpu_count() or 2))
        self.stages = PoseStages(
            self.settings,
            self.metrics,
            batcher=self.batcher,
            detector_batcher=self.detector_batcher,
            limiter=self.image_work_limiter,
            stopping=lambda: self.stopping,
        )
        self.onnx_sha256 = await anyio.to_thread.run_sync(served_onnx_sha256, predictor)
        self.metrics.model_info.clear()
        self.metrics.model_info.labels(
            bundle.config.name, s.backend, self.onnx_sha256 or "", self.detector_label or ""
        ).set(1)
        self.started_at = time.time()
        log.info(
            "serving %s (%s) on %s; person detector: %s",
            bundle.config.name,
            path,
            ", ".join(self.batcher.devices),
            self.detector_label or "none (images without boxes are one person)",
        )

    async def _start_detector(self, devices: Sequence[str | None], names: Sequence[str]) -> None:
        """The person detectors (:func:`app.engine.startup.person_detectors`), warmed up, and their
        batcher: one copy and worker per device.

        Raises:
            StartupError: the weights cannot be found, fetched or read.
        """
        s = self.settings
        detectors, self.detector_label, self.detector_off = await optional_person_detectors(
            s, devices, given=self.given_detector
        )
        if self.detector_off is not None and s.detector != "none":
            log.warning("%s", self.detector_off)  # auto fell back: said once
        self.detector = detectors[0] if detectors else None
        if not detectors:
            self.detector_batcher = None
            return
        if s.warmup:
            for d in dict.fromkeys(detectors):  # a given detector once
                await anyio.to_thread.run_sync(warm_detector, d, s.detector_batch_size)
        self.detector_batcher = DetectorBatcher(
            detectors[0],
            nms_thr=s.detector_nms_thr,
            max_batch_size=s.detector_batch_size,
            max_queue_delay_s=s.max_queue_delay_s,
            max_queued=s.detector_max_queued_images,
            metrics=self.metrics,
            device_name=names[0],
            replicas=list(zip(names[1:], detectors[1:], strict=True)),
        )
        self.detector_batcher.start()

    def begin_drain(self) -> None:
        """``/ready`` turns false; requests are still served (the drain delay of SIGTERM)."""
        if not self.draining:
            log.info("draining: /ready is false, still serving for the drain delay")
        self.draining = True

    async def stop(self) -> None:
        """Refuse new work, finish queued work within the grace period, release the device."""
        self.begin_drain()
        self.stopping = True
        grace = self.settings.shutdown_grace_s
        # The detector stage first: its images still have to pass the pose stage.
        for batcher in (self.detector_batcher, self.batcher):
            if batcher is not None and not await batcher.drain(grace):
                log.warning("grace period over with work still queued; it was refused")
        cuda = any(p.device.type == "cuda" for p in self.predictors)
        self.predictor, self.predictors = None, []
        self.detector = self.detector_batcher = self.stages = None
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()

    # ---------------------------------------------------------------- state
    @property
    def ready(self) -> bool:
        """Model loaded, batcher alive, not draining."""
        return self.not_ready_reason() is None

    def not_ready_reason(self) -> str | None:
        """Why ``/ready`` is false, or ``None`` when it is true."""
        if self.draining:
            return "the service is shutting down"
        return self._unavailable()

    def _unavailable(self) -> str | None:
        """Why no inference can run now (draining alone is no reason), or ``None``."""
        if self.predictor is None or self.batcher is None:
            return "the model is not loaded yet"
        if self.selfcheck is None or self.stages is None:
            return "the start-up self-check has not passed yet"
        for batcher in (self.batcher, self.detector_batcher):
            if batcher is not None and not batcher.alive:
                died = batcher.died
                return f"the batcher is not running ({died!r})" if died else "the batcher stopped"
        return None

    @property
    def model(self) -> Predictor:
        """The loaded predictor (its keypoint spec, input size, name) for rendering answers.

        Raises:
            NotServing: no model is loaded.
        """
        if self.predictor is None:
            raise NotServing("the model is not loaded")
        return self.predictor

    @property
    def decodes_on_device(self) -> bool:
        """Whether ``/predict``'s JPEGs are decoded by torchvision on the serving device, at
        full size (``HEATPOSE_DECODE``, :func:`app.intake.device_path.decodes_with_torch` of the
        device the service picked); ``False`` before the model is loaded."""
        p = self.predictor
        return p is not None and device_path.decodes_with_torch(self.settings, p.device)

    def check_ready(self) -> tuple[Predictor, PoseStages]:
        """The predictor and the request stages; admission control for every inference
        request.

        During the drain delay (``draining`` but not ``stopping``) requests are still served.

        Raises:
            NotServing: loading, stopping, or the batcher died (counted as ``not_ready``).
        """
        if self.stopping:
            self.metrics.rejected.labels("not_ready").inc()
            raise NotServing("the service is shutting down", state="shutting_down")
        reason = self._unavailable()
        if reason is not None or self.predictor is None or self.stages is None:
            self.metrics.rejected.labels("not_ready").inc()
            raise NotServing(reason or "not ready")
        return self.predictor, self.stages

    def resolve(self, options: PredictOptions) -> PredictOptions:
        """``options`` with every default filled in: the one place the defaults are decided.

        Defaults: ``HEATPOSE_FLIP_TEST``; ``HEATPOSE_DECODE_MODE``, else the checkpoint's.
        Routes call it first, so a service that is not ready refuses before a byte is read.

        Raises:
            NotServing: not ready (see :meth:`check_ready`).
        """
        predictor, _ = self.check_ready()
        return self._resolve(predictor, options)

    @staticmethod
    def _resolve(predictor: Predictor, options: PredictOptions) -> PredictOptions:
        flip = predictor.flip_test if options.flip_test is None else options.flip_test
        mode: Any = options.decode_mode or predictor.decode_mode
        return replace(options, flip_test=flip, decode_mode=mode)

    def pose_needs(
        self, boxes: Sequence[Sequence[Any] | None] | None, num_images: int, options: PredictOptions
    ) -> list[PoseNeed | None]:
        """Per image what its pose crops need from the decode
        (:class:`app.intake.reduction.PoseNeed`: the client's boxes, or the whole image), or
        ``None`` where the person detector will see it (it needs the image at its own scale). Never
        raises: a bad ``detect`` value is refused later by
        :meth:`app.engine.stages.PoseStages.person_boxes`."""
        has = self.detector_batcher is not None
        size = self.model.input_size
        try:
            seen = set(to_detect(boxes, options.detect, num_images=num_images, has_detector=has))
        except PipelineError:
            seen = set(range(num_images))
        return [
            None if i in seen else PoseNeed(None if boxes is None else boxes[i], size)
            for i in range(num_images)
        ]

    # ---------------------------------------------------------------- inference
    async def infer(
        self,
        request: UploadRequest,
        *,
        finish: Callable[[Answer], Awaitable[Any]] | None = None,
    ) -> Answer:
        """One ``/predict`` or ``/visualize`` request, from its parsed HTTP parts to persons:
        the routes' one service call.

        In order: readiness (checked here, once: 503 before a byte is read), the option
        defaults (:meth:`resolve`), the route's own model check, the ``boxes`` field's
        structure, room in the pose queue for the request's crops (503 now, 413 ever), the
        pixels the images will decode to taken from the pixel budget (:mod:`app.engine.admission`),
        reading and decoding (as small as each image's crops allow, :meth:`pose_needs`), then
        the request stages (:meth:`app.engine.stages.PoseStages.decode_and_poses`). The pixels
        are given back when the answer (and ``finish``, a rendering that still needs the
        decoded pixels) is done.

        Raises:
            ApiError: the route's check, bad boxes, uploads or images (4xx).
            As :meth:`app.engine.stages.PoseStages.poses`.
        """
        predictor, stages = self.check_ready()
        opts = self._resolve(predictor, request.options)
        if request.check_model is not None:
            request.check_model(predictor)
        n = len(request.files)
        boxes = parse_boxes_field(request.boxes, n, self.settings.max_boxes_per_image)
        # Shed load before decoding; the client's boxes, else one crop per image (a lower
        # bound where a detector finds the persons).
        stages.batcher.check_room(max(1, sum(1 if b is None else len(b) for b in boxes)))
        needs = self.pose_needs(boxes, n, opts)
        sized = request.pose_sized
        lease = PixelLease(request.budget, request.deadline)
        try:
            decode = await read_uploads(
                request.files,
                self.settings,
                lease=lease,
                needs=needs if sized else None,
                full_size=sized and self.decodes_on_device,
                detected=[need is None for need in needs],
            )
            images, results, decoded = await stages.decode_and_poses(
                predictor,
                decode,
                boxes,
                opts,
                detected=any(need is None for need in needs),
                on_device=sized,
                deadline=request.deadline,
            )
            answer = Answer(images, results, opts, predictor, decoded)
            if finish is not None:
                answer = replace(answer, rendered=await finish(answer))
        finally:
            await lease.release()
        return answer

    async def infer_frame(
        self, frame: FrameRequest
    ) -> tuple[DecodedImage, FramePlan, list[PersonResult]]:
        """One stream frame, from its bytes to persons: the stream's one service call.

        Its pixels (full size; the detector path's share too when there is a detector) are
        held in the pixel budget from before decoding until its persons are found, as an
        upload's; decoding by Pillow (the limits of ``/predict``); then ``frame.plan`` of its
        size says where to look (boxes or the detector), readiness is checked, and the path of
        :meth:`infer` after decoding runs.

        Returns:
            The decoded frame, its plan, and its persons (as :meth:`infer`'s).

        Raises:
            ApiError: a bad or too large image. As :meth:`infer` otherwise.
        """
        lease = PixelLease(frame.budget, frame.deadline)
        try:
            pixels = pixels_to_decode(frame.data)
            detector = self.detector_batcher is not None  # what its path may hold too
            await lease.acquire_with(pixels, detector_pixels(pixels) if detector else 0)
            image = await anyio.to_thread.run_sync(
                decode_image,
                frame.data,
                frame.name,
                self.settings.max_image_pixels,
                limiter=self.image_work_limiter,
            )
            plan = frame.plan(image.width, image.height)
            boxes = None if plan.boxes is None else [plan.boxes]
            predictor, stages = self.check_ready()
            opts = self._resolve(predictor, replace(frame.options, detect=plan.detect))
            maps = [Reduction.none(image.pixels)]
            (found,) = await stages.poses(
                predictor, [image.pixels], boxes, opts, deadline=frame.deadline, maps=maps
            )
        finally:
            await lease.release()
        return image, plan, found

    def model_info(self) -> dict[str, Any]:
        """The checkpoint's metadata for ``/v1/model``."""
        assert self.config is not None and self.predictor is not None
        return {
            **self.config.to_dict(),
            "input_size": list(self.config.input_size),
            "heatmap_size": list(self.config.codec.heatmap_size),
            "checkpoint": self.checkpoint_path.name if self.checkpoint_path else "",
            "device": ",".join(str(p.device) for p in self.predictors),
            "flip_test_default": self.predictor.flip_test,
            "decode_mode_default": self.predictor.decode_mode,
            "detector": self.detector_label,
            "features": self.selfcheck.features() if self.selfcheck else {},
            "detector_off": self.detector_off,
            "backend": self.settings.backend,
            "onnx_sha256": self.onnx_sha256,
        }
