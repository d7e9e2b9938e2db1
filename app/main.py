"""The FastAPI application: :func:`create_app` and the module-level ``app`` for uvicorn.

``uvicorn app.main:app`` reads the settings from ``HEATPOSE_*`` / ``.env`` when ``app`` is first
looked up (invalid settings: a message naming the variable, exit status 2). Tests and
:mod:`heatpose_cli.serve` call :func:`create_app` with their own :class:`~app.settings.Settings`.

Lifespan: load and warm up the model, start the batcher (``/ready`` turns true); on SIGTERM
``/ready`` turns false at once while requests are still served for ``HEATPOSE_DRAIN_DELAY_S``;
then uvicorn stops accepting connections and waits for in-flight requests
(``--timeout-graceful-shutdown``); requests it cancels when that runs out get the JSON 503
``shutting_down`` (:class:`app.http.connections.ShutdownGuard`); then the batcher drains and the
device is released.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.engine.admission import PixelBudget
from app.engine.service import PoseService
from app.engine.startup import StartupError
from app.http.connections import ShutdownGuard
from app.http.errors import install_error_handlers
from app.http.gate import RequestGate
from app.http.limits import BodySizeLimitMiddleware
from app.http.routes import ops, predict, stream, visualize
from app.http.routes.docs import install_docs
from app.http.routes.page import install_page
from app.http.startup_failure import StartupFailureLine
from app.observability.logs import configure_logging
from app.observability.metrics import Metrics, MetricsMiddleware
from app.observability.multiprocess_metrics import mark_worker_dead
from app.observability.redaction import install_redaction
from app.settings import Settings, SettingsError, load_settings, unknown_variables
from app.streams.registry import StreamRegistry
from models.inference.pipeline import Detector

log = logging.getLogger("heatpose.app")

DESCRIPTION = """Human pose estimation (SimpleBaselines heatmaps) with dynamic batching.

Errors are always `{"error": {"code": "...", "message": "..."}}`.
With an API key configured, `/predict`, `/visualize` and `/v1/model` need
`Authorization: Bearer <key>` or `X-API-Key: <key>`."""


def _chain_sigterm(
    service: PoseService,
    streams: StreamRegistry,
    loop: asyncio.AbstractEventLoop,
    delay_s: float,
) -> Callable[[], None]:
    """On SIGTERM: ``/ready`` turns 503 at once (the service drains), requests and streams are
    still served for ``delay_s`` (``HEATPOSE_DRAIN_DELAY_S``); then the WebSocket streams answer
    their current frame (or abandon it after ``app.streams.registry.STREAM_FINISH_S``) and close
    (1001), and the previous handler (uvicorn's) runs: the
    listener closes and in-flight work gets the grace period. A second SIGTERM skips the rest
    of the delay.

    Only possible on the main thread (a real server); returns a function restoring the old one.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)
    pending: list[asyncio.TimerHandle] = []

    def chain(signum: int, frame: Any) -> None:
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    def close(signum: int, frame: Any) -> None:
        streams.drain_then(service.settings.shutdown_grace_s, lambda: chain(signum, frame))

    def on_sigterm(signum: int, frame: Any) -> None:
        first = not service.draining
        service.begin_drain()
        if first and delay_s > 0:
            log.info("SIGTERM: still serving for HEATPOSE_DRAIN_DELAY_S=%g s", delay_s)

            def arm() -> None:
                pending.append(loop.call_later(delay_s, close, signum, frame))

            loop.call_soon_threadsafe(arm)  # wakes the loop (we are inside a signal handler)
            return
        for handle in pending:
            handle.cancel()
        close(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)

    def restore() -> None:
        for handle in pending:
            handle.cancel()
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, previous)

    return restore


def create_app(settings: Settings, *, detector: Detector | None = None) -> FastAPI:
    """A new app with its own service, batchers and metrics registry (nothing global).

    ``detector``: a person detector used instead of the one ``HEATPOSE_DETECTOR`` names.
    """
    install_redaction()  # no credential from a URL in uvicorn's or our log lines
    metrics = Metrics()
    service = PoseService(settings, metrics, detector=detector)
    streams = StreamRegistry(settings.max_streams, metrics.registry)

    @asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        restore = _chain_sigterm(service, streams, loop, settings.drain_delay_s)
        try:
            try:
                await service.start()
            except (
                StartupError
            ) as e:  # one line, logged by the server (app/http/startup_failure.py)
                application.state.startup_error = " ".join(str(e).split())
                raise
            yield
        finally:
            await service.stop()
            restore()
            mark_worker_dead()  # with --workers N: this worker's gauges leave /metrics

    app = FastAPI(
        title="heatpose",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # install_docs: offline Swagger UI and ReDoc
        redoc_url=None,
        # /predict/ is a JSON 404 naming /predict, not an empty 307: a client re-sending its
        # upload to the redirect's Location would pay for the body twice, and the paths are fixed.
        redirect_slashes=False,
    )
    app.state.service = service
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.streams = streams
    app.state.pixel_budget = PixelBudget(
        per_request=settings.request_pixels, total=settings.inflight_pixels
    )
    install_error_handlers(app)
    app.include_router(predict.router)
    app.include_router(visualize.router)
    app.include_router(ops.router)
    install_page(app)
    install_docs(app)
    app.include_router(stream.router)
    app.add_middleware(RequestGate, service=service)  # key and shedding before the body
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        )
    app.add_middleware(
        BodySizeLimitMiddleware,
        limit=settings.max_upload_bytes,
        on_reject=lambda: metrics.rejected.labels("body_too_large").inc(),
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # sees every answer
    app.add_middleware(ShutdownGuard)  # outermost: uvicorn's cancellations become JSON 503s
    app.add_middleware(StartupFailureLine, state=app.state)  # lifespan only
    return app


def app_from_env() -> FastAPI:
    """``create_app`` with settings from the environment; exits 2 naming a bad variable."""
    for line in unknown_variables(os.environ):
        print(f"heatpose: warning: {line}", file=sys.stderr)
    try:
        settings = load_settings()
    except SettingsError as e:
        print(f"heatpose: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level, settings.json_logs)
    return create_app(settings)


_app: FastAPI | None = None


def __getattr__(name: str) -> Any:
    """``app.main.app`` is built on first access, so importing this module needs no settings."""
    global _app
    if name == "app":
        if _app is None:
            _app = app_from_env()
        return _app
    raise AttributeError(name)
