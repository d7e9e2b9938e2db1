"""The stages of one request once it is admitted: person boxes, crops, the pose batcher.

:class:`PoseStages` is built by :meth:`app.engine.service.PoseService.start` once both
batchers run, and is what :meth:`~app.engine.service.PoseService.infer` and
:meth:`~app.engine.service.PoseService.infer_frame` hand their decoded (or still to be
decoded) images to. Each image's boxes follow :mod:`models.inference.box_plan` (the client's,
the detector's through :class:`app.engine.detector_batcher.DetectorBatcher`, else the whole
image); its crops are cut in a worker thread (``HEATPOSE_CROP``,
:func:`app.intake.device_path.crop`); all crops of a request go to the pose batcher as one
job; the persons come back per image in the original image's pixels.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import anyio.to_thread
import numpy as np

from app.engine.detector_batcher import DetectorBatcher
from app.engine.failures import DeadlineExceeded, NotServing
from app.engine.inference import PredictOptions
from app.engine.pose_batcher import Batcher
from app.intake import device_path
from app.intake.reduction import Reduction
from app.intake.uploads import DecodedImage
from app.observability.metrics import Metrics
from app.settings import Settings
from models.detection.detector_input import check_detectable, shrink_for_detector
from models.inference.box_plan import given_boxes, person_boxes, to_detect
from models.inference.pipeline import sort_persons
from models.inference.predictor import Crops, Pixels, Predictor, split
from models.pose.persons import PersonBoxes, PersonResult


class PoseStages:
    """One service's request stages, past the readiness check.

    Args:
        batcher: the pose stage (person crops -> keypoints).
        detector_batcher: the person-detector stage, or ``None`` without a detector.
        limiter: bounds the worker threads that decode, crop and draw.
        stopping: whether the service refuses new work now (checked before the pose queue).
    """

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        *,
        batcher: Batcher,
        detector_batcher: DetectorBatcher | None,
        limiter: anyio.CapacityLimiter,
        stopping: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.batcher = batcher
        self.detector_batcher = detector_batcher
        self.limiter = limiter
        self.stopping = stopping

    async def poses(
        self,
        predictor: Predictor,
        images: Sequence[Pixels],
        boxes: Sequence[Sequence[Any] | np.ndarray | None] | None,
        opts: PredictOptions,
        *,
        deadline: float,
        maps: Sequence[Reduction],
    ) -> list[list[PersonResult]]:
        """All persons of decoded images through the batchers as one job (``opts``
        resolved): person boxes, crops in a worker thread, the pose batcher.

        Args:
            images: ``(h, w, 3)`` uint8 RGB images (as displayed), maybe decoded at reduced
                scale; numpy, or torch tensors (decoded on the device,
                :mod:`app.intake.device_path`).
            boxes: per image the caller's ``[x1, y1, x2, y2]`` image-px boxes or ``None``
                (detected, or the whole image without a detector); ``None`` for the list =
                ``None`` everywhere.
            deadline: ``time.monotonic()`` deadline of the request.
            maps: per image how it relates to the original image (a large JPEG decoded at
                reduced scale, :mod:`app.intake.reduction`); ``boxes`` and the results are in
                the original's pixels.

        Returns:
            Per image its persons, keypoints in (original) image pixels, sorted by
            :func:`models.inference.pipeline.sort_persons` (detected: best box score first;
            client boxes: in their order); an image with nobody in it -> ``[]``.

        Raises:
            NotServing, QueueFull, DeadlineExceeded, BatchFailed: see :mod:`app.engine.failures`.
            BoxError: a box that is malformed or lies outside its image.
            PipelineError: ``detect=true`` without a detector.
            UndetectableImage: an image for the detector past its aspect-ratio limit.
        """
        persons = await self.person_boxes(images, boxes, opts, deadline=deadline, maps=maps)
        crops = await anyio.to_thread.run_sync(
            self.crop, predictor, images, persons, limiter=self.limiter
        )
        return await self.crops_to_persons(crops, maps, opts, deadline=deadline)

    async def decode_and_poses(
        self,
        predictor: Predictor,
        decode: Callable[[], list[DecodedImage]],
        boxes: Sequence[Sequence[Any] | None],
        opts: PredictOptions,
        *,
        detected: bool,
        on_device: bool,
        deadline: float,
    ) -> tuple[list[DecodedImage], list[list[PersonResult]], float]:
        """Uploads still to be ``decode``-d (:func:`app.engine.inference.read_uploads`) ->
        persons.

        Where no image goes to the detector (``detected`` false), decoding and cropping run
        in ONE worker thread (each thread hop costs the event loop and a worker a wake-up);
        else decoding runs in its own, then :meth:`poses`. ``on_device``: the JPEGs may be
        decoded on the device (:func:`app.intake.device_path.decode_images`); else with Pillow.

        Returns:
            The decoded images, per image its persons (as :meth:`poses`), and the
            ``time.perf_counter()`` at which decoding ended.
        """

        def decode_timed() -> tuple[list[DecodedImage], float]:
            if on_device:
                images = device_path.decode_images(decode, self.settings, predictor.device)
            else:
                images = decode()
            return images, time.perf_counter()

        if detected:
            images, decoded = await anyio.to_thread.run_sync(decode_timed, limiter=self.limiter)
            maps = [im.scale for im in images]
            pixels = [im.pixels for im in images]
            results = await self.poses(predictor, pixels, boxes, opts, deadline=deadline, maps=maps)
            return images, results, decoded

        def decode_and_crop() -> tuple[list[DecodedImage], float, list[Crops]]:
            images, decoded = decode_timed()
            maps = [im.scale for im in images]
            persons = person_boxes(given_boxes(boxes, maps), {}, maps)
            pixels = [im.pixels for im in images]
            return images, decoded, self.crop(predictor, pixels, persons)

        images, decoded, crops = await anyio.to_thread.run_sync(
            decode_and_crop, limiter=self.limiter
        )
        maps = [im.scale for im in images]
        results = await self.crops_to_persons(crops, maps, opts, deadline=deadline)
        return images, results, decoded

    async def crops_to_persons(
        self,
        crops: list[Crops],
        maps: Sequence[Reduction],
        opts: PredictOptions,
        *,
        deadline: float,
    ) -> list[list[PersonResult]]:
        """Every image's ``crops`` through the pose batcher as one job; persons per image in
        original image px (``maps``), sorted."""
        if self.stopping():  # it began while this request was decoding: the queue takes no more
            self.metrics.rejected.labels("not_ready").inc()
            raise NotServing("the service is shutting down", state="shutting_down")
        if time.monotonic() >= deadline:
            raise DeadlineExceeded("the request passed its deadline while decoding and cropping")
        counts = [len(c) for c in crops]
        if sum(counts) == 0:
            return [[] for _ in crops]
        results = await self.batcher.submit(
            Crops.concat(crops),
            bool(opts.flip_test),
            deadline=deadline,
            mode=opts.decode_mode,
            want_heatmaps=opts.heatmaps,
        )
        found = zip(split(results, counts), maps, strict=True)
        return [sort_persons(m.people_out(p)) for p, m in found]

    async def person_boxes(
        self,
        images: Sequence[Pixels],
        boxes: Sequence[Sequence[Any] | np.ndarray | None] | None,
        options: PredictOptions,
        *,
        deadline: float,
        maps: Sequence[Reduction],
    ) -> list[PersonBoxes]:
        """Per image where its persons are, in the decoded image's px: the caller's boxes
        (validated against the original image's size, then mapped by ``maps``), the
        detector's (images chosen by :func:`models.inference.box_plan.to_detect`, through the
        detector batcher), else the whole (original) image (:mod:`models.inference.box_plan`).

        Raises:
            BoxError: naming the box (``boxes[i][j] = ...``). PipelineError: detect=true
            without a detector. UndetectableImage: an image the detector cannot take
            (:mod:`models.detection.detector_input`). The detector batcher's exceptions
            (:mod:`app.engine.failures`).
        """
        given = given_boxes(boxes, maps)
        detector = self.detector_batcher
        todo = to_detect(
            given, options.detect, num_images=len(images), has_detector=detector is not None
        )
        found: dict[int, PersonBoxes] = {}
        if todo:
            assert detector is not None
            for i in todo:  # before the batch: an image it cannot resize fails no one else
                check_detectable(*maps[i].size, name=f"image {i}")
            small = await anyio.to_thread.run_sync(
                lambda: [shrink_for_detector(images[i]) for i in todo], limiter=self.limiter
            )  # the detector's input size at most: its float copies stay small
            detected = await detector.submit(
                [im for im, _, _ in small],
                bbox_thr=options.bbox_thr,
                max_persons=options.max_persons,
                deadline=deadline,
            )
            for i, p, (_, fx, fy) in zip(todo, detected, small, strict=True):
                h, w = images[i].shape[:2]
                p = p if (fx, fy) == (1.0, 1.0) else p.resized(1.0 / fx, 1.0 / fy)
                found[i] = p.usable(w, h)  # a detector's boxes meet the clients' rules
        return person_boxes(given, found, maps)

    def crop(
        self, predictor: Predictor, images: Sequence[Pixels], persons: Sequence[PersonBoxes]
    ) -> list[Crops]:
        """On a worker thread: every image's person crops (``HEATPOSE_CROP``)."""
        return device_path.crop(predictor, images, persons, self.settings)
