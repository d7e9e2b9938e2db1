"""``HEATPOSE_MAX_HEADER_BYTES`` as documented (issue 23 §3): a request line plus headers longer
than the limit gets the JSON 431 whether it arrives in one write or many; single headers of
40-100 KB used to get 200 (the head completed within one read and was never measured)."""

from __future__ import annotations

import contextlib
import socket
import time
from urllib.parse import urlparse

import pytest

from app.http.connections import head_length

LIMIT = 32_768  # the default


@pytest.mark.parametrize(
    ("tail", "data", "expected"),
    [
        (b"", b"GET / HTTP/1.1\r\nHost: x\r\n\r\nBODY", 27),
        (b"", b"GET / HTTP/1.1\r\nHost: x\r\n", 25),  # no end yet: all of it
        (b"x\r\n", b"\r\nBODY", 2),  # the end spans two reads
        (b"\r\n\r", b"\nBODY", 1),
        (b"", b"GET / HTTP/1.1\nHost: x\n\nBODY", 24),  # LF only, as llhttp takes it
        (b"", b"", 0),
    ],
)
def test_head_length_stops_at_the_end_of_the_headers(tail: bytes, data: bytes, expected: int):
    assert head_length(tail, data) == expected


def request(header_bytes: int) -> bytes:
    """``GET /health`` whose request line and headers are exactly ``header_bytes`` long."""
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: "
    pad = header_bytes - len(head) - 4
    return head + b"a" * pad + b"\r\n\r\n"


def connect(url: str) -> socket.socket:
    u = urlparse(url)
    return socket.create_connection((u.hostname, u.port), timeout=10)


def answer(s: socket.socket, timeout: float = 10) -> bytes:
    """One answer: its head and its body (Content-Length), or what came before a close."""
    s.settimeout(timeout)
    out = b""
    with contextlib.suppress(ConnectionResetError, TimeoutError):
        while chunk := s.recv(65536):
            out += chunk
            head, sep, body = out.partition(b"\r\n\r\n")
            if sep:
                length = [
                    int(line.split(b":")[1])
                    for line in head.lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                ]
                if length and len(body) >= length[0]:
                    break
    return out


def send_in_writes(s: socket.socket, data: bytes, writes: int) -> None:
    step = -(-len(data) // writes)
    with contextlib.suppress(OSError):  # the server may answer and close before the end
        for i in range(0, len(data), step):
            s.sendall(data[i : i + step])
            time.sleep(0.01)


@pytest.mark.slow
def test_headers_over_the_limit_get_431_in_one_write_or_many(server_process) -> None:
    with server_process() as (_, url):
        for size in (LIMIT + 1, 40_000, 100_000):
            for writes in (1, 8):
                s = connect(url)
                send_in_writes(s, request(size), writes)
                got = answer(s)
                s.close()
                assert got.startswith(b"HTTP/1.1 431"), (size, writes, got[:200])
                assert b"headers_too_large" in got and b"32,768 bytes" in got
        # at the limit: served, in one write or many, and on a kept-alive connection the second
        # request's headers are measured too
        s = connect(url)
        for writes in (1, 8):
            send_in_writes(s, request(LIMIT), writes)
            got = answer(s)
            assert got.startswith(b"HTTP/1.1 200"), (writes, got[:200])
        send_in_writes(s, request(40_000), 1)
        got = answer(s)
        assert got.startswith(b"HTTP/1.1 431"), got[:200]
        s.close()
