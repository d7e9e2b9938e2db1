"""``WS /v1/stream`` against a real server (uvicorn subprocess) with a real WebSocket client
(the ``websockets`` package) streaming synthetic video: schema, latest frame wins under a flood,
flat memory, bad frames, and the 1008 / 1013 / 1001 closes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.app.http.test_server import ROOT, env
from tests.app.live_server import free_port, wait_ready
from tests.app.streams.test_stream import check_message
from tests.helpers.images import encode
from training.synthetic.synthetic_video import make_video

pytestmark = pytest.mark.slow

KEY = "sesame"


def start_server(checkpoint: Path, **settings: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "--port", str(port)],
        cwd=ROOT,
        env=env(
            **{
                "HEATPOSE_CHECKPOINT": str(checkpoint),
                "OMP_NUM_THREADS": "1",
                "HEATPOSE_DRAIN_DELAY_S": "0",  # the drain delay is tested in test_drain.py
                **settings,
            }
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_ready(proc, f"http://127.0.0.1:{port}")
    return proc, f"ws://127.0.0.1:{port}/v1/stream"


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
    return proc.stdout.read() if proc.stdout else ""


@pytest.fixture(scope="module")
def server(app_checkpoint: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc, url = start_server(
        app_checkpoint, HEATPOSE_API_KEY=KEY, HEATPOSE_MAX_STREAMS="2", HEATPOSE_TORCH_THREADS="1"
    )
    yield proc, url
    stop(proc)


@pytest.fixture(scope="module")
def frames() -> list[bytes]:
    """The synthetic walker (320x240, 30 frames/s) as JPEG frames."""
    video = make_video("constant_speed")
    return [encode(f, "JPEG", quality=85) for f in video.frames]


@pytest.fixture(scope="module")
def png_frames() -> list[bytes]:
    """Ten frames of the walker as PNG (about 150 kB each: a buffered backlog would show)."""
    video = make_video("constant_speed")
    return [encode(f, compress_level=1) for f in video.frames[:10]]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def messages_until(ws: ClientConnection, last_seq: int) -> list[dict[str, Any]]:
    """Every message until the answer (or error) for ``last_seq``."""
    got = []
    while True:
        m = json.loads(ws.recv(timeout=60))
        got.append(m)
        if m.get("seq", m.get("error", {}).get("seq")) == last_seq:
            return got


def test_a_video_in_lockstep_is_answered_frame_by_frame(server: Any, frames: list[bytes]) -> None:
    _, url = server
    with connect(url + f"?api_key={KEY}&det_interval=5") as ws:
        answers = []
        for i, f in enumerate(frames[:40]):
            ws.send(json.dumps({"seq": i, "ts_ms": i * 1000.0 / 30}))
            ws.send(f)
            answers.append(json.loads(ws.recv(timeout=60)))
    for i, m in enumerate(answers):
        check_message(m, 320, 240)
        assert (m["seq"], m["dropped"]) == (i, 0) and m["ts_ms"] == pytest.approx(i * 1000 / 30)
        assert len(m["persons"]) == 1
    # Track ids are never reused: each new one is larger than all before. (The random-weight
    # test model's keypoints are noise, so how long a track lasts says nothing here; the
    # crossing scene in test_stream.py shows ids kept through a crossing.)
    ids = [p["track_id"] for m in answers for p in m["persons"]]
    firsts = [i for n, i in enumerate(ids) if i not in ids[:n]]
    assert firsts == sorted(firsts) and firsts[0] == 1


def test_a_flood_drops_frames_and_memory_stays_flat(server: Any, png_frames: list[bytes]) -> None:
    proc, url = server
    frames = png_frames
    headers = {"X-API-Key": KEY}
    with connect(url, additional_headers=headers, max_size=None) as ws:

        def flood(n: int, first: int) -> list[dict[str, Any]]:
            for i in range(n):
                ws.send(json.dumps({"seq": first + i}))
                ws.send(frames[i % len(frames)])
            return messages_until(ws, first + n - 1)

        warm = flood(50, 0)
        before = rss_kib(proc.pid)
        answered = flood(300, 50)
        after = rss_kib(proc.pid)
    for got in (warm, answered):
        dropped = sum(m["dropped"] for m in got)
        assert dropped + len(got) == (50 if got is warm else 300)  # each frame answered or dropped
    assert sum(m["dropped"] for m in answered) > 150  # the client sends far faster than the model
    seqs = [m["seq"] for m in answered]
    assert seqs == sorted(seqs)
    backlog_kib = sum(len(png_frames[i % 10]) for i in range(300)) // 1024
    assert backlog_kib > 40 * 1024  # what buffering every frame would hold, undecoded
    assert after - before < 20 * 1024, (before, after)


def test_a_bad_frame_gets_an_error_and_the_next_one_succeeds(
    server: Any, frames: list[bytes]
) -> None:
    _, url = server
    with connect(url + f"?api_key={KEY}") as ws:
        ws.send(json.dumps({"seq": 5}))
        ws.send(frames[0][: len(frames[0]) // 2])  # a truncated JPEG
        error = json.loads(ws.recv(timeout=60))["error"]
        ws.send(frames[1])
        ok = json.loads(ws.recv(timeout=60))
    assert error["code"] == "corrupt_image" and error["seq"] == 5
    check_message(ok, 320, 240)
    assert ok["seq"] == 1


def close_code(ws: ClientConnection) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as e:
        while True:
            ws.recv(timeout=60)
    assert e.value.rcvd is not None
    return e.value.rcvd.code, e.value.rcvd.reason


def test_no_key_or_a_bad_parameter_closes_1008_and_a_third_stream_1013(server: Any) -> None:
    _, url = server
    with connect(url) as ws:
        code, reason = close_code(ws)
    assert code == 1008 and "API key" in reason
    with connect(url + f"?api_key={KEY}&smoothing=kalman") as ws:
        code, reason = close_code(ws)
    assert code == 1008 and "smoothing" in reason
    with (
        connect(url + f"?api_key={KEY}"),
        connect(url + f"?api_key={KEY}"),
        connect(url + f"?api_key={KEY}") as third,
    ):
        code, reason = close_code(third)
    assert code == 1013 and "try again later" in reason


def test_sigterm_answers_the_current_frame_then_closes_1001(
    app_checkpoint: Path, frames: list[bytes]
) -> None:
    # A long batch delay keeps the frame in flight while the signal arrives.
    proc, url = start_server(app_checkpoint, HEATPOSE_MAX_QUEUE_DELAY_MS="1500")
    try:
        with connect(url) as ws:
            ws.send(frames[0])
            json.loads(ws.recv(timeout=60))  # the first batch runs after the delay too
            ws.send(json.dumps({"seq": 99}))
            ws.send(frames[1])
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            last = json.loads(ws.recv(timeout=60))
            code, reason = close_code(ws)
        assert last["seq"] == 99 and len(last["persons"]) == 1
        assert code == 1001 and "shutting down" in reason
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        out = stop(proc)
    assert "streams closed after" in out
