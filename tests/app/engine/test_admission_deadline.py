"""Deadline-aware admission: work that cannot be answered before its deadline at the pace a
stage measured recently is refused at once (503 with Retry-After), for the pose and the
detector stage; the estimate is in /metrics."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from app.engine.detector_batcher import DetectorBatcher
from app.engine.failures import QueueFull
from models.detection.detector import Detections
from tests.app.engine.test_batcher import FakeModel, make, submit
from tests.app.engine.test_detection import StandIn

pytestmark = pytest.mark.anyio

BATCH_S = 0.2  # the stand-ins' time for one batch


async def test_pose_stage_refuses_what_cannot_finish_before_its_deadline() -> None:
    model = FakeModel(delay=BATCH_S)
    b = make(model, max_batch_size=2, max_queue_delay_s=0.0)
    await submit(b, [1, 2])  # one batch measured: about BATCH_S
    model.gate = threading.Event()  # hold the worker; queue 3 batches behind it
    held = asyncio.ensure_future(submit(b, [3, 4]))
    await asyncio.sleep(0.05)
    queued = asyncio.ensure_future(submit(b, [5, 6, 7, 8, 9, 10]))
    await asyncio.sleep(0.05)
    assert b.queued == 6
    ahead = b.expected_wait_s(2)  # 2 in flight, 6 queued, 2 more: at BATCH_S / 2 an item
    assert ahead == pytest.approx(10 * BATCH_S / 2, rel=0.5)
    start = time.monotonic()
    with pytest.raises(QueueFull) as e:
        await submit(b, [11, 12], timeout=ahead / 2)
    assert time.monotonic() - start < 0.1  # refused at once, not at its deadline
    assert e.value.retry_after >= 1 and "deadline" in str(e.value)
    gauge = b.metrics.expected_wait_seconds.labels("pose")._value.get()
    assert gauge == pytest.approx(b.expected_wait_s(0))
    assert b.metrics.rejected.labels("deadline_unreachable")._value.get() == 1
    late = asyncio.ensure_future(submit(b, [13, 14], timeout=30))  # time enough: queued
    model.gate.set()
    assert [len(r) for r in await asyncio.gather(held, queued, late)] == [2, 6, 2]
    await b.drain(1.0)


class SlowDetector(StandIn):
    """The detection tests' stand-in, taking ``BATCH_S`` a call (held while ``gate`` is
    clear)."""

    def detect(
        self,
        images: Sequence[np.ndarray],
        score_thr: float = 0.3,
        nms_thr: float = 0.3,
        max_persons: int = 100,
    ) -> list[Detections]:
        time.sleep(BATCH_S)
        return super().detect(images, score_thr, nms_thr, max_persons)


async def test_detector_stage_refuses_what_cannot_finish_before_its_deadline() -> None:
    det = SlowDetector()
    b = DetectorBatcher(det, nms_thr=0.3, max_batch_size=2, max_queue_delay_s=0.0, max_queued=64)
    b.start()
    image = np.zeros((8, 8, 3), np.uint8)

    async def one(n: int, timeout: float) -> Any:
        return await b.submit(
            [image] * n, bbox_thr=0.3, max_persons=5, deadline=time.monotonic() + timeout
        )

    await one(2, 10)  # measured
    det.gate = threading.Event()
    held = asyncio.ensure_future(one(2, 30))
    await asyncio.sleep(0.05)
    queued = asyncio.ensure_future(one(8, 30))  # 4 batches queued
    await asyncio.sleep(0.05)
    start = time.monotonic()
    with pytest.raises(QueueFull, match="deadline"):
        await one(2, 0.5)  # 12 images at ~0.1 s ahead: cannot make 0.5 s
    assert time.monotonic() - start < 0.1
    gauge = b.metrics.expected_wait_seconds.labels("detector")._value.get()
    assert gauge == pytest.approx(10 * BATCH_S / 2, rel=0.5)  # 2 in flight, 8 queued
    det.gate.set()
    assert [len(r) for r in await asyncio.gather(held, queued)] == [2, 8]
    await b.drain(1.0)


async def test_the_gate_sheds_with_503_and_retry_after_at_the_measured_pace(serve_app) -> None:
    async with serve_app(request_timeout_s=2.0) as (client, app):
        batcher = app.state.service.batcher
        batcher.seed_pace(5.0)  # as measured: one crop takes longer than the deadline
        batcher._inflight_items = 1  # and one is on the worker (an idle stage takes any)
        files = [("files", ("a.png", b"x", "image/png"))]
        r = await client.post("/predict", files=files)
        assert r.status_code == 503 and r.json()["error"]["code"] == "overloaded"
        assert int(r.headers["retry-after"]) >= 1 and "deadline" in r.json()["error"]["message"]
        metrics = (await client.get("/metrics")).text
        batcher._inflight_items = 0
    assert 'heatpose_stage_expected_wait_seconds{stage="pose"} 5.0' in metrics  # 1 ahead
