"""The service's warm-up: every forward batch size it can meet, run before ``/ready``.

:func:`warm_replicas` runs :func:`models.inference.warmup.warm_up` on each replica (one per
``HEATPOSE_DEVICE`` entry) for forward batches up to ``2 x HEATPOSE_MAX_BATCH_SIZE`` (the flip
test doubles a batch), logs each size's time and sets the gauge
``heatpose_warmup_seconds{device, batch}``. With ``HEATPOSE_WARMUP=false`` one batch of one crop
still runs (a NaN checkpoint must not start serving) and nothing is recorded.
:func:`warm_detector` does the same for the person detector.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Gauge

from app.devices import worker_labels
from app.observability.metrics import Metrics
from app.settings import Settings
from models.detection.detector_backends import ServedDetector
from models.inference.pipeline import Detector
from models.inference.predictor import Predictor
from models.inference.warmup import warm_up

log = logging.getLogger("heatpose.app")

_GAUGES: weakref.WeakKeyDictionary[CollectorRegistry, Gauge] = weakref.WeakKeyDictionary()


def warmup_gauge(registry: CollectorRegistry) -> Gauge:
    """``heatpose_warmup_seconds`` in ``registry``, registered on first use (a service may start
    again after a stop, with the same registry)."""
    if registry not in _GAUGES:
        _GAUGES[registry] = Gauge(
            "heatpose_warmup_seconds",
            "Start-up warm-up time of one forward batch size, by worker device",
            ["device", "batch"],
            registry=registry,
            multiprocess_mode="max",
        )
    return _GAUGES[registry]


def warm_replicas(predictors: Sequence[Predictor], settings: Settings, metrics: Metrics) -> None:
    """Warm every replica (see the module docstring); blocking, run it in a worker thread.

    Raises:
        CheckpointError: non-finite heatmaps (NaN/Inf weights).
    """
    max_forward = 2 * settings.max_batch_size
    labels = worker_labels([str(p.device) for p in predictors])
    for predictor, label in zip(predictors, labels, strict=True):
        if not settings.warmup:
            warm_up(predictor, max_forward=max_forward, sizes=(1,))
            continue
        times = warm_up(predictor, max_forward=max_forward)
        gauge = warmup_gauge(metrics.registry)
        for size, seconds in times:
            gauge.labels(device=label, batch=str(size)).set(seconds)
        log.info(
            "warm-up on %s (%s backend): %s; %.2f s in all",
            label,
            predictor.forward.name,
            ", ".join(f"batch {size} {seconds:.2f} s" for size, seconds in times),
            sum(seconds for _, seconds in times),
        )


def warm_detector(detector: Detector, max_batch: int) -> None:
    """Warm a person detector before ``/ready``; blocking, run it in a worker thread.

    An RTMDet detector (:class:`models.detection.detector_backends.ServedDetector`, fixed input
    size) runs a blank batch at every batch size a detector pass of ``1 .. max_batch`` images runs
    at, as the pose model's warm-up does; any other detector (torchvision's, whose shapes follow
    each image, or a stand-in) detects one small blank image.
    """
    if isinstance(detector, ServedDetector):
        times = detector.warm_up(max_batch)
        log.info(
            "detector warm-up on %s (%s, %s backend, input %d): %s",
            detector.device,
            detector.arch,
            detector.backend,
            detector.input_size,
            ", ".join(f"batch {size} {seconds:.2f} s" for size, seconds in times),
        )
        return
    detector.detect([np.zeros((64, 64, 3), np.uint8)])
