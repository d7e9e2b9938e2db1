"""Stream frames under the process-wide pixel budget of ``/predict`` (:mod:`app.engine.admission`).

The real app under uvicorn in a thread of this process (so the test can hold part of the
app's budget on the server's event loop, as a concurrent request would), and a real WebSocket
client (the ``websockets`` package). The budget: 10,000 pixels in flight in all.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from websockets.sync.client import ClientConnection, connect

from app.engine.admission import PixelBudget
from tests.app.live_server import free_port
from tests.app.streams.test_stream import check_message
from tests.helpers.images import encode, noise

TOTAL = 10_000  # HEATPOSE_MAX_INFLIGHT_PIXELS
TIMEOUT_S = 3.0  # HEATPOSE_REQUEST_TIMEOUT_S: a frame's deadline after its arrival


class Server:
    """The app served by uvicorn on its own event loop in a thread."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_until_complete, args=(self.server.serve(),), daemon=True
        )

    @property
    def budget(self) -> PixelBudget:
        budget: PixelBudget = self.app.state.pixel_budget
        return budget

    def on_loop(self, coro: Any) -> Any:
        """Run ``coro`` on the server's loop (as a concurrent request would) and wait."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)


@pytest.fixture(scope="module")
def server(app_checkpoint: Path) -> Iterator[Server]:
    from app.main import create_app
    from app.settings import Settings

    settings = Settings(
        _env_file=None,
        checkpoint=str(app_checkpoint),
        warmup=False,
        detector="none",
        max_inflight_pixels=TOTAL,
        request_timeout_s=TIMEOUT_S,
    )
    s = Server(create_app(settings))
    s.thread.start()
    deadline = time.monotonic() + 60
    while not s.server.started:
        assert time.monotonic() < deadline and s.thread.is_alive()
        time.sleep(0.05)
    yield s
    s.server.should_exit = True
    s.thread.join(timeout=10)
    s.loop.close()


def frame(width: int, height: int, seed: int = 0) -> bytes:
    return encode(noise(height, width, seed), "JPEG")


def send(ws: ClientConnection, seq: int, data: bytes) -> None:
    ws.send(json.dumps({"seq": seq, "ts_ms": seq * 33.0}))
    ws.send(data)


def test_a_frame_that_can_never_fit_gets_413_and_the_next_one_is_answered(server: Server) -> None:
    with connect(f"ws://127.0.0.1:{server.port}/v1/stream", max_size=None) as ws:
        send(ws, 0, frame(160, 120))  # 19,200 pixels > 10,000 in all
        error = json.loads(ws.recv(timeout=30))["error"]
        send(ws, 1, frame(64, 48))  # 3,072 pixels
        answer = json.loads(ws.recv(timeout=30))
    assert error["code"] == "too_many_pixels" and error["seq"] == 0
    assert "19,200" in error["message"] and "10,000" in error["message"]
    assert "HEATPOSE_MAX_INFLIGHT_PIXELS" in error["message"]
    check_message(answer, 64, 48)
    assert answer["seq"] == 1
    assert server.budget.in_use == 0  # the frame's pixels were given back


@pytest.mark.slow
def test_a_frame_waits_for_room_and_times_out_at_its_deadline(server: Server) -> None:
    held = TOTAL - 1000  # a concurrent request's pixels: a 64x48 frame (3,072) does not fit
    with connect(f"ws://127.0.0.1:{server.port}/v1/stream", max_size=None) as ws:
        server.on_loop(server.budget.acquire(held, time.monotonic() + 30))
        send(ws, 0, frame(64, 48))
        with pytest.raises(TimeoutError):  # waiting for room, not answered
            ws.recv(timeout=1.0)
        server.on_loop(server.budget.release(held))
        answered = json.loads(ws.recv(timeout=30))  # answered once the room is given back
        check_message(answered, 64, 48)
        assert answered["seq"] == 0 and answered["latency_ms"] >= 1000

        server.on_loop(server.budget.acquire(held, time.monotonic() + 30))
        start = time.monotonic()
        send(ws, 1, frame(64, 48))
        error = json.loads(ws.recv(timeout=30))["error"]
        waited = time.monotonic() - start
        server.on_loop(server.budget.release(held))
        send(ws, 2, frame(64, 48))
        after = json.loads(ws.recv(timeout=30))
    assert error["code"] == "timeout" and error["seq"] == 1
    assert "HEATPOSE_MAX_INFLIGHT_PIXELS" in error["message"]
    assert waited >= TIMEOUT_S - 0.5  # it waited until its deadline
    check_message(after, 64, 48)
    assert after["seq"] == 2
    assert server.budget.in_use == 0


@pytest.mark.slow
def test_a_client_that_leaves_while_its_frame_waits_ends_the_stream_cleanly(
    server: Server,
) -> None:
    """The frame times out at its deadline, its error finds the socket closed: the stream ends
    (no server error logged) and the frame's pixels are not kept."""
    errors: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = errors.append  # type: ignore[method-assign]
    log = logging.getLogger("uvicorn.error")
    log.addHandler(handler)
    held = TOTAL - 1000
    try:
        server.on_loop(server.budget.acquire(held, time.monotonic() + 30))
        with connect(f"ws://127.0.0.1:{server.port}/v1/stream", max_size=None) as ws:
            send(ws, 0, frame(64, 48))
            time.sleep(0.5)  # the frame waits for room; the client leaves
        streams = server.app.state.streams
        deadline = time.monotonic() + TIMEOUT_S + 10
        while streams.slots and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not streams.slots  # the stream ended after its frame's deadline
        assert server.budget.in_use == held  # only the test's own pixels
    finally:
        server.on_loop(server.budget.release(held))
        log.removeHandler(handler)
    assert errors == []
