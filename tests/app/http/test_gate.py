"""The request gate, driven as raw ASGI: what is refused before the body is read, shedding,
crops over capacity, and a disconnect dropping its crops (the metrics counters as witness)."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import pytest

from tests.helpers.images import encode, noise

pytestmark = pytest.mark.anyio


def png(seed: int = 0, h: int = 150, w: int = 100) -> bytes:
    return encode(noise(h, w, seed))


def multipart(n: int, boxes: Any = None, headers: dict[str, str] | None = None) -> httpx.Request:
    files = [("files", (f"{i}.png", png(i), "image/png")) for i in range(n)]
    data = None if boxes is None else {"boxes": json.dumps(boxes)}
    return httpx.Request(
        "POST", "http://app/predict", files=files, data=data, headers=headers or {}
    )


class Exchange:
    """One request driven by hand: counts the body reads, can disconnect after the body."""

    def __init__(self, request: httpx.Request, *, disconnect: asyncio.Event | None = None):
        self.request = request
        self.body = request.read()
        self.reads = 0
        self.disconnect = disconnect
        self.status: int | None = None
        self.answer = b""

    async def __call__(self, app: Any) -> Exchange:
        url = self.request.url
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": self.request.method,
            "scheme": "http",
            "path": url.path,
            "raw_path": url.raw_path,
            "query_string": url.query,
            "root_path": "",
            "headers": [(k.lower(), v) for k, v in self.request.headers.raw],
            "client": ("127.0.0.1", 1),
            "server": ("app", 80),
            "state": {},
        }
        sent_body = False

        async def receive() -> dict[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                self.reads += 1
                return {"type": "http.request", "body": self.body, "more_body": False}
            if self.disconnect is not None:
                await self.disconnect.wait()
            else:
                await asyncio.Event().wait()  # never: the client stays
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
            elif message["type"] == "http.response.body":
                self.answer += message.get("body", b"")

        await app(scope, receive, send)
        return self

    def error(self) -> dict[str, str]:
        return json.loads(self.answer)["error"]


def counter(text: str, name: str, reason: str | None = None) -> float:
    label = "" if reason is None else f'{{reason="{reason}"}}'
    m = re.search(rf"^{name}{re.escape(label)} ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


async def test_unauthenticated_upload_is_refused_before_the_body_is_read(serve_app) -> None:
    async with serve_app(api_key="s3cret") as (_, app):
        ex = await Exchange(multipart(2, headers={"X-API-Key": "wrong"}))(app)
        assert ex.status == 401 and ex.error()["code"] == "unauthorized"
        assert ex.reads == 0  # not a byte of the upload was read, let alone parsed
        ok = await Exchange(multipart(1, headers={"X-API-Key": "  s3cret\t"}))(app)
        assert ok.status == 200 and ok.reads == 1  # X-API-Key is trimmed like the Bearer token


async def test_metrics_behind_the_key_when_not_public(serve_app) -> None:
    async with serve_app(api_key="k", metrics_public=False) as (client, _):
        assert (await client.get("/metrics")).status_code == 401
        r = await client.get("/metrics", headers={"Authorization": "Bearer k"})
        assert r.status_code == 200 and "heatpose_requests_total" in r.text
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/ready")).status_code == 200
    async with serve_app(api_key="k") as (client, _):  # default: public for scrapers
        assert (await client.get("/metrics")).status_code == 200


async def test_full_queue_is_shed_before_the_body_is_read(serve_app) -> None:
    # Two crops fill the queue; the batch waits 10 s for company, so they stay queued.
    settings = {"max_queued_persons": 2, "max_batch_size": 64, "max_queue_delay_ms": 10_000}
    async with serve_app(**settings) as (client, app):
        holder = asyncio.ensure_future(Exchange(multipart(2))(app))
        while app.state.service.batcher.queued < 2:
            await asyncio.sleep(0.01)
        shed = await Exchange(multipart(1))(app)
        assert shed.status == 503 and shed.error()["code"] == "overloaded"
        assert shed.reads == 0  # refused on its headers: nothing read, nothing decoded
        text = (await client.get("/metrics")).text
        assert counter(text, "heatpose_rejected_total", "queue_full") == 1
        holder.cancel()


async def test_request_with_more_crops_than_the_queue_holds_gets_413(serve_app) -> None:
    async with serve_app(max_queued_persons=3) as (client, _):
        boxes = [[[0, 0, 50, 50], [10, 10, 90, 140]], [[0, 0, 50, 50], [5, 5, 60, 60]]]
        files = [("files", (f"{i}.png", png(i), "image/png")) for i in range(2)]
        r = await client.post("/predict", files=files, data={"boxes": json.dumps(boxes)})
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_persons"
        assert "4 person crops" in r.text and "HEATPOSE_MAX_QUEUED_PERSONS" in r.text
        text = (await client.get("/metrics")).text
        assert counter(text, "heatpose_rejected_total", "over_capacity") == 1
        assert counter(text, "heatpose_persons_total") == 0
        ok = await client.post("/predict", files=files[:1], data={"boxes": json.dumps(boxes[:1])})
        assert ok.status_code == 200  # 2 crops fit


@pytest.mark.slow
async def test_a_disconnected_client_has_its_queued_crops_dropped(serve_app) -> None:
    settings = {"max_batch_size": 64, "max_queue_delay_ms": 1500}
    async with serve_app(**settings) as (client, app):
        gone = asyncio.Event()
        batcher = app.state.service.batcher
        ex = asyncio.ensure_future(Exchange(multipart(3), disconnect=gone)(app))
        while batcher.queued < 3:
            await asyncio.sleep(0.01)
        gone.set()  # the client goes away while its 3 crops wait for a batch
        await asyncio.wait_for(ex, 5)
        assert batcher.queued == 0  # removed at once, not when the batch would have formed
        await asyncio.sleep(2.0)  # past the batch delay: nothing reaches the model
        text = (await client.get("/metrics")).text
        assert counter(text, "heatpose_dropped_crops_total", "cancelled") == 3
        assert counter(text, "heatpose_persons_total") == 0
        assert counter(text, "heatpose_rejected_total", "client_disconnected") == 1
        ok = await client.post("/predict", files=[("files", ("a.png", png(), "image/png"))])
        assert ok.status_code == 200  # the service carries on
