"""A start-up failure is one line, not a traceback.

When the service cannot start (:class:`app.engine.startup.StartupError`: a detector file that cannot
be read, ``HEATPOSE_BACKEND=tensorrt`` without CUDA, a corrupt ``HEATPOSE_ONNX``, ...), the lifespan
records the error's one-line message in ``app.state.startup_error`` and re-raises. Starlette then
reports the failure to the server with the whole traceback as its message, which uvicorn logs
(66-86 lines). :class:`StartupFailureLine` (an ASGI layer) replaces that message by ``cannot
start: <the error>``; ``heatpose serve`` then exits with status 2 (:func:`exit_status`).
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class StartupFailureLine:
    """Pure ASGI middleware: a failed start-up's traceback becomes ``cannot start: <error>``.

    Args:
        app: the application.
        state: the app's ``state``, where the lifespan puts ``startup_error`` (a ``str``).
    """

    def __init__(self, app: ASGIApp, *, state: Any) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def one_line(message: Message) -> None:
            error = getattr(self.state, "startup_error", None)
            if message["type"] == "lifespan.startup.failed" and error:
                message = {**message, "message": f"cannot start: {error}"}
            await send(message)

        await self.app(scope, receive, one_line)


def exit_status(state: Any, default: int) -> int:
    """2 when the app recorded a start-up error (a setting to fix), else ``default``."""
    return 2 if getattr(state, "startup_error", None) else default
