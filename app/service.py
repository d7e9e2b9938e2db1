"""The running model: checkpoint, :class:`~models.predictor.Predictor`, batcher, readiness.

:class:`PoseService` is what the routes talk to. Its life: :meth:`start` (load the checkpoint,
build the predictor, warm up, start the batcher; ``ready`` turns true), then requests through
:meth:`predict`, then :meth:`begin_drain` (``ready`` false, new work refused) and :meth:`stop`
(queued work finishes within the grace period, the device is released).

:meth:`predict` is the one request path: readiness, option defaults, person boxes (the place
where a person detector plugs in), cropping, one submission of all crops to the batcher, and
regrouping per image. It raises the batcher's domain exceptions (``NotServing``,
``QueueFull``, ``DeadlineExceeded``, ``BatchFailed``) and ``BoxError``; :mod:`app.errors` maps
them to HTTP answers.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
import torch

from app.batcher import Batcher, DeadlineExceeded, NotServing
from app.detector_batcher import DetectorBatcher
from app.metrics import Metrics
from app.settings import Settings
from models import zoo
from models.checkpoint import CheckpointError, load
from models.codec import DecodeMode
from models.detector import load_detector
from models.model_config import ModelConfig
from models.output_check import check_finite_heatmaps
from models.persons import PersonBoxes, PersonResult
from models.pipeline import DetectMode, Detector, needs_detection, sort_persons
from models.predictor import Crops, Predictor, split
from models.zoo import ZooError

log = logging.getLogger("heatpose.app")


class StartupError(RuntimeError):
    """The service cannot start; the message says what is wrong and how to fix it."""


def resolve_checkpoint(name: str) -> Path:
    """``HEATPOSE_CHECKPOINT`` -> a file: an existing path, or a zoo name (fetched once, cached).

    Raises:
        StartupError: neither, or the download failed; the message says how to fix it.
    """
    try:
        return Path(zoo.resolve(name, progress=False))
    except ZooError as e:
        raise StartupError(f"HEATPOSE_CHECKPOINT={name!r}: {e}") from e


DETECTOR_NONE_HINT = "or set HEATPOSE_DETECTOR=none to serve without a person detector"


def detector_name(setting: str, device: str | None) -> str | None:
    """``HEATPOSE_DETECTOR`` -> a zoo name or file, or ``None`` (no detector).

    ``auto``: ``person-rcnn-r50-fpn`` on CUDA, ``person-frcnn-mbv3`` on CPU (``device`` as
    :func:`pick_device` returns it, ``None`` = auto).
    """
    if setting == "none":
        return None
    if setting != "auto":
        return setting
    cuda = device.startswith("cuda") if device else torch.cuda.is_available()
    return "person-rcnn-r50-fpn" if cuda else "person-frcnn-mbv3"


def resolve_detector(name: str) -> Path:
    """A detector zoo name or file -> a file (fetched once, cached).

    Raises:
        StartupError: neither, or the download failed; the message says how to fix it.
    """
    try:
        return Path(zoo.resolve(name, progress=False, kind="detector"))
    except ZooError as e:
        raise StartupError(f"HEATPOSE_DETECTOR={name!r}: {e}; {DETECTOR_NONE_HINT}") from e


def pick_device(setting: str) -> str | None:
    """``HEATPOSE_DEVICE`` -> a torch device string, or ``None`` (auto)."""
    if setting == "auto":
        return None
    if setting.startswith("cuda"):
        if not torch.cuda.is_available():
            raise StartupError(
                f"HEATPOSE_DEVICE={setting} but no CUDA device is available; "
                "use HEATPOSE_DEVICE=auto or cpu"
            )
        index = int(setting.split(":")[1]) if ":" in setting else 0
        if index >= torch.cuda.device_count():
            raise StartupError(
                f"HEATPOSE_DEVICE={setting} but only {torch.cuda.device_count()} CUDA "
                "device(s) exist"
            )
    return setting


@dataclass(frozen=True)
class PredictOptions:
    """How to infer one request; ``None`` = the service's default (:meth:`PoseService.resolve`).

    Attributes:
        flip_test: average with the horizontally flipped crop.
        decode: heatmap decode mode.
        heatmaps: return each person's ``(K, H, W)`` heatmaps.
        detect: which images go to the person detector (:data:`models.pipeline.DetectMode`).
        bbox_thr: detector box score threshold; ``max_persons``: at most this many detected
            persons an image (best box scores kept).
        kpt_thr: keypoints below it are reported not visible (the routes apply it).
    """

    flip_test: bool | None = None
    decode: DecodeMode | None = None
    heatmaps: bool = False
    detect: DetectMode = "auto"
    bbox_thr: float = 0.3
    max_persons: int = 20
    kpt_thr: float = 0.3


class PoseService:
    """Owns the models (pose, person detector) and their batchers for one app instance.

    Args:
        detector: a person detector to use instead of the one ``HEATPOSE_DETECTOR`` names
            (anything with :meth:`models.detector.PersonDetector.detect`: tests pass stand-ins).
    """

    def __init__(
        self, settings: Settings, metrics: Metrics, *, detector: Detector | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.given_detector = detector
        self.detector: Detector | None = None
        self.detector_label: str | None = None  # the weights (file) or the stand-in's type
        self.detector_batcher: DetectorBatcher | None = None
        self.predictor: Predictor | None = None
        self.batcher: Batcher | None = None
        self.config: ModelConfig | None = None
        self.checkpoint_path: Path | None = None
        self.draining = False
        self.started_at: float | None = None
        self.decode_limiter: anyio.CapacityLimiter | None = None

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Load, warm up, start batching. Raises :class:`StartupError` with a fix-it message.

        May be called again after :meth:`stop` (an app's lifespan can run more than once).
        """
        s = self.settings
        self.draining = False
        device = pick_device(s.device)
        if s.torch_threads is not None:
            torch.set_num_threads(s.torch_threads)  # process-wide, like the setting
        path = await anyio.to_thread.run_sync(resolve_checkpoint, s.checkpoint)
        try:
            bundle = await anyio.to_thread.run_sync(load, path)
        except CheckpointError as e:
            raise StartupError(f"HEATPOSE_CHECKPOINT={s.checkpoint!r}: {e}") from e
        predictor = Predictor(
            bundle, device=device, flip_test=s.flip_test, decode_mode=s.decode_mode
        )
        self.predictor, self.config, self.checkpoint_path = predictor, bundle.config, path
        try:
            # Without warm-up one pass still runs: a NaN checkpoint must not start serving.
            flips = (False, True) if s.warmup else (False,)
            await anyio.to_thread.run_sync(self._warmup, flips)
        except CheckpointError as e:
            raise StartupError(f"HEATPOSE_CHECKPOINT={s.checkpoint!r}: {e}") from e
        self.batcher = Batcher(
            predictor.heatmaps,
            predictor.decode,
            max_batch_size=s.max_batch_size,
            max_queue_delay_s=s.max_queue_delay_s,
            max_queued=s.max_queued_persons,
            metrics=self.metrics,
            device_name=str(predictor.device),
        )
        self.batcher.start()
        await self._start_detector(device, str(predictor.device))
        # Decoding and cropping run in worker threads; bounded so they cannot crowd out the model.
        self.decode_limiter = anyio.CapacityLimiter(max(2, os.cpu_count() or 2))
        self.started_at = time.time()
        log.info(
            "serving %s (%s) on %s; person detector: %s",
            bundle.config.name,
            path,
            predictor.device,
            self.detector_label or "none (images without boxes are one person)",
        )

    async def _start_detector(self, device: str | None, device_name: str) -> None:
        """Load the person detector (``HEATPOSE_DETECTOR``, or the one given) and its batcher.

        Raises:
            StartupError: the weights cannot be found, fetched or read (the message says how
                to provide them, or to set ``HEATPOSE_DETECTOR=none``).
        """
        s = self.settings
        detector = self.given_detector
        label = None if detector is None else f"{type(detector).__name__} (given)"
        name = None if detector is not None else detector_name(s.detector, device)
        if name is not None:
            path = await anyio.to_thread.run_sync(resolve_detector, name)
            try:
                detector = await anyio.to_thread.run_sync(
                    lambda: load_detector(path, device, progress=False)
                )
            except (CheckpointError, ZooError) as e:
                raise StartupError(f"HEATPOSE_DETECTOR={name!r}: {e}; {DETECTOR_NONE_HINT}") from e
            label = name if str(path) == name else f"{name} ({path})"
        self.detector, self.detector_label = detector, label
        if detector is None:
            self.detector_batcher = None
            return
        if s.warmup:
            blank = np.zeros((64, 64, 3), np.uint8)
            await anyio.to_thread.run_sync(lambda: detector.detect([blank]))
        self.detector_batcher = DetectorBatcher(
            detector,
            nms_thr=s.detector_nms_thr,
            max_batch_size=s.detector_batch_size,
            max_queue_delay_s=s.max_queue_delay_s,
            max_queued=s.detector_max_queued_images,
            metrics=self.metrics,
            device_name=device_name,
        )
        self.detector_batcher.start()

    def _warmup(self, flips: tuple[bool, ...]) -> None:
        """Run ``flips`` once each (allocations, kernels); the outputs must be finite.

        Raises:
            CheckpointError: NaN/Inf heatmaps (NaN weights); start-up stops with its message.
        """
        assert self.predictor is not None
        w, h = self.predictor.input_size
        crops = np.zeros((1, h, w, 3), np.uint8)
        for flip in flips:
            hm = self.predictor.heatmaps(crops, flip)
            check_finite_heatmaps(hm, self.predictor.model)
            self.predictor.decode(hm, np.array([[w / 2, h / 2]]), np.array([[w, h]]))

    def begin_drain(self) -> None:
        """``/ready`` turns false and new inference is refused (503)."""
        if not self.draining:
            log.info("draining: refusing new work, finishing in-flight requests")
        self.draining = True

    async def stop(self) -> None:
        """Finish queued work within the grace period, then release the model and device."""
        self.begin_drain()
        grace = self.settings.shutdown_grace_s
        # The detector stage first: its images still have to pass the pose stage.
        for batcher in (self.detector_batcher, self.batcher):
            if batcher is not None and not await batcher.drain(grace):
                log.warning("grace period over with work still queued; it was refused")
        device = self.predictor.device if self.predictor is not None else None
        self.predictor = None
        self.detector = self.detector_batcher = None
        gc.collect()
        if device is not None and device.type == "cuda":
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
        if self.predictor is None or self.batcher is None:
            return "the model is not loaded yet"
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

    def check_ready(self) -> tuple[Predictor, Batcher]:
        """The predictor and batcher; admission control for every inference request.

        Raises:
            NotServing: loading, draining, or the batcher died (counted as ``not_ready``).
        """
        reason = self.not_ready_reason()
        if reason is not None or self.predictor is None or self.batcher is None:
            self.metrics.rejected.labels("not_ready").inc()
            raise NotServing(reason or "not ready")
        return self.predictor, self.batcher

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
        mode: Any = options.decode or predictor.decode_mode
        return replace(options, flip_test=flip, decode=mode)

    # ---------------------------------------------------------------- inference
    async def predict(
        self,
        images: Sequence[np.ndarray],
        boxes: Sequence[Sequence[Any] | np.ndarray | None] | None,
        options: PredictOptions,
        *,
        deadline: float,
    ) -> list[list[PersonResult]]:
        """All persons of all images of one request, through the batcher as one job.

        Args:
            images: ``(H, W, 3)`` uint8 RGB images (as displayed).
            boxes: per image the caller's ``[x1, y1, x2, y2]`` image-px boxes or ``None``
                (detected, or the whole image without a detector); ``None`` for the list =
                ``None`` everywhere.
            options: unresolved or resolved (:meth:`resolve`) options.
            deadline: ``time.monotonic()`` deadline of the request.

        Returns:
            Per image its persons, keypoints in image pixels, sorted by
            :func:`models.pipeline.sort_persons` (detected: best box score first; client
            boxes: in their order); an image with nobody in it -> ``[]``.

        Raises:
            NotServing, QueueFull, DeadlineExceeded, BatchFailed: see :mod:`app.batcher`.
            BoxError: a box that is malformed or lies outside its image.
            PipelineError: ``detect=true`` without a detector.
        """
        predictor, batcher = self.check_ready()
        opts = self._resolve(predictor, options)
        persons = await self._person_boxes(images, boxes, opts, deadline=deadline)
        crops = await anyio.to_thread.run_sync(
            self._crop, predictor, images, persons, limiter=self.decode_limiter
        )
        if time.monotonic() >= deadline:
            raise DeadlineExceeded("the request passed its deadline while decoding and cropping")
        counts = [len(c) for c in crops]
        if sum(counts) == 0:
            return [[] for _ in crops]
        results = await batcher.submit(
            Crops.concat(crops),
            bool(opts.flip_test),
            deadline=deadline,
            mode=opts.decode,
            want_heatmaps=opts.heatmaps,
        )
        return [sort_persons(p) for p in split(results, counts)]

    async def _person_boxes(
        self,
        images: Sequence[np.ndarray],
        boxes: Sequence[Sequence[Any] | np.ndarray | None] | None,
        options: PredictOptions,
        *,
        deadline: float,
    ) -> list[PersonBoxes]:
        """Per image where its persons are: the caller's boxes (validated), the detector's
        (images chosen by :func:`models.pipeline.needs_detection`, through the detector
        batcher), else the whole image.

        Raises:
            BoxError: naming the box (``boxes[i][j] = ...``). PipelineError: detect=true
            without a detector. The detector batcher's exceptions (:mod:`app.batcher`).
        """
        if boxes is not None and len(boxes) != len(images):
            raise ValueError(f"got {len(images)} images but {len(boxes)} box lists")
        out: list[PersonBoxes | None] = []
        for i, image in enumerate(images):
            height, width = image.shape[:2]
            raw = None if boxes is None else boxes[i]
            if raw is None:
                out.append(None)
            else:
                out.append(PersonBoxes.from_client(raw, width, height, label=f"boxes[{i}]"))
        has = self.detector_batcher is not None
        todo = [
            i for i, b in enumerate(out) if needs_detection(b, options.detect, has_detector=has)
        ]
        if todo:
            assert self.detector_batcher is not None
            found = await self.detector_batcher.submit(
                [images[i] for i in todo],
                bbox_thr=options.bbox_thr,
                max_persons=options.max_persons,
                deadline=deadline,
            )
            for i, p in zip(todo, found, strict=True):
                out[i] = p
        return [
            p if p is not None else PersonBoxes.whole_image(im.shape[1], im.shape[0])
            for p, im in zip(out, images, strict=True)
        ]

    @staticmethod
    def _crop(
        predictor: Predictor, images: Sequence[np.ndarray], persons: Sequence[PersonBoxes]
    ) -> list[Crops]:
        """On a worker thread: every image's person crops."""
        return [predictor.crop(im, p) for im, p in zip(images, persons, strict=True)]

    def model_info(self) -> dict[str, Any]:
        """The checkpoint's metadata for ``/v1/model``."""
        assert self.config is not None and self.predictor is not None
        return {
            **self.config.to_dict(),
            "input_size": list(self.config.input_size),
            "heatmap_size": list(self.config.codec.heatmap_size),
            "checkpoint": str(self.checkpoint_path),
            "device": str(self.predictor.device),
            "flip_test_default": self.predictor.flip_test,
            "decode_mode_default": self.predictor.decode_mode,
            "detector": self.detector_label,
        }
