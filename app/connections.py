"""The ASGI connection layer: what happens to a request around the application.

- :func:`json_error_messages`: the JSON error envelope as raw ASGI messages, for the layers that
  answer before (or instead of) the application.
- :class:`ShutdownGuard` (outermost): when uvicorn's graceful shutdown runs out
  (``--timeout-graceful-shutdown``, ``HEATPOSE_SHUTDOWN_GRACE_S``) it cancels the requests still
  running; uvicorn would answer those with a plain-text ``500 Internal Server Error``. The guard
  answers them with the JSON 503 ``shutting_down`` instead (when no response has started).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def json_error_messages(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> list[Message]:
    """``{"error": {"code", "message"}}`` as an ``http.response.start`` and a body message.

    The connection is closed after it (``Connection: close``): these answers are sent
    without reading the request body, which must not be taken for the next request.
    """
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    return [
        {"type": "http.response.start", "status": status, "headers": raw},
        {"type": "http.response.body", "body": body},
    ]


async def send_error(
    send: Send, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> None:
    """Send :func:`json_error_messages`."""
    for m in json_error_messages(status, code, message, headers):
        await send(m)


class ShutdownGuard:
    """Pure ASGI middleware: a request cancelled by the server gets the JSON 503
    ``shutting_down`` instead of uvicorn's plain-text 500 (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:
            if started:
                raise
            await send_error(
                send,
                503,
                "shutting_down",
                "the service is shutting down and its grace period "
                "(HEATPOSE_SHUTDOWN_GRACE_S) ran out before this request finished",
            )
