"""The request gate: what is decided about a request before its body is read, and while it waits.

:class:`RequestGate` is a pure ASGI middleware in front of the routes. FastAPI parses ``File``
and ``Form`` parameters before route dependencies run, so checks that must not cost a parsed
upload happen here, on the headers alone:

1. the API key (``HEATPOSE_API_KEY``) for ``/predict``, ``/visualize``, ``/v1/model`` (and
   ``/metrics`` with ``HEATPOSE_METRICS_PUBLIC=false``): 401 before a byte of the body is read;
2. for ``POST /predict`` and ``/visualize``: a ``multipart/form-data`` body (415), readiness
   and room in the queue for at least one crop that can be answered before the request's
   deadline at the pace the pose stage measured (503 ``not_ready`` / ``shutting_down`` /
   ``overloaded``), so load is shed in milliseconds instead of after decoding (the routes
   check again, exactly, before decoding; each stage again when the request joins its queue);
3. the body must arrive within ``HEATPOSE_BODY_TIMEOUT_S`` of the request's start (408);
4. once the body is read, a client that disconnects cancels its request: the batcher then
   removes its queued crops (``heatpose_dropped_crops_total{reason="cancelled"}``).

The routes check the key again themselves (``app.http.deps.inference_request``,
``require_api_key``); OpenAPI documents it on every route that can answer 401
(``app.http.routes.docs``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.engine.failures import NotServing, QueueFull
from app.engine.service import PoseService
from app.errors import ApiError
from app.http.auth import check_api_key
from app.http.connections import send_error
from app.http.deps import multipart_error
from app.http.errors import http_error
from app.observability.metrics import ARRIVAL_KEY

INFERENCE_PATHS = frozenset({"/predict", "/visualize"})
KEYED_PATHS = INFERENCE_PATHS | {"/v1/model"}


async def _within(awaitable: Awaitable[Message], seconds: float) -> Message:
    """``await awaitable`` or ``asyncio.TimeoutError`` after ``seconds``: ``asyncio.timeout``
    (a timer, Python >= 3.11) rather than ``wait_for`` (a task per call, per body chunk)."""
    timeout = getattr(asyncio, "timeout", None)
    if timeout is None:  # Python 3.10
        return await asyncio.wait_for(awaitable, seconds)
    async with timeout(seconds):
        return await awaitable


def _header(scope: Scope, name: bytes) -> str:
    """The first ``name`` header of the request (latin-1), or ``""``."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return ""


class _BodyTimeout(Exception):
    """Raised inside ``receive`` when the body did not arrive in time."""


class RequestGate:
    """Pure ASGI middleware: early key check and load shedding, body timeout, disconnects."""

    def __init__(self, app: ASGIApp, service: PoseService) -> None:
        self.app = app
        self.service = service

    def keyed(self, path: str) -> bool:
        """Whether ``path`` needs the API key (when one is set)."""
        return path in KEYED_PATHS or (
            path == "/metrics" and not self.service.settings.metrics_public
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        try:
            if self.keyed(path):
                key = self.service.settings.api_key
                check_api_key(None if key is None else key.get_secret_value(), scope)
            if path in INFERENCE_PATHS and scope["method"] == "POST":
                wrong_type = multipart_error(_header(scope, b"content-type"))
                if wrong_type is not None:
                    raise wrong_type
                _, stages = self.service.check_ready()
                arrival = scope.get(ARRIVAL_KEY, time.monotonic())
                stages.batcher.check_room(
                    1, deadline=arrival + self.service.settings.request_timeout_s
                )
        except (NotServing, QueueFull) as e:
            err = http_error(e)
            await send_error(send, err.status, err.code, err.message, err.headers)
            return
        except ApiError as e:
            await send_error(send, e.status, e.code, e.message, e.headers)
            return
        await self._guarded(scope, receive, send)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app with the body timeout and disconnect cancellation."""
        body_by = scope.get(ARRIVAL_KEY, time.monotonic()) + self.service.settings.body_timeout_s
        watcher: asyncio.Task[Message] | None = None
        timed_out = disconnected = started = False
        app_task: asyncio.Task[None] | None = None

        async def watch() -> Message:
            nonlocal disconnected
            message = await receive()
            if message["type"] == "http.disconnect" and not started and app_task is not None:
                disconnected = True
                app_task.cancel()
            return message

        async def gated_receive() -> Message:
            nonlocal watcher, timed_out
            if watcher is not None:  # the body is in: only a disconnect can come
                return await asyncio.shield(watcher)
            try:
                message = await _within(receive(), max(0.0, body_by - time.monotonic()))
            except asyncio.TimeoutError:
                timed_out = True
                raise _BodyTimeout from None
            if message["type"] == "http.request" and not message.get("more_body", False):
                watcher = asyncio.ensure_future(watch())
            return message

        async def gated_send(message: Message) -> None:
            nonlocal started
            if timed_out:
                return  # our 408 wins over whatever the app made of the aborted read
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        app_task = asyncio.ensure_future(self.app(scope, gated_receive, gated_send))
        try:
            await app_task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            cancelling = getattr(current, "cancelling", None)  # Python >= 3.11
            if not disconnected or (cancelling is not None and cancelling()):
                raise  # the server cancelled us (shutdown), not the client's disconnect
            self.service.metrics.rejected.labels("client_disconnected").inc()
        except Exception:
            if not timed_out:
                raise
        finally:
            if watcher is not None and not watcher.done():
                watcher.cancel()
        if timed_out and not started:
            self.service.metrics.rejected.labels("body_timeout").inc()
            await send_error(
                send,
                408,
                "request_timeout",
                "the request body did not arrive within "
                f"{self.service.settings.body_timeout_s:g} s (HEATPOSE_BODY_TIMEOUT_S)",
            )
