"""A stand-in person detector: a test double behind ``PersonDetector.detect``'s interface."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np

from models.detection.detector import Detections

Boxes = tuple[np.ndarray, np.ndarray]  # (N, 4) xyxy image px, (N,) scores


class StandInDetector:
    """Known boxes instead of a network: ``StandInDetector(boxes, scores)`` gives the same
    detections for every image, ``StandInDetector.per_image(lookup)`` gives ``lookup(image)``'s.

    The caller's score threshold and ``max_persons`` cap apply as in the real detector (kept
    best first, ties in the given order); boxes and scores come back float32. Each call's
    ``(number of images, score_thr, nms_thr, max_persons)`` is appended to ``calls``. A test
    that sets ``gate`` holds every call until the event is set (10 s at most).
    """

    def __init__(self, boxes: np.ndarray, scores: np.ndarray) -> None:
        self.lookup: Callable[[np.ndarray], Boxes] = lambda _image: (boxes, scores)
        self.calls: list[tuple[int, float, float, int]] = []
        self.gate: threading.Event | None = None

    @classmethod
    def per_image(cls, lookup: Callable[[np.ndarray], Boxes]) -> StandInDetector:
        """A stand-in whose boxes and scores for an ``(H, W, 3)`` image are ``lookup(image)``."""
        detector = cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
        detector.lookup = lookup
        return detector

    def detect(
        self,
        images: Sequence[np.ndarray],
        score_thr: float = 0.3,
        nms_thr: float = 0.3,
        max_persons: int = 100,
    ) -> list[Detections]:
        if self.gate is not None:
            self.gate.wait(10)
        self.calls.append((len(images), score_thr, nms_thr, max_persons))
        out = []
        for image in images:
            boxes, scores = self.lookup(image)
            keep = np.nonzero(scores >= score_thr)[0]
            keep = keep[np.argsort(-scores[keep], kind="stable")][:max_persons]
            out.append(Detections(boxes[keep].astype(np.float32), scores[keep].astype(np.float32)))
        return out
