"""Request body size limit, enforced while the body streams in.

:class:`BodySizeLimitMiddleware` refuses a request with 413 when its ``Content-Length`` header
is over the limit (before reading a byte), and otherwise counts the bytes of the
``http.request`` messages as the application reads them: the moment the count passes the
limit it stops reading, answers 413 and drops whatever the application tries to send after.
A chunked upload of unknown length is thus refused after ``limit`` bytes, not after all of it.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLargeError(Exception):
    """Raised inside ``receive`` when the body passes the limit (the app never sees more)."""


def _too_large_messages(limit: int, declared: int | None) -> list[Message]:
    what = f"declares {declared:,} bytes" if declared is not None else "is larger than that"
    body = json.dumps(
        {
            "error": {
                "code": "payload_too_large",
                "message": f"request body {what}; the limit is {limit:,} bytes "
                "(HEATPOSE_MAX_UPLOAD_BYTES)",
            }
        }
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    return [
        {"type": "http.response.start", "status": 413, "headers": headers},
        {"type": "http.response.body", "body": body},
    ]


class BodySizeLimitMiddleware:
    """Pure ASGI middleware: 413 for bodies over ``limit`` bytes, decided while streaming.

    ``on_reject`` (optional) is called once per refused request, e.g. to count it.
    """

    def __init__(
        self, app: ASGIApp, limit: int, on_reject: Callable[[], None] | None = None
    ) -> None:
        self.app = app
        self.limit = limit
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            self._rejected()
            for m in _too_large_messages(self.limit, declared):
                await send(m)
            return

        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise BodyTooLargeError
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    exceeded = True
                    raise BodyTooLargeError
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # our 413 wins over whatever the app made of the aborted read
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            self._rejected()
            for m in _too_large_messages(self.limit, None):
                await send(m)

    def _rejected(self) -> None:
        if self.on_reject is not None:
            self.on_reject()


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
