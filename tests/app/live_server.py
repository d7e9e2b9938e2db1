"""Starting a server subprocess (``python -m app``, uvicorn) on a free port and waiting for it
to turn ready, for the tests that run the service as a real process."""

from __future__ import annotations

import socket
import subprocess
import time

import httpx


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the OS picks it; bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(proc: subprocess.Popen, url: str, *, timeout_s: float = 90.0) -> None:
    """Poll ``url + "/ready"`` until it answers 200. Fails with the process's output if it
    exits first, or after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server never became ready"
        time.sleep(0.1)
