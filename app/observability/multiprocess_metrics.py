"""Prometheus metrics across uvicorn worker processes (``heatpose serve --workers N``).

With several workers each process keeps its own counters; prometheus-client's multiprocess
mode makes ``/metrics`` (answered by any one worker) report them all:

1. :func:`multiprocess_dir` (the CLI, before uvicorn spawns the workers): a fresh temporary
   directory in ``PROMETHEUS_MULTIPROC_DIR``, inherited by the workers, removed at exit. It must
   be set before ``prometheus_client`` creates a metric in a worker: the value class is chosen
   from it at import.
2. Each worker's metrics write their values into memory-mapped files there (one per process and
   metric type); :func:`render` merges every process's files (``MultiProcessCollector``):
   counters and histograms are summed, gauges by their ``multiprocess_mode`` (``livesum``: the
   sum over the workers alive).
3. :func:`mark_worker_dead` (the app's shutdown) removes the exiting worker's live-gauge files,
   so a stopped worker's queue depth no longer counts.

Without ``PROMETHEUS_MULTIPROC_DIR`` (one process, and the tests' in-process apps) nothing here
changes anything: each app renders its own registry.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest, multiprocess

ENV = "PROMETHEUS_MULTIPROC_DIR"


def enabled() -> bool:
    """True in a worker of a multi-process server (``PROMETHEUS_MULTIPROC_DIR`` is set)."""
    return bool(os.environ.get(ENV))


@contextlib.contextmanager
def multiprocess_dir() -> Iterator[str]:
    """Set ``PROMETHEUS_MULTIPROC_DIR`` to a fresh directory for the workers; removed on exit."""
    previous = os.environ.get(ENV)
    with tempfile.TemporaryDirectory(prefix="heatpose-metrics-") as path:
        os.environ[ENV] = path
        try:
            yield path
        finally:
            if previous is None:
                os.environ.pop(ENV, None)
            else:
                os.environ[ENV] = previous


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition of ``registry``, or of every worker's values in multi-process mode."""
    if not enabled():
        return generate_latest(registry)
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged)
    return generate_latest(merged)


def mark_worker_dead() -> None:
    """At a worker's exit: drop its live gauges (``livesum``) from the merged view."""
    if enabled():
        multiprocess.mark_process_dead(os.getpid())
