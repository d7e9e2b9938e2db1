"""SIGTERM as a load balancer expects it: /ready 503 at once, still serving for the drain delay,
then the grace period; requests it cuts off get the JSON 503 ``shutting_down``, never a 500."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.helpers.images import encode, noise

pytestmark = pytest.mark.slow


def jpeg(seed: int) -> bytes:
    return encode(noise(80, 60, seed), "JPEG")


def post(url: str, n: int, seed: int) -> httpx.Response:
    files = [("files", (f"{seed}-{i}.jpg", jpeg(seed + i), "image/jpeg")) for i in range(n)]
    # a new connection each time: the listener must still accept them during the drain delay
    return httpx.post(url + "/predict", files=files, timeout=60)


def test_sigterm_keeps_serving_for_the_drain_delay_then_cuts_off_with_json_503(
    server_process,
) -> None:
    # Batches of 4 crops go at once; fewer wait 10 s for company: a 4-image request is served
    # immediately, single images stay queued until the grace period (1 s) cuts them off.
    with server_process(
        DRAIN_DELAY_S="3",
        SHUTDOWN_GRACE_S="1",
        MAX_BATCH_SIZE="4",
        MAX_QUEUE_DELAY_MS="10000",
    ) as (proc, url):
        assert post(url, 4, 0).status_code == 200
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        while httpx.get(url + "/ready", timeout=2).status_code != 503:
            assert time.monotonic() - t0 < 0.5, "/ready did not turn 503 at once"
            time.sleep(0.01)
        ready = httpx.get(url + "/ready", timeout=2)
        assert ready.json()["error"]["code"] == "shutting_down"
        during = []
        while time.monotonic() - t0 < 1.5:  # load during the drain delay: all served
            during.append(post(url, 4, len(during) * 4))
            assert httpx.get(url + "/health", timeout=2).status_code == 200
        served_by = time.monotonic() - t0
        assert during and all(r.status_code == 200 for r in during), [r.text for r in during]
        assert served_by < 3.0  # all within the drain delay
        with ThreadPoolExecutor(2) as pool:  # these two never fill a batch: cut off by the grace
            stuck = [pool.submit(post, url, 1, 100 + i) for i in range(2)]
            time.sleep(2.0 - (time.monotonic() - t0) if time.monotonic() - t0 < 2.0 else 0)
            while time.monotonic() - t0 < 3.6:
                time.sleep(0.05)
            with pytest.raises(httpx.TransportError):  # the listener is closed after the delay
                httpx.get(url + "/health", timeout=2)
            cut = [f.result(timeout=30) for f in stuck]
        for r in cut:
            assert r.status_code == 503, r.text
            assert r.headers["content-type"] == "application/json"
            assert r.json()["error"]["code"] == "shutting_down"
        code = proc.wait(timeout=30)
        out = proc.stdout.read() if proc.stdout else ""
        assert code in (0, -signal.SIGTERM), out
        assert "Internal Server Error" not in out and " 500" not in out, out


def test_second_sigterm_is_not_needed_and_drain_delay_zero_closes_at_once(server_process) -> None:
    with server_process(DRAIN_DELAY_S="0", SHUTDOWN_GRACE_S="1") as (proc, url):
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        closed = threading.Event()
        while not closed.is_set():
            try:
                httpx.get(url + "/health", timeout=1)
            except httpx.TransportError:
                closed.set()
            assert time.monotonic() - t0 < 3
            time.sleep(0.02)
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
