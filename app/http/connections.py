"""The ASGI connection layer: what happens to a request around the application.

- :func:`json_error_messages`: the JSON error envelope as raw ASGI messages, for the layers that
  answer before (or instead of) the application.
- :class:`ShutdownGuard` (outermost): when uvicorn's graceful shutdown runs out
  (``--timeout-graceful-shutdown``, ``HEATPOSE_SHUTDOWN_GRACE_S``) it cancels the requests still
  running; uvicorn would answer those with a plain-text ``500 Internal Server Error``. The guard
  answers them with the JSON 503 ``shutting_down`` instead (when no response has started).
- :class:`BudgetedHttpProtocol`: uvicorn's httptools HTTP/1.1 protocol plus a header timeout
  and a header size limit answered with a JSON 431 (see its docstring), and a lingering close
  after an answer sent before the body was read (:mod:`app.http.lingering`).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.http.lingering import LingeringClose


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


class BudgetedHttpProtocol(LingeringClose, HttpToolsProtocol):
    """uvicorn's httptools (llhttp, C) protocol with the connection budgets uvicorn has no
    option for. (uvicorn's other protocol, pure-Python h11, has a header size limit but costs
    more CPU per request: benchmarks/bench_overhead.py.)

    - Header timeout (``header_timeout_s``, ``HEATPOSE_HEADER_TIMEOUT_S``): from the moment a
      connection opens, and again after each answer, the client must send a complete request
      line and headers within it, else the connection is closed. uvicorn itself never closes a
      connection that sends nothing or trickles its headers (slowloris).
    - Header size (``max_header_bytes``, ``HEATPOSE_MAX_HEADER_BYTES``): a request whose line
      and headers (up to and with the empty line that ends them) are longer gets ``431 Request
      Header Fields Too Large`` as JSON and the connection is closed (httptools itself buffers
      any amount). Each read is measured before the parser sees it, up to the end of the headers
      when it holds that end (:func:`head_length`), so a head arriving in one write and one
      trickled over many are judged alike, and nothing past the limit reaches the parser.
      Pipelined requests after the first in one read are not measured (each read is).

    Use :func:`budgeted_protocol` to set both; ``heatpose serve`` passes the class to
    ``uvicorn.Config(http=...)``.
    """

    header_timeout_s = 10.0
    max_header_bytes = 32768

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._awaiting_head = True  # a request line and headers are still to come
        self._head_bytes = 0
        self._head_tail = b""  # the last bytes of the head so far (its end may span two reads)
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
        between = self.cycle is None or self.cycle.response_complete  # no request in flight
        if between and not self.transport.is_closing():
            self.transport.close()  # no complete request headers in time

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head and not self.transport.is_closing():
            self._head_bytes += head_length(self._head_tail, data)
            self._head_tail = (self._head_tail + data)[-3:]
            if self._head_bytes > self.max_header_bytes:
                self._send_431()  # before the parser: the head is never buffered or served
                return
        super().data_received(data)

    def _expect_head(self) -> None:
        self._awaiting_head, self._head_bytes, self._head_tail = True, 0, b""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._awaiting_head:
            self._expect_head()  # a pipelined request: measured from the next read on

    def on_headers_complete(self) -> None:
        self._awaiting_head, self._head_bytes = False, 0
        self._disarm_header_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._expect_head()  # the next bytes on this connection start a new request

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()  # the next request's headers, on a kept-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _send_431(self) -> None:
        body = json.dumps(
            {
                "error": {
                    "code": "headers_too_large",
                    "message": f"the request line and headers exceed {self.max_header_bytes:,} "
                    "bytes (HEATPOSE_MAX_HEADER_BYTES)",
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


def head_length(tail: bytes, data: bytes) -> int:
    """How many bytes of ``data`` belong to a request head still being received: all of them,
    or those up to and with the empty line that ends it (CRLF CRLF, or LF LF as llhttp also
    takes). ``tail``: the head's last bytes from earlier reads (at most 3), for an end that
    spans two reads."""
    window = tail + data
    ends = [i + len(t) for t in (b"\r\n\r\n", b"\n\n") if (i := window.find(t)) >= 0]
    return len(data) if not ends else max(0, min(ends) - len(tail))


class WorkerHttpProtocol(BudgetedHttpProtocol):
    """:class:`BudgetedHttpProtocol` for ``--workers N``: worker processes are spawned, so the
    protocol class must be importable by name (``app.http.connections:WorkerHttpProtocol``); its
    budgets are ``HEATPOSE_HEADER_TIMEOUT_S`` and ``HEATPOSE_MAX_HEADER_BYTES``, which
    ``heatpose serve`` exports to the workers."""

    header_timeout_s = float(
        os.environ.get("HEATPOSE_HEADER_TIMEOUT_S", BudgetedHttpProtocol.header_timeout_s)
    )
    max_header_bytes = int(
        os.environ.get("HEATPOSE_MAX_HEADER_BYTES", BudgetedHttpProtocol.max_header_bytes)
    )


def budgeted_protocol(header_timeout_s: float, max_header_bytes: int) -> type[BudgetedHttpProtocol]:
    """A :class:`BudgetedHttpProtocol` subclass with these budgets (``uvicorn.Config``)."""
    attrs = {"header_timeout_s": header_timeout_s, "max_header_bytes": max_header_bytes}
    return type("BudgetedHttpProtocol", (BudgetedHttpProtocol,), attrs)
