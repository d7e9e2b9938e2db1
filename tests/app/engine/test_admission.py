"""The pixel budget: per request (413 naming the limit) and process-wide (wait, or 504)."""

from __future__ import annotations

import asyncio
import io
import time

import numpy as np
import pytest
from PIL import Image

from app.engine.admission import PixelBudget
from app.engine.failures import DeadlineExceeded
from app.errors import ApiError
from tests.helpers.images import encode, noise

pytestmark = pytest.mark.anyio


def png(h: int = 150, w: int = 100, seed: int = 0) -> bytes:
    return encode(noise(h, w, seed))


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


@pytest.mark.slow
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


def test_fit_for_render_scales_the_image_and_its_persons_alike() -> None:
    from app.engine.admission import fit_for_render
    from models.pose.persons import PersonResult

    image = np.zeros((200, 400, 3), np.uint8)
    image[100, 200] = 255
    person = PersonResult(
        box=np.array([40.0, 20.0, 360.0, 180.0]),
        keypoints=np.array([[200.0, 100.0], [0.0, 0.0]], np.float32),
        scores=np.ones(2, np.float32),
        center=np.array([200.0, 100.0]),
        scale=np.array([320.0, 160.0]),
        box_score=None,
        box_source="client",
        heatmaps=None,
    )
    same, people = fit_for_render(image, [person], 80_000)
    assert same is image and people[0] is person  # within the bound: untouched
    small, (p,) = fit_for_render(image, [person], 20_000)  # factor 0.5 on both axes
    assert small.shape == (100, 200, 3) and small[50, 100].max() > 0
    # pixel centres as cv2.resize maps them: x' = (x + 0.5) / 2 - 0.5
    np.testing.assert_allclose(p.keypoints, [[99.75, 49.75], [-0.25, -0.25]])
    np.testing.assert_allclose(p.box, [19.75, 9.75, 179.75, 89.75])
    np.testing.assert_allclose(p.center, [99.75, 49.75])
    np.testing.assert_allclose(p.scale, [160, 80])


async def test_visualize_renders_at_a_bounded_size(serve_app) -> None:
    async with serve_app(max_render_pixels=15_000) as (client, _):
        up = {"file": ("a.png", png(h=200, w=300), "image/png")}
        r = await client.post("/visualize", files=up)
        assert r.status_code == 200
        out = Image.open(io.BytesIO(r.content))
        assert out.size == (150, 100)  # 60,000 px drawn at 15,000


@pytest.mark.slow
@pytest.mark.parametrize("late", ["predict", "render"])
async def test_visualize_past_its_deadline_gets_504_not_a_png(serve_app, monkeypatch, late) -> None:
    import app.http.routes.visualize as route

    rendered = []
    render = route.render

    def spy_render(*args, **kwargs):
        rendered.append(1)
        if late == "render":
            time.sleep(1.2)  # a render that outlives the deadline
        return render(*args, **kwargs)

    monkeypatch.setattr(route, "render", spy_render)
    async with serve_app(request_timeout_s=1.0) as (client, app):
        stages = app.state.service.stages
        predict = stages.crops_to_persons

        async def slow_predict(*args, **kwargs):  # a model whose answer comes too late
            out = await predict(*args, **kwargs)
            if late == "predict":
                await asyncio.sleep(1.2)
            return out

        stages.crops_to_persons = slow_predict
        r = await client.post("/visualize", files={"file": ("a.png", png(), "image/png")})
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
        when = "before rendering" if late == "predict" else "while rendering"
        assert when in r.json()["error"]["message"]
        assert rendered == ([] if late == "predict" else [1])  # no render time spent late
        assert app.state.pixel_budget.in_use == 0
