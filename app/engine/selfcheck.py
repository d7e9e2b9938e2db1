"""The start-up self-check: before ``/ready``, the built-in request through the configured path
and through the plain one, which must agree; what does not is turned off (or stops start-up).

Each optional acceleration the configuration uses is checked on its own against the plain
path (Pillow decoding, cv2 crops, the torch module in float32 on the same device; the same
person boxes), then all of them together (the configured path end to end, the detector
included), with the tolerances of :mod:`models.inference.agreement`:

- ``decode`` (``HEATPOSE_DECODE``): torchvision decoding on the device (nvJPEG on CUDA);
  tolerance NVJPEG on CUDA, else REQUEST_PATH.
- ``crop`` (``HEATPOSE_CROP``): one batched warp on the device; REQUEST_PATH.
- ``backend`` (``HEATPOSE_BACKEND``, with ``HEATPOSE_BATCH_BUCKETS``): the forward call at
  the smallest bucket; FLOAT32_FORWARD, HALF_FORWARD (TensorRT, TF32 on CUDA) or QUANTIZED
  (a given ONNX file).
- ``amp`` (on by default on CUDA): the torch forward under autocast; HALF_FORWARD.

A feature that fails (raises) or disagrees is turned off when the service chose it (``auto``;
for the backend: ``HEATPOSE_BACKEND`` not set; AMP always): one warning line naming the
setting and what it saw, the gauge ``heatpose_fallback{feature}`` = 1, and its state in
``/v1/model``; the service then serves on the plain path for it. When the setting was named
(``HEATPOSE_DECODE=torch``, ``HEATPOSE_CROP=device``, ``HEATPOSE_BACKEND=...``), start-up stops
with one line (:class:`~app.engine.startup.StartupError`; ``heatpose serve`` exits 2). The detector
is no acceleration: when it raises, start-up stops. ``heatpose doctor``
(:mod:`heatpose_cli.doctor`) runs the same check and prints :class:`Check` rows.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from prometheus_client import CollectorRegistry, Gauge

from app.engine.selfcheck_features import check_features
from app.engine.selfcheck_rows import Check, Feature
from app.engine.startup import StartupError

if TYPE_CHECKING:
    from app.engine.service import PoseService

log = logging.getLogger("heatpose.app")

FEATURES = ("decode", "crop", "backend", "amp")
"""The optional accelerations, as the ``feature`` label of ``heatpose_fallback``."""
_GAUGES: weakref.WeakKeyDictionary[CollectorRegistry, tuple[Gauge, Gauge]] = (
    weakref.WeakKeyDictionary()
)


@dataclass
class Report:
    """What the self-check did: one :class:`Check` per row, and the time it took (s)."""

    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0

    def check(self, feature: str) -> Check | None:
        return next((c for c in self.checks if c.feature == feature), None)

    @property
    def stop(self) -> Check | None:
        """The first failed check that stops start-up (a named setting, or the detector)."""
        return next((c for c in self.checks if c.state == "failed"), None)

    @property
    def fallbacks(self) -> list[Check]:
        return [c for c in self.checks if c.state == "off"]

    def features(self) -> dict[str, dict[str, Any]]:
        """Per acceleration its setting, state (``on``, ``off`` = fallen back, ``unused``) and
        what the check saw: ``/v1/model``'s ``features``."""
        out = {}
        for name in FEATURES:
            c = self.check(name)
            if c is not None:
                out[name] = {"setting": c.setting, "state": c.state, "detail": c.detail}
        return out


def gauges(registry: CollectorRegistry) -> tuple[Gauge, Gauge]:
    """``heatpose_fallback{feature}`` and ``heatpose_selfcheck_seconds`` in ``registry``."""
    if registry not in _GAUGES:
        _GAUGES[registry] = (
            Gauge(
                "heatpose_fallback",
                "1 where the start-up self-check turned an optional acceleration off "
                "(it failed or disagreed with the plain path), else 0",
                ["feature"],
                registry=registry,
                multiprocess_mode="max",
            ),
            Gauge(
                "heatpose_selfcheck_seconds",
                "Time of the start-up self-check",
                registry=registry,
                multiprocess_mode="max",
            ),
        )
    return _GAUGES[registry]


def self_check(service: PoseService, *, clock: Callable[[], float] = time.perf_counter) -> Report:
    """Run the check on the service's first predictor and apply its verdicts to the service
    (effective settings, every replica's forward and AMP). Blocking: run it in a thread.

    Returns:
        The report; :attr:`Report.stop` is set when start-up must stop (nothing is applied
        then).
    """
    assert service.predictor is not None
    start = clock()
    features = check_features(service.predictor, service.detector, service.settings, clock=clock)
    report = Report(checks=features.checks, seconds=clock() - start)
    if report.stop is None:
        service.settings = features.settings
        for p in service.predictors:
            features.apply(p)
    return report


async def check_service(service: PoseService) -> None:
    """:func:`self_check` in a worker thread, then its log lines, gauges and verdict.

    Raises:
        StartupError: one line naming the setting whose named acceleration failed.
    """
    report = await anyio.to_thread.run_sync(self_check, service)
    service.selfcheck = report
    fallback, seconds = gauges(service.metrics.registry)
    for name in FEATURES:
        c = report.check(name)
        fallback.labels(feature=name).set(1 if c is not None and c.state == "off" else 0)
    seconds.set(report.seconds)
    stop = report.stop
    if stop is not None:
        raise StartupError(stop.line())
    for c in report.fallbacks:
        log.warning("%s", c.line())
    used = [c.feature for c in report.checks if c.feature in FEATURES and c.state == "on"]
    log.info(
        "self-check passed in %.2f s (%s)",
        report.seconds,
        "accelerations on: " + ", ".join(used) if used else "plain path",
    )


__all__ = ["FEATURES", "Feature", "Report", "check_service", "gauges", "self_check"]
