"""The dynamic batcher with stand-in model functions: batching, deadlines, failures, drain."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
import pytest
import torch

from app.engine.failures import BatchFailed, DeadlineExceeded, NotServing, QueueFull
from app.engine.pose_batcher import Batcher
from models.inference.predictor import Crops

pytestmark = pytest.mark.anyio


class FakeModel:
    """run_batch: heatmaps whose value encodes the crop's id (crop[0,0,0]); decode reads it."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.batches: list[list[int]] = []
        self.seen: set[int] = set()
        self.fail_when: Any = None  # callable(ids) -> exception or None
        self.gate: threading.Event | None = None

    def run_batch(self, crops: np.ndarray, flip: np.ndarray) -> torch.Tensor:
        ids = [int(c[0, 0, 0]) for c in crops]
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail_when is not None and (exc := self.fail_when(ids)) is not None:
            raise exc
        self.batches.append(ids)
        self.seen.update(ids)
        time.sleep(self.delay)
        return torch.tensor(ids, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 2, 3, 4)

    def decode(self, hm: Any, centers: np.ndarray, scales: np.ndarray, mode: str | None) -> Any:
        v = hm[:, :, 0, 0].numpy()  # (B, K)
        kp = np.stack([v, v + centers[:, :1]], axis=-1)  # (B, K, 2)
        return kp, v


def crops_for(ids: list[int]) -> Crops:
    n = len(ids)
    out = np.zeros((n, 4, 4, 3), np.uint8)
    for i, v in enumerate(ids):
        out[i, 0, 0, 0] = v
    boxes = np.array([[v, 0, v + 1, 1] for v in ids], dtype=np.float64).reshape(n, 4)
    return Crops(
        images=out,
        centers=np.zeros((n, 2)),
        scales=np.ones((n, 2)),
        boxes=boxes,
        box_scores=np.full(n, np.nan),
        box_sources=("client",) * n,
    )


async def submit(b: Batcher, ids: list[int], timeout: float = 10.0, **kw: Any) -> list[Any]:
    return await b.submit(crops_for(ids), False, deadline=time.monotonic() + timeout, **kw)


def make(model: FakeModel, **kw: Any) -> Batcher:
    args = {"max_batch_size": 8, "max_queue_delay_s": 0.02, "max_queued": 64, **kw}
    b = Batcher(model.run_batch, model.decode, **args)
    b.start()
    return b


async def test_concurrent_requests_share_batches_and_get_their_own_results() -> None:
    model = FakeModel(delay=0.01)
    b = make(model)
    jobs = [[i * 3 + 1, i * 3 + 2] for i in range(12)]  # 24 crops from 12 "requests"
    results = await asyncio.gather(*(submit(b, ids) for ids in jobs))
    for ids, res in zip(jobs, results, strict=True):
        assert [int(r.scores[0]) for r in res] == ids  # each request gets its own crops, in order
        assert [int(r.box[0]) for r in res] == ids  # ... each with its own box
        assert res[0].heatmaps is None and res[0].box_source == "client"
    assert max(len(x) for x in model.batches) > 1
    assert all(len(x) <= 8 for x in model.batches)
    assert await b.drain(1.0)


async def test_a_lone_request_waits_at_most_the_queue_delay() -> None:
    model = FakeModel()
    b = make(model, max_queue_delay_s=0.05)
    t = time.monotonic()
    await submit(b, [7])
    assert time.monotonic() - t < 0.5
    await b.drain(1.0)


async def test_heatmaps_are_returned_on_request() -> None:
    b = make(FakeModel())
    (r,) = await submit(b, [9], want_heatmaps=True)
    assert r.heatmaps is not None and r.heatmaps.shape == (2, 3, 4) and r.heatmaps[0, 0, 0] == 9
    await b.drain(1.0)


async def test_exception_fails_only_its_batch_and_loop_keeps_serving() -> None:
    model = FakeModel()
    model.fail_when = lambda ids: RuntimeError("boom") if 13 in ids else None
    b = make(model, max_queue_delay_s=0.0)
    with pytest.raises(BatchFailed) as e:
        await submit(b, [13])
    assert "RuntimeError: boom" in str(e.value) and isinstance(e.value.__cause__, RuntimeError)
    res = await submit(b, [14])
    assert int(res[0].scores[0]) == 14 and b.alive
    await b.drain(1.0)


