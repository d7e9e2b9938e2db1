"""§7: every bad input gets its 4xx and JSON envelope, and the service keeps serving."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from app.http.limits import BodySizeLimitMiddleware
from tests.helpers import images
from tests.helpers.images import bomb_png, encode, noise

pytestmark = pytest.mark.anyio


def jpeg(h: int = 120, w: int = 90, seed: int = 0) -> bytes:
    return encode(noise(h, w, seed), "JPEG", quality=90)


def png(h: int = 60, w: int = 40) -> bytes:
    return encode(np.full((h, w, 3), 128, np.uint8))


def corrupt_png() -> bytes:
    return images.corrupt_png(np.full((60, 40, 3), 128, np.uint8))


def gif() -> bytes:
    return encode(Image.new("RGB", (8, 8)), "GIF")


def files(*items: tuple[str, bytes, str]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", item) for item in items]


GOOD = ("ok.jpg", jpeg(), "image/jpeg")
LIMIT = 200_000

# (name, request kwargs, status, code, a phrase of the message)
CASES: list[tuple[str, dict[str, Any], int, str, str]] = [
    ("empty file", {"files": files(("e.jpg", b"", "image/jpeg"))}, 400, "empty_file", "empty"),
    (
        "not an image",
        {"files": files(("t.jpg", b"just some text", "image/jpeg"))},
        400,
        "invalid_image",
        "not an image",
    ),
    (
        "truncated jpeg",
        {"files": files(("t.jpg", jpeg()[:1500], "image/jpeg"))},
        400,
        "corrupt_image",
        "truncated",
    ),
    (
        "corrupt png",
        {"files": files(("c.png", corrupt_png(), "image/png"))},
        400,
        "corrupt_image",
        "corrupt",
    ),
    (
        "decompression bomb",
        {"files": files(("b.png", bomb_png(20_000, 20_000), "image/png"))},
        413,
        "image_too_large",
        "before decoding",
    ),
    (
        "body over the limit",
        {"files": files(("big.jpg", b"\xff" * (LIMIT + 10), "image/jpeg"))},
        413,
        "payload_too_large",
        "limit is 200,000 bytes",
    ),
    ("too many files", {"files": files(*[GOOD] * 5)}, 413, "too_many_files", "at most 4"),
    (
        "wrong request content type",
        {"json": {"files": []}},
        415,
        "unsupported_media_type",
        "multipart/form-data",
    ),
    (
        "wrong part content type",
        {"files": files(("a.txt", b"hello", "text/plain"))},
        415,
        "unsupported_media_type",
        "text/plain",
    ),
    ("gif", {"files": files(("a.gif", gif(), "image/gif"))}, 415, "unsupported_media_type", "GIF"),
    (
        "no files part",
        {"data": {"boxes": "null"}, "files": [("other", ("x", b"x", "text/plain"))]},
        422,
        "invalid_request",
        "files",
    ),
    (
        "malformed boxes json",
        {"files": files(GOOD), "data": {"boxes": "[[[1, 2,"}},
        422,
        "invalid_boxes",
        "not valid JSON",
    ),
    (
        "wrong number of box lists",
        {"files": files(GOOD, GOOD), "data": {"boxes": "[null]"}},
        422,
        "invalid_boxes",
        "1 entries but 2 file(s)",
    ),
    (
        "nan box",
        {"files": files(GOOD), "data": {"boxes": "[[[NaN, 0, 10, 10]]]"}},
        422,
        "invalid_boxes",
        "NaN",
    ),
    (
        "inf box",
        {"files": files(GOOD), "data": {"boxes": "[[[0, 0, Infinity, 10]]]"}},
        422,
        "invalid_boxes",
        "infinity",
    ),
    (
        "zero-area box",
        {"files": files(GOOD), "data": {"boxes": "[[[5, 5, 5, 50]]]"}},
        422,
        "invalid_boxes",
        "zero or negative area",
    ),
    (
        "box outside the image",
        {"files": files(GOOD), "data": {"boxes": "[[[500, 500, 600, 700]]]"}},
        422,
        "invalid_boxes",
        "wholly outside the 90x120 image",
    ),
    (
        "bad decode mode",
        {"files": files(GOOD), "params": {"decode": "magic"}},
        422,
        "invalid_request",
        "decode",
    ),
]


async def test_each_bad_input_gets_its_error_then_a_valid_request_succeeds(serve_app) -> None:
    async with serve_app(max_upload_bytes=LIMIT, max_images_per_request=4) as (client, _):
        for name, kwargs, status, code, phrase in CASES:
            r = await client.post("/predict", **kwargs)
            assert r.status_code == status, (name, r.text)
            assert r.headers["content-type"].startswith("application/json"), name
            body = r.json()
            assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, name
            assert body["error"]["code"] == code, (name, body)
            assert phrase.lower() in body["error"]["message"].lower(), (name, body)
        good_boxes = {"boxes": "[[[10, 10, 80, 110]]]"}
        r = await client.post("/predict", files=files(GOOD), data=good_boxes)
        assert r.status_code == 200, r.text
        assert len(r.json()["images"][0]["persons"]) == 1
        metrics = (await client.get("/metrics")).text
        assert 'heatpose_rejected_total{reason="body_too_large"} 1.0' in metrics


class ChunkedBody:
    """Feeds ``chunks`` x ``size`` bytes as ``http.request`` messages; counts what was read."""

    def __init__(self, chunks: int, size: int) -> None:
        self.chunks, self.size, self.read = chunks, size, 0

    async def receive(self) -> dict[str, Any]:
        self.read += 1
        more = self.read < self.chunks
        return {"type": "http.request", "body": b"x" * self.size, "more_body": more}


async def call(app: Any, headers: list[tuple[bytes, bytes]], body: ChunkedBody) -> list[Any]:
    sent: list[Any] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/predict",
        "headers": headers,
        "query_string": b"",
        "asgi": {"version": "3.0"},
    }
    await app(scope, body.receive, send)
    return sent


async def test_body_limit_refuses_while_streaming_before_reading_it_all() -> None:
    async def reader(scope: Any, receive: Any, send: Any) -> None:  # an app that reads it all
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"read it all"})

    app = BodySizeLimitMiddleware(reader, limit=10_000)
    chunked = ChunkedBody(chunks=1000, size=1000)  # 1 MB, no Content-Length
    sent = await call(app, [(b"transfer-encoding", b"chunked")], chunked)
    assert sent[0]["status"] == 413 and b"payload_too_large" in sent[1]["body"]
    assert chunked.read == 11  # stopped right after passing 10 kB, 989 chunks never read

    declared = ChunkedBody(chunks=1000, size=1000)
    sent = await call(app, [(b"content-length", b"1000000")], declared)
    assert sent[0]["status"] == 413 and declared.read == 0  # refused from the header alone

    small = ChunkedBody(chunks=5, size=1000)
    sent = await call(app, [], small)
    assert sent[0]["status"] == 200


async def test_streamed_upload_over_the_limit_through_the_app(serve_app) -> None:
    pulled = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal pulled
        boundary = b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"'
        yield boundary + b"\r\nContent-Type: image/jpeg\r\n\r\n"
        for _ in range(1000):
            pulled += 1
            yield b"\xff" * 10_000

    async with serve_app(max_upload_bytes=100_000) as (client, _):
        ct = {"content-type": "multipart/form-data; boundary=xyz"}
        r = await client.post("/predict", content=body(), headers=ct)
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
        assert pulled < 20  # 10 MB offered, ~100 kB read
        ok = await client.post("/predict", files=files(GOOD))
        assert ok.status_code == 200


def test_each_domain_exception_maps_to_its_status_code_and_headers() -> None:
    from app.engine.failures import BatchFailed, DeadlineExceeded, NotServing, QueueFull
    from app.http.errors import http_error
    from models.pose.persons import BoxError

    # (exception, status, code, headers) as the API documents them
    table = [
        (QueueFull("12 queued", retry_after=7), 503, "overloaded", {"Retry-After": "7"}),
        (NotServing("loading"), 503, "not_ready", {"Retry-After": "5"}),
        (NotServing("bye", state="shutting_down"), 503, "shutting_down", {}),
        (NotServing("dead", state="failed"), 503, "batcher_died", {}),
        (DeadlineExceeded("late"), 504, "timeout", {}),
        (BatchFailed("boom"), 500, "inference_failed", {}),
        (BoxError("boxes[0][0] = [1] ..."), 422, "invalid_boxes", {}),
    ]
    for exc, status, code, headers in table:
        err = http_error(exc)
        assert (err.status, err.code, err.headers) == (status, code, headers), exc
        assert err.message == str(exc)
    with pytest.raises(TypeError, match="no HTTP mapping for KeyError"):
        http_error(KeyError("x"))


async def test_domain_exceptions_reach_the_client_as_envelopes(serve_app) -> None:
    async with serve_app() as (client, app):
        await app.state.service.batcher.drain(1.0)  # the batcher is gone: not serving
        r = await client.post("/predict", files=files(GOOD))
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"
        assert r.headers["retry-after"] == "5"
        box = {"boxes": "[[[10, 10, 10, 50]]]"}  # zero area, but readiness is checked first
        r = await client.post("/predict", files=files(GOOD), data=box)
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"
