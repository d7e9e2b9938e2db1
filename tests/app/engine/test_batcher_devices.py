"""One queue, a worker per device: batches spread over the devices, one failing fails only its
batches (two stand-in models play two devices)."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from app.engine.failures import BatchFailed
from app.engine.pose_batcher import Batcher, PoseReplica
from app.observability.metrics import Metrics
from tests.app.engine.test_batcher import FakeModel, crops_for

pytestmark = pytest.mark.anyio


def two_devices(a: FakeModel, b: FakeModel, metrics: Metrics, **kw: object) -> Batcher:
    args: dict = {"max_batch_size": 2, "max_queue_delay_s": 0.005, "max_queued": 256, **kw}
    batcher = Batcher(
        replicas=[
            PoseReplica("cpu", a.run_batch, a.decode),
            PoseReplica("cpu", b.run_batch, b.decode),
        ],
        metrics=metrics,
        **args,
    )
    batcher.start()
    return batcher


def device_batches(metrics: Metrics) -> dict[str, float]:
    text = metrics.render().decode()
    found = re.findall(r'^heatpose_device_batch_size_count\{device="([^"]+)"\} (\S+)$', text, re.M)
    return {d: float(v) for d, v in found}


async def submit(b: Batcher, ids: list[int]) -> list:
    return await b.submit(crops_for(ids), False, deadline=time.monotonic() + 10)


async def test_batches_spread_over_both_devices_with_each_crop_its_own_result() -> None:
    a, b, metrics = FakeModel(delay=0.02), FakeModel(delay=0.02), Metrics()
    batcher = two_devices(a, b, metrics)
    assert batcher.devices == ["cpu/0", "cpu/1"]
    jobs = [[i * 2 + 1, i * 2 + 2] for i in range(16)]
    results = await asyncio.gather(*(submit(batcher, ids) for ids in jobs))
    for ids, res in zip(jobs, results, strict=True):
        assert [int(r.scores[0]) for r in res] == ids
    assert a.batches and b.batches  # both devices ran batches ...
    assert sorted(a.seen | b.seen) == list(range(1, 33)) and not a.seen & b.seen  # ... once each
    counts = device_batches(metrics)
    assert counts == {"cpu/0": len(a.batches), "cpu/1": len(b.batches)}
    assert await batcher.drain(1.0)


async def test_a_failing_device_fails_only_the_batches_sent_to_it() -> None:
    healthy, broken, metrics = FakeModel(delay=0.02), FakeModel(delay=0.02), Metrics()
    sent_to_broken: list[int] = []

    def fail(ids: list[int]) -> Exception:
        sent_to_broken.extend(ids)
        time.sleep(0.02)
        return RuntimeError("device lost")

    broken.fail_when = fail
    batcher = two_devices(healthy, broken, metrics)
    jobs = [[i] for i in range(1, 25)]
    results = await asyncio.gather(*(submit(batcher, ids) for ids in jobs), return_exceptions=True)
    failed = {ids[0] for ids, r in zip(jobs, results, strict=True) if isinstance(r, Exception)}
    assert sent_to_broken and healthy.batches  # both devices got batches
    assert failed == set(sent_to_broken)  # exactly the requests whose batch went there
    for ids, r in zip(jobs, results, strict=True):
        if isinstance(r, Exception):
            assert isinstance(r, BatchFailed) and "device lost" in str(r)
        else:
            assert int(r[0].scores[0]) == ids[0]
    # one request at a time: the healthy device is free and is preferred to the failing one
    before = len(sent_to_broken)
    for i in range(100, 106):
        (r,) = await submit(batcher, [i])
        assert int(r.scores[0]) == i
    assert len(sent_to_broken) == before and batcher.alive
    assert await batcher.drain(1.0)


async def test_one_device_is_the_single_worker_of_before() -> None:
    model, metrics = FakeModel(), Metrics()
    batcher = Batcher(
        model.run_batch,
        model.decode,
        max_batch_size=8,
        max_queue_delay_s=0.005,
        max_queued=64,
        metrics=metrics,
    )
    batcher.start()
    assert batcher.devices == ["cpu"]
    await asyncio.gather(*(submit(batcher, [i]) for i in range(1, 9)))
    assert device_batches(metrics) == {"cpu": len(model.batches)}
    assert await batcher.drain(1.0)
