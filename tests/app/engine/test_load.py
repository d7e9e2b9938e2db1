"""§8 under load: concurrent requests share batches; overload, timeouts and failures."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from typing import Any

import numpy as np
import pytest
import torch

from models.inference.predictor import Predictor
from models.weights.checkpoint import load
from tests.helpers.images import encode, noise
from tests.helpers.stages import until_idle

pytestmark = pytest.mark.anyio


def png(seed: int, h: int = 96, w: int = 72) -> tuple[np.ndarray, bytes]:
    a = noise(h, w, seed)
    return a, encode(a)


def upload(data: bytes, name: str = "a.png") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "image/png"))]


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    assert m, name
    return float(m.group(1))


@pytest.mark.slow
async def test_40_concurrent_requests_batched_and_correct(serve_app, app_checkpoint) -> None:
    ref = Predictor(load(app_checkpoint), device="cpu")
    ref.model.to(memory_format=torch.channels_last)  # as the service runs it on CPU
    inputs = [png(seed) for seed in range(40)]
    want = [people[0].keypoints for people in ref.predict([a for a, _ in inputs])]
    async with serve_app(max_batch_size=16, max_queue_delay_ms=30) as (client, _):
        responses = await asyncio.wait_for(
            asyncio.gather(
                *(
                    client.post("/predict", files=upload(d, f"{i}.png"))
                    for i, (_, d) in enumerate(inputs)
                )
            ),
            timeout=120,
        )
        text = (await client.get("/metrics")).text
    for i, r in enumerate(responses):
        assert r.status_code == 200, r.text
        got = r.json()["images"][0]
        assert got["filename"] == f"{i}.png"
        xy = np.array([[k["x"], k["y"]] for k in got["persons"][0]["keypoints"]])
        np.testing.assert_allclose(xy, want[i], atol=0.05)
    batches = metric(text, "heatpose_batch_size_count")
    singles = metric(text, 'heatpose_batch_size_bucket{le="1.0"}')
    assert metric(text, "heatpose_batch_size_sum") == 40
    assert batches < 40 and singles < batches  # some forward passes held more than one crop


def gate_model(app: Any) -> threading.Event:
    """Make the app's forward pass wait for the returned event (a stuck or slow device)."""
    predictor = app.state.service.predictor  # its forward call: the backend interface
    real = predictor.forward
    gate = threading.Event()

    def gated(x: Any) -> Any:
        gate.wait(30)
        return real(x)

    predictor.forward = gated
    return gate


@pytest.mark.slow
async def test_overload_is_503_with_retry_after_and_nothing_hangs(serve_app) -> None:
    _, data = png(0)
    async with serve_app(max_queued_persons=4, max_batch_size=2, max_queue_delay_ms=0) as (
        client,
        app,
    ):
        gate = gate_model(app)
        tasks = [
            asyncio.ensure_future(client.post("/predict", files=upload(data))) for _ in range(12)
        ]
        batcher = app.state.service.batcher
        end = time.monotonic() + 30  # until each request holds a crop or has its answer
        while time.monotonic() < end:
            await asyncio.sleep(0.01)
            if sum(t.done() for t in tasks) + batcher.queued + batcher.in_flight == len(tasks):
                break
        done = [t for t in tasks if t.done()]  # up to 2 in the stuck batch + 4 queued; the
        assert len(done) >= 6  # rest must be refused
        for t in done:
            r = t.result()
            assert r.status_code == 503 and r.json()["error"]["code"] == "overloaded"
            assert int(r.headers["retry-after"]) >= 1
        gate.set()
        rest = await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
        codes = sorted(r.status_code for r in rest)
        assert codes.count(200) == 12 - len(done) and codes.count(503) == len(done)
        text = (await client.get("/metrics")).text
        assert metric(text, 'heatpose_rejected_total{reason="queue_full"}') == len(done)
        assert (await client.post("/predict", files=upload(data))).status_code == 200


async def test_timeout_is_504_and_the_service_recovers(serve_app) -> None:
    _, data = png(1)
    async with serve_app(request_timeout_s=0.5, max_queue_delay_ms=0, max_batch_size=1) as (
        client,
        app,
    ):
        gate = gate_model(app)
        start = time.monotonic()
        first = asyncio.ensure_future(client.post("/predict", files=upload(data)))
        second = asyncio.ensure_future(client.post("/predict", files=upload(data)))
        r1, r2 = await asyncio.wait_for(asyncio.gather(first, second), timeout=30)
        assert time.monotonic() - start < 5
        for r in (r1, r2):
            assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
        gate.set()
        await until_idle(app.state.service.batcher)
        r3 = await client.post("/predict", files=upload(data))
        assert r3.status_code == 200, r3.text
        assert app.state.service.batcher.metrics.persons._value.get() == 2  # 504'd #2 never ran


async def test_a_failing_batch_fails_only_its_requests(serve_app) -> None:
    _, data = png(2)
    async with serve_app(max_queue_delay_ms=0) as (client, app):
        predictor = app.state.service.predictor  # its forward call: the backend interface
        real, calls = predictor.forward, []

        def flaky(x: Any) -> Any:
            calls.append(len(x))
            if len(calls) == 1:
                raise RuntimeError("device fell over")
            return real(x)

        predictor.forward = flaky
        r = await client.post("/predict", files=upload(data))
        assert r.status_code == 500 and r.json()["error"]["code"] == "inference_failed"
        assert "device fell over" in r.json()["error"]["message"]
        assert (await client.post("/predict", files=upload(data))).status_code == 200
        assert (await client.get("/ready")).status_code == 200
