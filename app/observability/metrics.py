"""Prometheus metrics, one :class:`CollectorRegistry` per app instance (tests build many apps).

Exposed at ``GET /metrics``; with several worker processes, merged across them
(:mod:`app.observability.multiprocess_metrics`). Names are prefixed ``heatpose_``. Requests are
counted and timed by :class:`MetricsMiddleware` under their route template (``/predict``, not the
raw path), so unknown paths do not blow up the label set.
"""

from __future__ import annotations

import time
from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability import multiprocess_metrics

ARRIVAL_KEY = "heatpose.arrival"
"""ASGI scope key: ``time.monotonic()`` when the request arrived (request deadlines start there)."""
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class StageMetrics(NamedTuple):
    """One batching stage's metrics (:class:`app.engine.batch_queue.BatchQueue`): the pose stage's
    are ``heatpose_batch_size`` etc., the person detector's ``heatpose_detector_batch_size`` etc."""

    batch_size: Histogram
    inference_seconds: Histogram
    queue_depth: Gauge
    queue_wait_seconds: Histogram
    items: Counter
    device_batch_size: Histogram  # labelled by device (app.devices.worker_labels)


class Metrics:
    """The service's metrics in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "heatpose_requests",
            "HTTP requests by route and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "heatpose_request_latency_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # Gauges: with several workers (app/observability/multiprocess_metrics.py) the sum over live
        # ones.
        self.in_progress = Gauge(
            "heatpose_requests_in_progress",
            "HTTP requests being handled",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.batch_size = Histogram(
            "heatpose_batch_size",
            "Person crops per forward pass",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "heatpose_queue_depth",
            "Person crops waiting for a forward pass",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.inference_seconds = Histogram(
            "heatpose_inference_seconds",
            "Time of one batch: forward pass and decode",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait_seconds = Histogram(
            "heatpose_queue_wait_seconds",
            "Time a crop waited before its forward pass",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rejected = Counter(
            "heatpose_rejected",
            "Requests refused by the service, by reason",
            ["reason"],
            registry=r,
        )
        self.batch_failures = Counter(
            "heatpose_batch_failures", "Forward passes that raised", registry=r
        )
        self.persons = Counter("heatpose_persons", "Person crops inferred", registry=r)
        self.pose = StageMetrics(
            self.batch_size,
            self.inference_seconds,
            self.queue_depth,
            self.queue_wait_seconds,
            self.persons,
            Histogram(
                "heatpose_device_batch_size",
                "Person crops per forward pass, by device (worker)",
                ["device"],
                buckets=_BATCH_BUCKETS,
                registry=r,
            ),
        )
        self.detector = StageMetrics(
            Histogram(
                "heatpose_detector_batch_size",
                "Images per person-detector forward pass",
                buckets=_BATCH_BUCKETS,
                registry=r,
            ),
            Histogram(
                "heatpose_detector_inference_seconds",
                "Time of one person-detector batch",
                buckets=_LATENCY_BUCKETS,
                registry=r,
            ),
            Gauge(
                "heatpose_detector_queue_depth",
                "Images waiting for the person detector",
                registry=r,
            ),
            Histogram(
                "heatpose_detector_queue_wait_seconds",
                "Time an image waited before its person-detector pass",
                buckets=_LATENCY_BUCKETS,
                registry=r,
            ),
            Counter("heatpose_detector_images", "Images run through the detector", registry=r),
            Histogram(
                "heatpose_detector_device_batch_size",
                "Images per person-detector pass, by device (worker)",
                ["device"],
                buckets=_BATCH_BUCKETS,
                registry=r,
            ),
        )
        # Admission (app.engine.batch_queue.BatchQueue.check_room): the pace each stage measured
        # recently
        self.item_seconds = Gauge(
            "heatpose_stage_item_seconds",
            "Recent time per item of a batch (running average), by stage (pose, detector)",
            ["stage"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.expected_wait_seconds = Gauge(
            "heatpose_stage_expected_wait_seconds",
            "Estimated seconds until the queued items of a stage are answered, by stage; "
            "requests that cannot finish before their deadline are refused (503)",
            ["stage"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.dropped_crops = Counter(
            "heatpose_dropped_crops",
            "Queued items (person crops, detector images) dropped before their model: deadline "
            "passed or request cancelled",
            ["reason"],
            registry=r,
        )
        self.model_info = Gauge(
            "heatpose_model_info",
            "What answers (always 1): the model, the backend running it, the sha256 of the ONNX "
            "file served (empty: none) and the person detector (empty: none)",
            ["model", "backend", "onnx_sha256", "detector"],
            registry=r,
            multiprocess_mode="max",
        )

    def render(self) -> bytes:
        """The text exposition format of every metric (of every worker, with several)."""
        return multiprocess_metrics.render(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware: counts requests by route template and status, times them."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()
        scope.setdefault(ARRIVAL_KEY, time.monotonic())

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_progress.dec()
            route = _route_template(scope)
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)


def _route_template(scope: Scope) -> str:
    """The template of the route that answered, or of the route the request was sent to when
    an early answer (401, 413, 415, 503 from the gate or the body limit) came before routing;
    ``unmatched`` for a path no route has (404).

    FastAPI's included routers match without naming their route's template; the request's path
    is then the label (no route of the service has path parameters, so the labels stay few).
    """
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not path:
        for candidate in getattr(getattr(scope.get("app"), "router", None), "routes", ()):
            if candidate.matches(scope)[0] != Match.NONE:  # FULL, or PARTIAL: another method
                path = getattr(candidate, "path", None) or scope.get("path")
                break
    return str(path) if path else "unmatched"
