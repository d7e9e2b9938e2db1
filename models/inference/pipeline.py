"""Pipeline: whole images -> person boxes (client's, a detector's or the image) -> poses.

The semantics of "which boxes are kept, how persons are ordered, which keypoints count as
visible" live here once, "which boxes each image gets" in :mod:`models.inference.box_plan`
(re-exported here): :class:`PosePipeline` composes them
synchronously for the CLI and evaluation, and the service runs the same functions around its
two batchers (detector stage, pose stage), so what is measured offline is what is served.

Boxes are ``[x1, y1, x2, y2]`` image px throughout; keypoints come back in image px ``(x, y)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from models.inference.box_plan import (
    DetectMode,
    FullSize,
    PipelineError,
    given_boxes,
    needs_detection,
    person_boxes,
    to_detect,
)
from models.inference.predictor import Predictor
from models.pose.codec import DecodeMode
from models.pose.crops import Pixels
from models.pose.persons import PersonBoxes, PersonResult

if TYPE_CHECKING:
    from models.detection.detector import Detections

__all__ = [
    "DetectMode",
    "Detector",
    "PipelineError",
    "PipelineOptions",
    "PosePipeline",
    "detections_to_boxes",
    "keypoint_visible",
    "needs_detection",
    "sort_persons",
]


class Detector(Protocol):
    """What the pipeline needs of a person detector
    (:class:`models.detection.detector.PersonDetector`).

    ``images`` are ``(H, W, 3)`` uint8 RGB numpy arrays, or torch tensors where the service
    decodes on the device (``HEATPOSE_DECODE``); :func:`models.pose.crops.host_pixels` is the
    explicit host copy for a detector that needs numpy.
    """

    def detect(
        self,
        images: Sequence[Pixels],
        score_thr: float = ...,
        nms_thr: float = ...,
        max_persons: int = ...,
    ) -> list[Detections]: ...


@dataclass(frozen=True)
class PipelineOptions:
    """How to infer a set of images.

    Attributes:
        detect: which images go to the detector (:data:`DetectMode`).
        bbox_thr: detector box score threshold (mmpose's inferencer default 0.3).
        nms_thr: IoU above which a lower-scored person box is suppressed.
        max_persons: at most this many detected persons per image (best box scores kept).
        kpt_thr: keypoints scoring below it are reported ``visible: false`` (not removed).
        flip_test: ``None`` = the predictor's default.
        decode_mode: ``None`` = the predictor's default.
        return_heatmaps: keep each person's ``(K, H, W)`` heatmaps.
    """

    detect: DetectMode = "auto"
    bbox_thr: float = 0.3
    nms_thr: float = 0.3
    max_persons: int = 20
    kpt_thr: float = 0.3
    flip_test: bool | None = None
    decode_mode: DecodeMode | None = None
    return_heatmaps: bool = False


def detections_to_boxes(det: Detections, *, max_persons: int) -> PersonBoxes:
    """One image's detections as ``PersonBoxes(boxes, scores, "detector")``: best score first
    (stable among equal scores), at most ``max_persons``; boxes float64 image px. Boxes of zero
    or negative width or height (or not finite) are dropped."""
    scores = np.asarray(det.scores, dtype=np.float64).reshape(-1)
    boxes = np.asarray(det.boxes, dtype=np.float64).reshape(-1, 4)
    # A box clipped to the image edge can have no area left: no person in it, never answered.
    keep = np.isfinite(boxes).all(1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    scores, boxes = scores[keep], boxes[keep]
    order = np.argsort(-scores, kind="stable")[: max(max_persons, 0)]
    return PersonBoxes(boxes[order], scores[order], "detector")


def keypoint_visible(
    scores: np.ndarray,
    kpt_thr: float,
    *,
    keypoints: np.ndarray | None = None,
    image_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """``(K,)`` bools: keypoint score ``>= kpt_thr`` (NaN scores are not visible) and, with
    ``keypoints (K, 2)`` image px and ``image_size`` ``(w, h)``, the point inside the image
    (``0 <= x <= w``, ``0 <= y <= h``): a point the crop put outside the picture is never
    visible."""
    ok = np.asarray(scores, dtype=np.float64) >= kpt_thr
    if keypoints is not None and image_size is not None:
        pts = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
        w, h = image_size
        ok &= (pts[:, 0] >= 0) & (pts[:, 0] <= w) & (pts[:, 1] >= 0) & (pts[:, 1] <= h)
    return ok


def sort_persons(persons: Sequence[PersonResult]) -> list[PersonResult]:
    """One image's persons by box score, best first; persons without a score (client or
    whole-image boxes) keep their order, after any scored ones."""
    return sorted(persons, key=lambda p: math.inf if p.box_score is None else -p.box_score)


class PosePipeline:
    """Images -> persons, synchronously: detector, crops, pose model, decoding.

    Args:
        predictor: the pose model (:class:`~models.inference.predictor.Predictor`).
        detector: a person detector (anything with
            :meth:`models.detection.detector.PersonDetector.detect`), or ``None``: images without
            client boxes are then one whole-image person (unless ``detect="true"``, an error).
        max_batch_size: crops per pose forward pass; ``None`` = all crops in one pass.
        detector_batch_size: images per detector forward pass; ``None`` = all in one pass.
    """

    def __init__(
        self,
        predictor: Predictor,
        detector: Detector | None = None,
        *,
        max_batch_size: int | None = None,
        detector_batch_size: int | None = None,
    ) -> None:
        self.predictor = predictor
        self.detector = detector
        self.max_batch_size = max_batch_size
        self.detector_batch_size = detector_batch_size

    def person_boxes(
        self,
        images: Sequence[np.ndarray],
        boxes: Sequence[np.ndarray | PersonBoxes | None] | None,
        options: PipelineOptions,
    ) -> list[PersonBoxes]:
        """Per image where its persons are: client boxes (validated), detections, or the image.

        Raises:
            PipelineError: see :func:`needs_detection`; ``BoxError`` for bad client boxes.
        """
        frames = [FullSize.of(image) for image in images]
        if boxes is not None and len(boxes) != len(images):
            raise ValueError(f"got {len(images)} images but {len(boxes)} box lists")
        has = self.detector is not None
        todo = to_detect(boxes, options.detect, num_images=len(images), has_detector=has)
        # an image the detector sees keeps none of the client's boxes (so none is validated)
        kept = None if boxes is None else [None if i in todo else b for i, b in enumerate(boxes)]
        given = given_boxes(kept, frames)
        found: dict[int, PersonBoxes] = {}
        step = self.detector_batch_size or max(len(todo), 1)
        for start in range(0, len(todo), step):
            chunk = todo[start : start + step]
            assert self.detector is not None
            dets = self.detector.detect(
                [images[i] for i in chunk],
                score_thr=options.bbox_thr,
                nms_thr=options.nms_thr,
                max_persons=options.max_persons,
            )
            for i, det in zip(chunk, dets, strict=True):
                found[i] = detections_to_boxes(det, max_persons=options.max_persons)
        return person_boxes(given, found, frames)

    def __call__(
        self,
        images: Sequence[np.ndarray],
        boxes: Sequence[np.ndarray | PersonBoxes | None] | None = None,
        options: PipelineOptions = PipelineOptions(),
    ) -> list[list[PersonResult]]:
        """Every person of every image: :meth:`person_boxes`, then :meth:`poses`.

        Args:
            images: ``(H, W, 3)`` uint8 RGB arrays.
            boxes: per image the client's ``(N, 4)`` image-px boxes (or ``PersonBoxes``, used
                as given) or ``None``; ``None`` for the list = no client boxes anywhere.
            options: see :class:`PipelineOptions`.

        Returns:
            Per image its persons (:class:`~models.pose.persons.PersonResult`, keypoints image
            px), sorted by :func:`sort_persons`; an image with nobody in it -> ``[]``.
        """
        return self.poses(images, self.person_boxes(images, boxes, options), options)

    def poses(
        self,
        images: Sequence[np.ndarray],
        persons: Sequence[PersonBoxes],
        options: PipelineOptions = PipelineOptions(),
    ) -> list[list[PersonResult]]:
        """The poses of persons already found (:meth:`person_boxes`' output, e.g. batched
        apart from the pose passes as evaluation and the service do): crops, pose passes of
        at most ``max_batch_size`` crops, decoding. ``options.detect`` plays no part here.

        Args:
            images: ``(H, W, 3)`` uint8 RGB arrays.
            persons: per image its :class:`~models.pose.persons.PersonBoxes` (image px).
            options: flip test, decode mode, heatmaps (:class:`PipelineOptions`).

        Returns:
            As :meth:`__call__`: per image its persons, sorted by :func:`sort_persons`.
        """
        if len(persons) != len(images):
            raise ValueError(f"got {len(images)} images but {len(persons)} person box lists")
        pred = self.predictor
        crops = [pred.crop(im, p) for im, p in zip(images, persons, strict=True)]
        found = pred.poses(
            crops,
            flip_test=options.flip_test,
            decode_mode=options.decode_mode,
            return_heatmaps=options.return_heatmaps,
            max_batch_size=self.max_batch_size,
        )
        return [sort_persons(p) for p in found]
