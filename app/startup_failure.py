"""A start-up that stops on a setting says so in one line, without a traceback.

Starlette answers an exception in the lifespan with ``lifespan.startup.failed`` carrying the
formatted traceback, which uvicorn logs. Where the exception is a
:class:`~app.startup.StartupError` (a setting that cannot serve: the lifespan in
:mod:`app.main` has logged its one line and recorded it in ``app.state.startup_error``),
:class:`QuietStartupFailure` empties that message: uvicorn then logs only its own
"Application startup failed" and exits. Any other exception keeps its traceback.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class QuietStartupFailure:
    """Pure ASGI middleware for the ``lifespan`` scope (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def quiet_send(message: Message) -> None:
            state = getattr(scope.get("app"), "state", None)
            if (
                message["type"] == "lifespan.startup.failed"
                and getattr(state, "startup_error", None) is not None
            ):
                message = {**message, "message": ""}  # the one line is logged already
            await send(message)

        await self.app(scope, receive, quiet_send)
