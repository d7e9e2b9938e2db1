"""The ASGI connection layer: what happens to a request around the application.

- :func:`json_error_messages`: the JSON error envelope as raw ASGI messages, for the layers that
  answer before (or instead of) the application.
- :class:`ShutdownGuard` (outermost): when uvicorn's graceful shutdown runs out
  (``--timeout-graceful-shutdown``, ``HEATPOSE_SHUTDOWN_GRACE_S``) it cancels the requests still
  running; uvicorn would answer those with a plain-text ``500 Internal Server Error``. The guard
  answers them with the JSON 503 ``shutting_down`` instead (when no response has started).
- :class:`BudgetedH11Protocol`: uvicorn's HTTP/1.1 protocol plus a header timeout and a JSON
  431 for oversized headers (see its docstring).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping

import h11
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol


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


class BudgetedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the connection budgets uvicorn has no option for.

    - Header timeout (``header_timeout_s``, ``HEATPOSE_HEADER_TIMEOUT_S``): from the moment a
      connection opens, and again after each answer, the client must send a complete request
      line and headers within it, else the connection is closed. uvicorn itself never closes a
      connection that sends nothing or trickles its headers (slowloris).
    - Headers over ``h11_max_incomplete_event_size`` (``HEATPOSE_MAX_HEADER_BYTES``) get
      ``431 Request Header Fields Too Large`` as JSON (uvicorn answers a plain-text 400).

    Use :func:`budgeted_protocol` to set the timeout; ``heatpose serve`` passes the class to
    ``uvicorn.Config(http=...)``.
    """

    header_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()  # no complete request headers in time

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm_header_timer()  # the headers are in (or the connection failed)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()  # the next request's headers, on a kept-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        limit = self.config.h11_max_incomplete_event_size
        if limit is not None and len(self.conn.trailing_data[0]) > limit:
            body = json.dumps(
                {
                    "error": {
                        "code": "headers_too_large",
                        "message": f"the request line and headers exceed {limit:,} bytes "
                        "(HEATPOSE_MAX_HEADER_BYTES)",
                    }
                }
            ).encode()
            head = (
                "HTTP/1.1 431 Request Header Fields Too Large\r\n"
                "content-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
            )
            self.transport.write(head.encode("latin-1") + body)
            self.transport.close()
            return
        super().send_400_response(msg)


class WorkerH11Protocol(BudgetedH11Protocol):
    """:class:`BudgetedH11Protocol` for ``--workers N``: worker processes are spawned, so the
    protocol class must be importable by name (``app.connections:WorkerH11Protocol``); its header
    timeout is ``HEATPOSE_HEADER_TIMEOUT_S``, which ``heatpose serve`` exports to the workers."""

    header_timeout_s = float(
        os.environ.get("HEATPOSE_HEADER_TIMEOUT_S", BudgetedH11Protocol.header_timeout_s)
    )


def budgeted_protocol(header_timeout_s: float) -> type[BudgetedH11Protocol]:
    """A :class:`BudgetedH11Protocol` subclass with this header timeout (``uvicorn.Config``)."""
    attrs = {"header_timeout_s": header_timeout_s}
    return type("BudgetedH11Protocol", (BudgetedH11Protocol,), attrs)
