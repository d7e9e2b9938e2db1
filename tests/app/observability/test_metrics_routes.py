"""``/metrics`` labels an early answer (sent before routing: 401, 413, 415, 503) with the
route it was sent to; only a path no route has is ``unmatched``."""

from __future__ import annotations

import re
from typing import Any

import pytest

from app.engine.failures import QueueFull

pytestmark = pytest.mark.anyio


def count(text: str, route: str, status: int) -> float:
    """``heatpose_requests_total`` for ``route`` and ``status`` (any method), from /metrics."""
    total = 0.0
    pattern = r"^heatpose_requests_total\{([^}]*)\} (\S+)$"
    for labels, value in re.findall(pattern, text, flags=re.M):
        if f'route="{route}"' in labels and f'status="{status}"' in labels:
            total += float(value)
    return total


async def test_early_answers_are_counted_under_their_route(serve_app: Any) -> None:
    settings = {"api_key": "k" * 16, "max_upload_bytes": 4096, "metrics_public": True}
    key = {"X-API-Key": "k" * 16}
    async with serve_app(**settings) as (client, app):
        assert (await client.post("/predict")).status_code == 401  # the gate, no key
        r = await client.post(
            "/visualize", content=b"x", headers={**key, "content-type": "text/plain"}
        )
        assert r.status_code == 415
        r = await client.post("/predict", content=b"x" * 5000, headers=key)
        assert r.status_code == 413  # the body limit, before the gate

        def full(n: int, **_: object) -> None:
            raise QueueFull("the queue is full", retry_after=1)

        app.state.service.batcher.check_room = full  # no room: the gate sheds
        files = [("files", ("a.png", b"x", "image/png"))]
        r = await client.post("/predict", files=files, headers=key)
        assert r.status_code == 503 and r.json()["error"]["code"] == "overloaded"
        assert (await client.get("/nowhere")).status_code == 404
        text = (await client.get("/metrics")).text
    assert count(text, "/predict", 401) == 1
    assert count(text, "/visualize", 415) == 1
    assert count(text, "/predict", 413) == 1
    assert count(text, "/predict", 503) == 1
    assert count(text, "unmatched", 404) == 1
    assert sum(count(text, "unmatched", s) for s in (401, 413, 415, 503)) == 0
