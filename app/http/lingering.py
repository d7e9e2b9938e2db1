"""Lingering close: an answer sent before the request body was read reaches the client.

The gate (:mod:`app.http.gate`: 401, 415, 503) and the body limit (:mod:`app.http.limits`: 413)
answer before reading the request body, with ``Connection: close``. If the server then closes the
socket while the client is still writing its body, the kernel answers the unread bytes with a
reset (RST), and a reset makes the client's kernel drop what it had received: the client sees
a connection error instead of the answer (BENCHMARKS.md, "Early answers and the lingering
close").

So, as nginx (``lingering_close``) and Apache do, the connection is closed in two steps when a
request's body is still arriving: the answer is flushed and the write side shut (FIN), then
what the client still sends is read and discarded, up to :attr:`LingeringClose.linger_max_bytes`
bytes and :attr:`LingeringClose.linger_max_s` seconds, until the client closes its side; only
then is the socket closed. A connection whose request was read whole closes at once.
"""

from __future__ import annotations

import asyncio
from typing import Any


class _LingeringTransport:
    """The connection's transport as uvicorn sees it: ``close()`` goes through the protocol's
    lingering close; everything else is the real transport's."""

    def __init__(self, transport: Any, protocol: LingeringClose) -> None:
        self._transport = transport
        self._protocol = protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def close(self) -> None:
        self._protocol.close_lingering()

    def is_closing(self) -> bool:
        return self._protocol.lingering or self._transport.is_closing()


class LingeringClose(asyncio.Protocol):
    """Mixin for uvicorn's HTTP protocol (before it in the bases, see
    :class:`app.http.connections.BudgetedHttpProtocol`): a close while a request body is still
    arriving lingers (module docstring).

    Attributes:
        linger_max_bytes: the most bytes read and discarded after the answer (16 MiB: more
            than the default ``HEATPOSE_MAX_UPLOAD_BYTES``); beyond, the socket is closed.
        linger_max_s: the longest the discarding lasts, seconds (nginx's ``lingering_timeout``
            is 5 s).
    """

    linger_max_bytes = 16 * 2**20
    linger_max_s = 5.0

    loop: asyncio.AbstractEventLoop

    def connection_made(self, transport: Any) -> None:  # asyncio's or uvloop's TCP transport
        self._raw = transport
        self._body_pending = False  # headers of a request in, its body not all read
        self.lingering = False
        self._linger_left = 0
        self._linger_timer: asyncio.TimerHandle | None = None
        super().connection_made(_LingeringTransport(transport, self))  # type: ignore[arg-type]

    def on_headers_complete(self) -> None:
        self._body_pending = True  # on_message_complete clears it (at once without a body)
        super().on_headers_complete()  # type: ignore[misc]

    def on_message_complete(self) -> None:
        self._body_pending = False
        super().on_message_complete()  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            self._linger_left -= len(data)
            if self._linger_left < 0:
                self._close_now()
            return
        super().data_received(data)

    def eof_received(self) -> None:  # uvicorn's returns None too: the transport then closes
        if self.lingering:
            self._close_now()  # the client sent all it had: done
            return
        super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def close_lingering(self) -> None:
        """Close the connection: at once, or lingering where a request body is still
        arriving (and the transport can shut its write side alone; TLS cannot)."""
        if self.lingering or self._raw.is_closing():
            return
        if not self._body_pending or not self._raw.can_write_eof():
            self._raw.close()
            return
        self.lingering = True
        self._linger_left = self.linger_max_bytes
        self._raw.write_eof()  # after the buffered answer: FIN
        self._raw.resume_reading()  # uvicorn may have paused reading (flow control)
        self._linger_timer = self.loop.call_later(self.linger_max_s, self._close_now)

    def _close_now(self) -> None:
        self._cancel_timer()
        if not self._raw.is_closing():
            self._raw.close()

    def _cancel_timer(self) -> None:
        timer = getattr(self, "_linger_timer", None)
        if timer is not None:
            timer.cancel()
            self._linger_timer = None
