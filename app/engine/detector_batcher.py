"""The person-detector stage: whole images from concurrent requests share detector passes.

A :class:`~app.engine.batch_queue.BatchQueue` whose items are images and whose outputs are their
person boxes (:class:`~models.pose.persons.PersonBoxes`, ``source="detector"``). A batch may hold
images of requests with different ``bbox_thr`` / ``max_persons``: the detector runs once with the
lowest threshold and the largest cap (and the service's one NMS threshold), then each image keeps
its own request's boxes. That is exact: greedy NMS decides a box by higher-scored boxes only, so
NMS over the boxes above a lower threshold, cut at a higher one, equals NMS over the boxes above
the higher one; the cap keeps the best first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from app.engine.batch_queue import BatchQueue, Entry
from app.observability.metrics import Metrics
from models.detection.detector import Detections
from models.inference.pipeline import Detector, detections_to_boxes
from models.pose.crops import Pixels
from models.pose.persons import PersonBoxes


class DetectorBatcher(BatchQueue[PersonBoxes]):
    """Batches images for ``detector.detect`` (see the module doc).

    Args:
        detector: a :class:`models.detection.detector.PersonDetector` (or anything with its
        ``detect``)
            on ``device_name``; ``replicas``: more ``(device, detector)``, a worker each.
        nms_thr: IoU above which a lower-scored person box is suppressed.
        max_batch_size, max_queue_delay_s, max_queued, metrics: as for
            :class:`~app.engine.batch_queue.BatchQueue` (metrics: ``metrics.detector``).
    """

    def __init__(
        self,
        detector: Detector,
        *,
        nms_thr: float,
        max_batch_size: int,
        max_queue_delay_s: float,
        max_queued: int,
        metrics: Metrics | None = None,
        device_name: str = "cpu",
        replicas: Sequence[tuple[str, Detector]] = (),
    ) -> None:
        metrics = metrics or Metrics()
        super().__init__(
            replicas=[(device_name, detector), *replicas],
            max_batch_size=max_batch_size,
            max_queue_delay_s=max_queue_delay_s,
            max_queued=max_queued,
            metrics=metrics,
            stage=metrics.detector,
            unit="images for the person detector",
            limit_setting="HEATPOSE_DETECTOR_MAX_QUEUED_IMAGES",
            thread_name="heatpose-detector",
        )
        self.nms_thr = nms_thr

    async def submit(
        self,
        images: Sequence[Pixels],
        *,
        bbox_thr: float,
        max_persons: int,
        deadline: float,
    ) -> list[PersonBoxes]:
        """Queue one request's images and wait for their persons.

        Args:
            images: ``(H, W, 3)`` uint8 RGB images, numpy or torch (device decode).
            bbox_thr: keep boxes scoring ``>= bbox_thr``; ``max_persons``: at most this many
                an image, best first.
            deadline: ``time.monotonic()`` after which the request fails.

        Returns:
            Per image its ``PersonBoxes(boxes (N, 4) image px, scores (N,), "detector")``.

        Raises:
            NotServing, QueueFull, DeadlineExceeded, BatchFailed: see :mod:`app.engine.failures`.
        """
        return await self._submit(list(images), (bbox_thr, max_persons), deadline=deadline)

    def _run(self, batch: list[Entry], detector: Detector) -> list[PersonBoxes]:
        """One ``detect`` call for the batch, then each image's own threshold and cap."""
        images = [job.items[i] for job, i in batch]
        thr = min(job.params[0] for job, _ in batch)
        cap = max(job.params[1] for job, _ in batch)
        found = detector.detect(images, score_thr=thr, nms_thr=self.nms_thr, max_persons=cap)
        out = []
        for (job, _), det in zip(batch, found, strict=True):
            own_thr, own_cap = job.params
            keep = np.asarray(det.scores) >= own_thr
            mine = Detections(np.asarray(det.boxes)[keep], np.asarray(det.scores)[keep])
            out.append(detections_to_boxes(mine, max_persons=own_cap))
        return out