async def test_cuda_oom_splits_the_batch_and_retries() -> None:
    model = FakeModel()
    model.fail_when = lambda ids: torch.cuda.OutOfMemoryError("oom") if len(ids) > 2 else None
    b = make(model, max_queue_delay_s=0.05)
    res = await submit(b, [1, 2, 3, 4, 5, 6, 7])
    assert [int(r.scores[0]) for r in res] == [1, 2, 3, 4, 5, 6, 7]
    assert all(len(x) <= 2 for x in model.batches)
    await b.drain(1.0)


async def test_full_queue_is_503_with_retry_after() -> None:
    model = FakeModel()
    model.gate = threading.Event()  # hold the worker so the queue fills up
    b = make(model, max_queued=4, max_batch_size=2, max_queue_delay_s=0.0)
    first = asyncio.ensure_future(submit(b, [1, 2]))
    await asyncio.sleep(0.05)
    second = asyncio.ensure_future(submit(b, [3, 4, 5]))
    await asyncio.sleep(0.05)
    with pytest.raises(QueueFull) as e:
        await submit(b, [6, 7])
    assert e.value.retry_after >= 1 and "limit 4" in str(e.value)
    model.gate.set()
    assert len(await first) == 2 and len(await second) == 3
    await b.drain(1.0)


async def test_deadline_passed_is_504_and_crops_never_reach_the_model() -> None:
    model = FakeModel()
    model.gate = threading.Event()
    b = make(model, max_batch_size=1, max_queue_delay_s=0.0)
    blocker = asyncio.ensure_future(submit(b, [1]))
    await asyncio.sleep(0.05)  # the worker is now stuck on crop 1
    with pytest.raises(DeadlineExceeded):  # admitted: 3 items at 0.05 s fit 0.5 s
        await submit(b, [42, 43], timeout=0.5)
    model.gate.set()
    await blocker
    await submit(b, [2])  # the queue moves on past the expired crops
    assert 42 not in model.seen and 43 not in model.seen
    await b.drain(1.0)


async def test_dead_loop_reports_not_alive_and_refuses() -> None:
    model = FakeModel()
    b = Batcher(
        model.run_batch, model.decode, max_batch_size=4, max_queue_delay_s=0.0, max_queued=8
    )

    async def broken() -> None:
        raise RuntimeError("collector bug")

    b._gather = broken  # type: ignore[method-assign,assignment]
    b.start()
    await asyncio.sleep(0.05)
    assert not b.alive and isinstance(b.died, RuntimeError)
    with pytest.raises(NotServing) as e:
        await submit(b, [2])
    assert e.value.state == "not_ready"


async def test_drain_finishes_queued_work_then_refuses() -> None:
    model = FakeModel(delay=0.05)
    b = make(model, max_batch_size=2, max_queue_delay_s=0.0)
    pending = [asyncio.ensure_future(submit(b, [i])) for i in range(1, 6)]
    await asyncio.sleep(0.01)
    assert await b.drain(5.0)
    assert [int((await p)[0].scores[0]) for p in pending] == [1, 2, 3, 4, 5]
    with pytest.raises(NotServing):
        await submit(b, [9])


async def test_clients_answered_by_a_batch_can_rejoin_the_next_one() -> None:
    model = FakeModel(delay=0.2)
    b = make(model, max_queue_delay_s=0.1)

    async def client_x() -> None:
        await submit(b, [1, 2])
        await submit(b, [5])  # the "returning client": right after its answer

    x = asyncio.ensure_future(client_x())
    await asyncio.sleep(0.15)  # [1, 2] is on the worker now
    await submit(b, [3, 4])  # queued while the worker is busy
    await x
    # without the hold after the worker came free, [3, 4] would have left alone, then [5]
    assert model.batches == [[1, 2], [3, 4, 5]]
    await b.drain(1.0)
