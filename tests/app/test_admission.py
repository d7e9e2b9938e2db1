"""The pixel budget: per request (413 naming the limit) and process-wide (wait, or 504)."""

from __future__ import annotations

import asyncio
import io
import time

import numpy as np
import pytest
from PIL import Image

from app.admission import PixelBudget
from app.batcher import DeadlineExceeded
from app.errors import ApiError

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def png(h: int = 150, w: int = 100, seed: int = 0) -> bytes:
    a = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


async def test_budget_waits_for_room_and_gives_up_at_the_deadline() -> None:
    budget = PixelBudget(per_request=100, total=100)
    await budget.acquire(60, time.monotonic() + 1)
    waiter = asyncio.ensure_future(budget.acquire(50, time.monotonic() + 5))
    await asyncio.sleep(0.05)
    assert not waiter.done() and budget.in_use == 60  # 60 + 50 > 100: it waits
    with pytest.raises(DeadlineExceeded):
        await budget.acquire(50, time.monotonic() + 0.05)
    await budget.release(60)
    await asyncio.wait_for(waiter, 1)
    assert budget.in_use == 50
    with pytest.raises(ApiError) as e:
        await budget.acquire(101, time.monotonic() + 1)
    assert e.value.status == 413 and "HEATPOSE_MAX_REQUEST_PIXELS" in e.value.message


async def test_request_over_its_pixel_budget_gets_413_before_decoding(serve_app) -> None:
    async with serve_app(max_request_pixels=20_000) as (client, app):
        files = [("files", (f"{i}.png", png(seed=i), "image/png")) for i in range(2)]  # 2 x 15000
        r = await client.post("/predict", files=files)
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_pixels"
        assert "30,000 pixels" in r.text and "HEATPOSE_MAX_REQUEST_PIXELS" in r.text
        assert (await client.post("/predict", files=files[:1])).status_code == 200
        assert app.state.pixel_budget.in_use == 0  # every lease was given back


async def test_requests_wait_for_the_process_budget_then_time_out(serve_app) -> None:
    async with serve_app(max_inflight_pixels=20_000, request_timeout_s=1.0) as (client, app):
        budget = app.state.pixel_budget
        await budget.acquire(10_000, time.monotonic() + 1)  # another request's images
        up = [("files", ("a.png", png(), "image/png"))]  # 15000: does not fit beside them
        t0 = time.monotonic()
        r = await client.post("/predict", files=up)
        assert r.status_code == 504 and "HEATPOSE_MAX_INFLIGHT_PIXELS" in r.text
        assert time.monotonic() - t0 >= 0.9
        pending = asyncio.ensure_future(client.post("/predict", files=up))
        await asyncio.sleep(0.3)
        assert not pending.done()  # waiting for room
        await budget.release(10_000)
        assert (await asyncio.wait_for(pending, 5)).status_code == 200
        assert budget.in_use == 0
