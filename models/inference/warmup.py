"""Warm-up: run the forward call once at every batch size a server can meet, before serving.

A server forwards batches of ``1 .. max_forward`` rows (``max_forward`` = 2 x the most crops
in one batch: the flip test forwards crops and flipped crops together). What a first call of a
new batch size costs depends on the backend (:mod:`models.runtime.backends`):

- :class:`~models.runtime.backends.Bucketed`: every call runs at a bucket, or as it is above every
  bucket; the warm-up runs each bucket that a size ``<= max_forward`` reaches (CUDA kernels and
  allocations, TensorRT profiles, compiled graphs are then ready).
- ``compile``: batch 1 has its own graph and the batch axis of larger inputs is dynamic, but a
  dynamic graph is only valid for a range of sizes: where an operator's choice depends on the
  batch size, torch guards on it (on the CPU, 1x1 convolutions take oneDNN from batch 16 on, so
  a ResNet gets graphs for 1, 2..15 and 16+). The warm-up runs the ladder 1, 2, 4, 8, ... and
  ``max_forward``, which compiles every range that begins at a power of two.
- ``torch``, ``onnxruntime``, ``tensorrt`` (profiles built when created): batches 1 and 2 (the
  plain and the flip-test path).

Each warm-up call forwards exactly its size ``s``: ``ceil(s / 2)`` black crops, the first
``s - ceil(s / 2)`` of them flip-tested, so the flip-test merge and the decoding run too; every
output must be finite (:func:`models.weights.output_check.check_finite_heatmaps`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from models.inference.predictor import Predictor
from models.runtime.backends import Backend, Bucketed
from models.weights.output_check import check_finite_heatmaps

__all__ = ["warm_up", "warmup_sizes"]


def _ladder(max_forward: int) -> set[int]:
    sizes, s = {1, max_forward}, 2
    while s < max_forward:
        sizes.add(s)
        s *= 2
    return sizes


def warmup_sizes(forward: Backend, max_forward: int) -> tuple[int, ...]:
    """The forward batch sizes the warm-up runs, increasing (see the module docstring).

    Args:
        forward: a predictor's forward call (:attr:`models.inference.predictor.Predictor.forward`).
        max_forward: the largest forward batch a server makes (2 x its largest crop batch).
    """
    if max_forward < 1:
        raise ValueError(f"max_forward must be >= 1, got {max_forward}")
    wanted = _ladder(max_forward) if forward.name == "compile" else {1, min(2, max_forward)}
    if not isinstance(forward, Bucketed):
        return tuple(sorted(wanted))
    reached = {forward.size_for(n) for n in wanted}
    # every bucket some size <= max_forward pads to: those below it and the first holding it
    reached.update(b for b in forward.buckets if b <= forward.size_for(max_forward))
    return tuple(sorted(reached))


def warm_up(
    predictor: Predictor,
    *,
    max_forward: int,
    sizes: tuple[int, ...] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> list[tuple[int, float]]:
    """Run ``predictor``'s whole heatmap path once per warm-up size.

    Args:
        max_forward: the largest forward batch (2 x the largest crop batch).
        sizes: forward batch sizes to run; ``None`` = :func:`warmup_sizes`.

    Returns:
        ``(forward batch size, seconds)`` per size, in the order run (heatmaps, their check,
        and decoding: the decode copies the keypoints to the host, so device work is done).

    Raises:
        CheckpointError: non-finite heatmaps (NaN/Inf weights).
    """
    w, h = predictor.input_size
    out = []
    for s in sizes if sizes is not None else warmup_sizes(predictor.forward, max_forward):
        n = math.ceil(s / 2)
        flip = np.arange(n) < s - n
        start = clock()
        hm = predictor.heatmaps(np.zeros((n, h, w, 3), np.uint8), flip)
        check_finite_heatmaps(hm, predictor.model)
        centers = np.full((n, 2), (w / 2, h / 2))
        predictor.decode(hm, centers, np.full((n, 2), (w, h), dtype=np.float64))
        out.append((s, clock() - start))
    return out
