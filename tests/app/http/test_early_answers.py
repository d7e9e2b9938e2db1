"""Early answers are readable: a 503 (or 401/413/415) sent before the request body is read is
followed by a bounded lingering close (:mod:`app.http.lingering`), so a real client that is still
writing its body reads the answer instead of a connection reset. Through a real server."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.helpers.images import encode, noise

pytestmark = pytest.mark.slow


def upload(size: int) -> bytes:
    """A PNG of about ``size`` bytes (noise does not compress)."""
    side = max(8, int((size / 3) ** 0.5))
    return encode(noise(side, side, seed=size), compress_level=0)


async def burst(url: str, data: bytes, *, clients: int, rounds: int, **kw: Any) -> Counter:
    """``clients`` concurrent clients, each posting ``rounds`` uploads on its own connection
    pool: a Counter of statuses (with each 503's JSON code) and of transport errors."""
    seen: Counter = Counter()

    async def one(client: httpx.AsyncClient) -> None:
        for _ in range(rounds):
            try:
                r = await client.post(
                    url + "/predict", files=[("files", ("a.png", data, "image/png"))], **kw
                )
            except httpx.TransportError as e:
                seen[f"error:{type(e).__name__}"] += 1
                continue
            if r.status_code == 200:
                seen["200"] += 1
            else:
                seen[f"{r.status_code}:{r.json()['error']['code']}"] += 1

    limits = httpx.Limits(max_connections=1)
    clients_ = [httpx.AsyncClient(timeout=60, limits=limits) for _ in range(clients)]
    try:
        await asyncio.gather(*(one(c) for c in clients_))
    finally:
        await asyncio.gather(*(c.aclose() for c in clients_))
    return seen


@pytest.mark.parametrize("size", [12_000, 2_200_000])
def test_every_shed_request_reads_its_503(server_process: Any, size: int) -> None:
    data = upload(size)
    env = {"MAX_QUEUED_PERSONS": "8", "MAX_UPLOAD_BYTES": str(8 * 2**20), "WARMUP": "false"}
    with server_process(**env) as (_, url):
        seen = asyncio.run(burst(url, data, clients=32, rounds=6 if size < 10**6 else 2))
    print(f"{size} bytes: {dict(seen)}")  # the counts, with pytest -s
    errors = {k: v for k, v in seen.items() if k.startswith("error")}
    assert errors == {}, seen
    assert seen["503:overloaded"] > 0, seen  # the burst was shed, and every 503 was read
    assert set(seen) <= {"200", "503:overloaded"}, seen


def test_a_refused_key_and_a_too_large_body_are_read_too(server_process: Any) -> None:
    small, large = upload(200_000), upload(2_200_000)
    with server_process(API_KEY="k" * 16, MAX_UPLOAD_BYTES=str(2**20)) as (_, url):
        seen = asyncio.run(burst(url, small, clients=16, rounds=3))
        assert seen == Counter({"401:unauthorized": 48}), seen
        headers = {"X-API-Key": "k" * 16}
        seen = asyncio.run(burst(url, large, clients=16, rounds=3, headers=headers))
        assert seen == Counter({"413:payload_too_large": 48}), seen
