"""Connection budgets against a real server (``python -m app``), with raw sockets: slowloris
and idle sockets closed by the header timeout while others are served, 431 for 1 MB of
headers, 401 before the body is sent, 408 for a body that does not arrive, 503 past the cap."""

from __future__ import annotations

import contextlib
import socket
import time
from urllib.parse import urlparse

import httpx
import pytest


def connect(url: str) -> socket.socket:
    u = urlparse(url)
    s = socket.create_connection((u.hostname, u.port), timeout=10)
    return s


def read_answer(s: socket.socket, timeout: float = 10) -> bytes:
    """Everything until the server closes the connection (or ``timeout``)."""
    s.settimeout(timeout)
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
            if b"\r\n\r\n" in out and b'"}}' in out:
                break
    except (ConnectionResetError, TimeoutError):
        pass
    return out


def closed_within(s: socket.socket, seconds: float) -> bool:
    """True if the server closes ``s`` within ``seconds`` (what the slow client observes)."""
    s.settimeout(seconds)
    try:
        return s.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.mark.slow
def test_connection_budgets_with_raw_sockets(server_process) -> None:
    with server_process(
        API_KEY="k",
        HEADER_TIMEOUT_S="2",
        BODY_TIMEOUT_S="1.5",
        MAX_CONNECTIONS="12",
    ) as (_, url):
        # slowloris: headers trickle in, one byte every 0.3 s; an idle socket sends nothing
        slow, idle = connect(url), connect(url)
        t0 = time.monotonic()
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        served = 0
        while time.monotonic() - t0 < 2.6:
            try:
                slow.sendall(b"a")
            except OSError:
                break
            assert httpx.get(url + "/health", timeout=2).status_code == 200  # others served
            served += 1
            time.sleep(0.3)
        assert served >= 3
        assert closed_within(slow, 1.5), "the slowloris connection was not closed"
        assert closed_within(idle, 0.5), "the idle connection was not closed"
        assert time.monotonic() - t0 < 2 + 2.5
        slow.close()
        idle.close()

        # 1 MB of headers: 431 (as JSON), not buffered
        big = connect(url)
        with contextlib.suppress(OSError):  # the server may close before the megabyte is sent
            big.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000)
        answer = read_answer(big)
        assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
        assert b"headers_too_large" in answer and b"HEATPOSE_MAX_HEADER_BYTES" in answer
        big.close()

        # 401 before the body is sent: headers announce 5 MB that never come
        anon = connect(url)
        anon.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
            b"boundary=b\r\nContent-Length: 5000000\r\n\r\n"
        )
        t1 = time.monotonic()
        answer = read_answer(anon, timeout=5)
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        assert b"unauthorized" in answer and time.monotonic() - t1 < 1.0
        anon.close()

        # a body that does not arrive in HEATPOSE_BODY_TIMEOUT_S: 408
        late = connect(url)
        late.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nX-API-Key: k\r\nContent-Type: "
            b"multipart/form-data; boundary=b\r\nContent-Length: 1000\r\n\r\n--b\r\n"
        )
        t2 = time.monotonic()
        answer = read_answer(late, timeout=5)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"HEATPOSE_BODY_TIMEOUT_S" in answer and 1.4 < time.monotonic() - t2 < 3.0
        late.close()

        # the connection cap: with 12 connections open, the next request gets 503 at once
        held = [connect(url) for _ in range(12)]
        time.sleep(0.2)
        r = httpx.get(url + "/health", timeout=5)
        assert r.status_code == 503
        for s in held:
            s.close()
        time.sleep(0.3)
        assert httpx.get(url + "/health", timeout=5).status_code == 200


def read_answers(s: socket.socket, count: int, timeout: float = 10) -> list[bytes]:
    """``count`` complete HTTP answers (status line .. body, by Content-Length) from ``s``."""
    s.settimeout(timeout)
    buf, answers = b"", []
    while len(answers) < count:
        head_end = buf.find(b"\r\n\r\n")
        if head_end >= 0:
            head = buf[:head_end].decode("latin-1").lower()
            length = int(head.split("content-length:")[1].split("\r\n")[0])
            end = head_end + 4 + length
            if len(buf) >= end:
                answers.append(buf[:end])
                buf = buf[end:]
                continue
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return answers


@pytest.mark.slow
def test_header_limit_counts_headers_only(server_process) -> None:
    """``HEATPOSE_MAX_HEADER_BYTES`` on the httptools protocol: headers under it pass on a
    kept-alive connection, a large body after small headers is no header overflow, pipelined
    requests are each answered, and headers trickled past the limit get the JSON 431."""
    with server_process(MAX_HEADER_BYTES="4096") as (_, url):
        s = connect(url)
        near = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 3800 + b"\r\n\r\n"
        s.sendall(near)
        (first,) = read_answers(s, 1)
        assert first.startswith(b"HTTP/1.1 200"), first[:200]
        body = b"--b\r\n" + b"x" * 300_000  # not an image: refused by the app, not by headers
        s.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
            b"boundary=b\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        (second,) = read_answers(s, 1)
        assert second.startswith(b"HTTP/1.1 4") and b" 431 " not in second[:20], second[:300]
        s.close()

        pipelined = connect(url)
        pipelined.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
        answers = read_answers(pipelined, 3)
        assert [a[:12] for a in answers] == [b"HTTP/1.1 200"] * 3
        pipelined.close()

        trickle = connect(url)
        with contextlib.suppress(OSError):  # the server may close before all is sent
            trickle.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            for _ in range(10):
                trickle.sendall(b"X-Pad: " + b"a" * 600 + b"\r\n")
                time.sleep(0.02)
        answer = read_answer(trickle)
        assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
        assert b"4,096 bytes" in answer and b"HEATPOSE_MAX_HEADER_BYTES" in answer
        trickle.close()
