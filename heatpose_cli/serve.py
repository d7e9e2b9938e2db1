"""``heatpose serve`` / ``python -m app``: start uvicorn with the service settings.

Flags override the ``HEATPOSE_*`` environment and ``.env``. Before uvicorn starts, the settings,
the device and the checkpoint (its header against its tensors' shapes) are checked so that a
mistake ends in one clear line and exit status 2, not a traceback; an unknown ``HEATPOSE_*``
variable is named in a warning with the closest known name. Never imports ``training``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported after parsing: pydantic and the settings cost --help 0.3-0.5 s
    from app.settings import Settings

from heatpose_cli.args import ArgumentParser


def parse_args(argv: list[str]) -> dict[str, Any]:
    """Flags -> settings overrides (only the flags given)."""
    p = ArgumentParser(
        prog="heatpose serve",
        formatter_class=argparse.HelpFormatter,  # the defaults are the settings' (HEATPOSE_*)
        description="Serve a pose checkpoint over HTTP. Every HEATPOSE_* variable applies; "
        "flags win over them.",
    )
    p.add_argument(
        "checkpoint", nargs="?", help="a .safetensors file or a zoo name (HEATPOSE_CHECKPOINT)"
    )
    p.add_argument("--host", help="bind address (HEATPOSE_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (HEATPOSE_PORT, default 8000)")
    p.add_argument(
        "--device", help="auto, cpu, cuda, cuda:N, a list cuda:0,cuda:1 or all (HEATPOSE_DEVICE)"
    )
    p.add_argument(
        "--workers", type=int, help="server processes, each with its own batcher (HEATPOSE_WORKERS)"
    )
    p.add_argument("--max-batch-size", type=int, help="HEATPOSE_MAX_BATCH_SIZE")
    p.add_argument("--max-queue-delay-ms", type=float, help="HEATPOSE_MAX_QUEUE_DELAY_MS")
    p.add_argument("--api-key", help="HEATPOSE_API_KEY")
    p.add_argument("--log-level", help="HEATPOSE_LOG_LEVEL")
    p.add_argument("--json-logs", action="store_true", default=None, help="HEATPOSE_JSON_LOGS")
    args = vars(p.parse_args(argv))
    return {k: v for k, v in args.items() if v is not None}


def connection_options(settings: Settings) -> dict[str, Any]:
    """The connection budgets as ``uvicorn.Config`` options (see docs/architecture.md for the
    flags ``uvicorn app.main:app`` users pass themselves)."""
    from app.http.connections import budgeted_protocol

    return {
        "http": budgeted_protocol(settings.header_timeout_s, settings.max_header_bytes),
        "timeout_keep_alive": settings.keep_alive_timeout_s,
        "limit_concurrency": settings.max_connections,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the server until it is stopped; returns the exit status."""
    overrides = parse_args(sys.argv[1:] if argv is None else argv)
    from app.settings import SettingsError, load_settings, unknown_variables

    for line in unknown_variables(os.environ):
        print(f"heatpose serve: warning: {line}", file=sys.stderr)
    try:
        settings = load_settings(**overrides)
    except SettingsError as e:
        print(f"heatpose serve: {e}", file=sys.stderr)
        return 2

    import uvicorn  # after argument parsing: --help stays fast

    from app.engine.startup import (
        StartupError,
        detector_name,
        pick_device,
        resolve_checkpoint,
        resolve_detector,
    )
    from app.http.startup_failure import exit_status
    from app.main import create_app
    from app.observability.logs import configure_logging
    from models.weights.checkpoint import CheckpointError, verify

    try:
        device = pick_device(settings.device)
        verify(resolve_checkpoint(settings.checkpoint))  # no tensor data read: fast and clear
        detector = detector_name(settings.detector, device)
        # A named detector is required (fetched once, or one line saying how to provide it);
        # auto's is tried by the service, which starts without it if it cannot be had.
        if detector is not None and settings.detector != "auto":
            resolve_detector(detector)
    except (StartupError, CheckpointError) as e:
        print(f"heatpose serve: cannot start: {e}", file=sys.stderr)
        return 2
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": configure_logging(settings.log_level, settings.json_logs),
        "log_level": settings.log_level,
        "lifespan": "on",
        "timeout_graceful_shutdown": math.ceil(settings.shutdown_grace_s),
        **connection_options(settings),
    }
    if settings.workers > 1:
        return _run_workers(
            settings.workers,
            overrides,
            options,
            header_timeout_s=settings.header_timeout_s,
            max_header_bytes=settings.max_header_bytes,
        )
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, **options))
    try:
        server.run()
    except SystemExit as e:  # uvicorn's exit on a failed start-up
        return exit_status(app.state, e.code if isinstance(e.code, int) else 3)
    return 0 if server.started else exit_status(app.state, 3)


def _run_workers(
    workers: int,
    overrides: dict[str, Any],
    options: dict[str, Any],
    *,
    header_timeout_s: float,
    max_header_bytes: int,
) -> int:
    """``--workers N``: uvicorn's process supervisor, each worker building the app from the
    environment (the flags are passed on as ``HEATPOSE_*``), metrics shared through
    ``PROMETHEUS_MULTIPROC_DIR`` (:mod:`app.observability.multiprocess_metrics`)."""
    import uvicorn

    from app.observability.multiprocess_metrics import multiprocess_dir
    from app.settings import ENV_PREFIX

    for key, value in overrides.items():
        os.environ[ENV_PREFIX + key.upper()] = str(value)
    # The workers are spawned: the protocol class goes by name and reads its budgets from here.
    os.environ[ENV_PREFIX + "HEADER_TIMEOUT_S"] = str(header_timeout_s)
    os.environ[ENV_PREFIX + "MAX_HEADER_BYTES"] = str(max_header_bytes)
    options = {**options, "http": "app.http.connections:WorkerHttpProtocol"}
    with multiprocess_dir():
        # A worker loading torch and its model on a busy host can miss uvicorn's 5 s ping and be
        # killed and restarted over and over; a minute is enough for a start-up.
        uvicorn.run(
            "app.main:app_from_env",
            factory=True,
            workers=workers,
            timeout_worker_healthcheck=60,
            **options,
        )
    return 0
