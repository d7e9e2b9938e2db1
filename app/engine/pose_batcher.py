"""The pose stage's batch queue: person crops of all concurrent requests and streams share
forward passes (the queueing itself: :mod:`app.engine.batch_queue`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from app.engine import batch_worker
from app.engine.batch_queue import BatchQueue, Entry
from app.engine.batch_worker import Decode, RunBatch
from app.observability.metrics import Metrics
from models.pose.crops import Crops, stack_crops
from models.pose.persons import PersonResult


class PoseReplica(NamedTuple):
    """The pose model on one device: ``run_batch`` and ``decode`` (:mod:`app.engine.batch_worker`),
    in production a :class:`~models.inference.predictor.Predictor`'s bound methods."""

    device: str
    run_batch: RunBatch
    decode: Decode


class Batcher(BatchQueue[PersonResult]):
    """The pose stage: person crops -> heatmaps (``run_batch``) -> keypoints (``decode``).

    Args:
        run_batch, decode: the model on one device (``device_name``); or, instead,
        replicas: the model on each device, one worker each.
    """

    def __init__(
        self,
        run_batch: RunBatch | None = None,
        decode: Decode | None = None,
        *,
        replicas: Sequence[PoseReplica] = (),
        max_batch_size: int,
        max_queue_delay_s: float,
        max_queued: int,
        metrics: Metrics | None = None,
        device_name: str = "cpu",
    ) -> None:
        if run_batch is not None and decode is not None:
            replicas = [PoseReplica(device_name, run_batch, decode), *replicas]
        super().__init__(
            replicas=[(r.device, r) for r in replicas],
            max_batch_size=max_batch_size,
            max_queue_delay_s=max_queue_delay_s,
            max_queued=max_queued,
            metrics=metrics,
            unit="person crops",
            limit_setting="HEATPOSE_MAX_QUEUED_PERSONS",
            thread_name="heatpose",
        )

    async def submit(
        self,
        crops: Crops,
        flip: np.ndarray | bool,
        *,
        deadline: float,
        mode: str | None = None,
        want_heatmaps: bool = False,
    ) -> list[PersonResult]:
        """Queue one request's crops and wait for their results.

        Args:
            crops: ``N`` crops (``(N, h, w, 3)`` uint8 RGB, numpy or a tensor on any device:
                kept there, :func:`models.pose.crops.stack_crops`) with their regions and boxes.
            flip: ``(N,)`` bool or one bool: flip-test each crop.
            deadline: ``time.monotonic()`` after which the request fails.
            mode: decode mode, ``None`` = the model's default.
            want_heatmaps: also return each crop's ``(K, H, W)`` heatmaps.

        Returns:
            ``N`` persons in the order of ``crops``, keypoints in image pixels.

        Raises:
            NotServing: not started, draining or dead. QueueFull: no room for ``N`` more crops.
            DeadlineExceeded: the deadline passed. BatchFailed: the batch raised.
        """
        flips = np.broadcast_to(np.asarray(flip, dtype=bool), (len(crops),))
        return await self._submit(crops, (flips, mode, want_heatmaps), deadline=deadline)

    def _run(self, batch: list[Entry], replica: PoseReplica) -> list[PersonResult]:
        """Gather the batch's crops, forward and decode them
        (:func:`app.engine.batch_worker.run`)."""
        outputs = batch_worker.run(
            replica.run_batch,
            replica.decode,
            crops=stack_crops([job.items.images[i] for job, i in batch]),
            flip=np.array([job.params[0][i] for job, i in batch], dtype=bool),
            centers=np.stack([job.items.centers[i] for job, i in batch]).astype(np.float64),
            scales=np.stack([job.items.scales[i] for job, i in batch]).astype(np.float64),
            modes=[job.params[1] for job, _ in batch],
            want_heatmaps=[job.params[2] for job, _ in batch],
        )
        return [
            job.items.result(i, outputs.keypoints[k], outputs.scores[k], outputs.heatmaps[k])
            for k, (job, i) in enumerate(batch)
        ]
