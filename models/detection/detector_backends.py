"""RTMDet's network on the pose model's backends, at fixed batch sizes, warmed up.

:func:`detector_forward` runs :attr:`models.detection.rtmdet.RTMDetector.network` (``(B, 3, S, S)``
normalised float32, input px -> ``scores (B, N)``, ``boxes (B, N, 4)`` input px) with the
backend ``HEATPOSE_BACKEND`` names for the pose model (:mod:`models.runtime.backends`):

- ``torch``: the module; ``compile``: ``torch.compile`` of it (batch axis dynamic);
- ``onnxruntime``: the graph :mod:`models.detection.detector_export` writes, cached under
  ``$HEATPOSE_HOME/backends`` by a hash of the weights, arch and input size; CPU or CUDA;
- ``tensorrt``: the same graph on ONNX Runtime's TensorRT provider (fp16 engines, CUDA only).

:class:`ServedDetector` puts pre-processing, that forward and post-processing (thresholds, NMS,
boxes back to image pixels: never in the graph) together behind the ``detect`` every detector
has, pads each batch to a bucket (:func:`detector_buckets`) and warms every bucket before
serving. The input is square and fixed (320 for nano, 640 for m), so a bucket is one shape.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from models.detection.detector import Detections
from models.detection.detector_export import BOXES, SCORES, export_detector_onnx
from models.pose.crops import Pixels
from models.runtime.backends import (
    BACKENDS,
    BackendError,
    onnxruntime_backend,
    tensorrt_backend,
)
from models.runtime.export import ExportError
from models.weights.weights_digest import state_sha256
from models.weights.zoo import heatpose_home

__all__ = ["ServedDetector", "detector_buckets", "detector_forward"]

Pair = tuple[torch.Tensor, torch.Tensor]


class DetectorForward(Protocol):
    """``(B, 3, S, S)`` normalised float32 -> ``(scores (B, N), boxes (B, N, 4))``."""

    name: str

    def __call__(self, x: torch.Tensor) -> Pair: ...


class _Module:
    """The network itself (``torch``), or ``torch.compile`` of it (``compile``)."""

    def __init__(self, network: torch.nn.Module, name: str) -> None:
        self.name = name
        self.fn: Any = torch.compile(network) if name == "compile" else network

    def __call__(self, x: torch.Tensor) -> Pair:
        if self.name == "compile" and x.shape[0] > 1:
            torch._dynamo.maybe_mark_dynamic(x, 0)
        scores, boxes = self.fn(x)
        return scores, boxes


class _Onnx:
    """An :class:`models.runtime.backends.OrtBackend` session, both outputs."""

    def __init__(self, session: Any) -> None:
        self.session, self.name = session, session.name

    def __call__(self, x: torch.Tensor) -> Pair:
        scores, boxes = self.session.run_all(x)
        return scores, boxes


def detector_forward(
    name: str,
    network: torch.nn.Module,
    *,
    arch: str,
    input_size: int,
    device: torch.device,
    cache_dir: str | Path | None = None,
) -> DetectorForward:
    """The backend ``name`` (one of :data:`models.runtime.backends.BACKENDS`) for ``network``, which
    is on ``device`` in eval mode.

    Raises:
        BackendError: an unknown name, a missing package, or a backend this host cannot run.
    """
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r} (HEATPOSE_BACKEND): one of {BACKENDS}")
    if name in ("torch", "compile"):
        return _Module(network, name)
    root = Path(cache_dir) if cache_dir is not None else heatpose_home() / "backends"
    with torch.no_grad():
        n = network(torch.zeros(1, 3, input_size, input_size, device=device))[0].shape[1]
    outputs = [(SCORES, (n,)), (BOXES, (n, 4))]
    try:
        if name == "tensorrt" and device.type != "cuda":
            return _Onnx(tensorrt_backend(Path(), device, outputs, root))  # the CUDA-only error
        header = json.dumps({"arch": arch, "input_size": input_size, "graph": "detector"})
        path = root / f"{state_sha256(network, header)}.onnx"
        if not path.is_file():
            export_detector_onnx(network, path, arch=arch, input_size=input_size)
        if name == "onnxruntime":
            return _Onnx(onnxruntime_backend(path, device, outputs))
        return _Onnx(tensorrt_backend(path, device, outputs, root / f"{path.stem}.trt"))
    except ExportError as e:
        raise BackendError(f"backend {name!r} (HEATPOSE_BACKEND={name}): {e}") from e


def detector_buckets(setting: str, device: torch.device, *, max_batch_size: int) -> tuple[int, ...]:
    """The batch sizes a detector pass is padded to (``()`` = none), from
    ``HEATPOSE_BATCH_BUCKETS``: ``auto`` = 1, 2, 4, ... up to the first holding
    ``max_batch_size`` images on CUDA, none elsewhere (padding only costs CPU time); a list =
    its sizes up to the first holding ``max_batch_size``; ``none`` = none."""
    if setting == "none" or (setting == "auto" and device.type != "cuda"):
        return ()
    if setting == "auto":
        sizes = [1]
        while sizes[-1] < max_batch_size:
            sizes.append(sizes[-1] * 2)
        return tuple(sizes)
    given = sorted(int(s) for s in setting.split(","))
    holding = [s for s in given if s >= max_batch_size]
    return tuple(s for s in given if s < max_batch_size) + tuple(holding[:1])


class ServedDetector:
    """An RTMDet detector whose network runs on ``forward`` at the batch sizes ``buckets``.

    Args:
        detector: a :class:`models.detection.rtmdet.RTMDetector` (its pre- and post-processing).
        forward: :func:`detector_forward` of its network; ``buckets``: increasing batch sizes
            a pass is padded to with blank rows (dropped after); ``()`` = as it comes.
    """

    def __init__(self, detector: Any, forward: DetectorForward, buckets: Sequence[int] = ()):
        self.detector, self.forward, self.buckets = detector, forward, tuple(sorted(buckets))
        self.device, self.arch = detector.device, detector.arch
        self.input_size = int(detector.input_size)

    @property
    def backend(self) -> str:
        return self.forward.name

    def size_for(self, n: int) -> int:
        """The batch size ``n`` images run at (``n`` itself above every bucket)."""
        return next((b for b in self.buckets if b >= n), n)

    def _run(self, batch: torch.Tensor) -> Pair:
        n = batch.shape[0]
        size = self.size_for(n)
        if size > n:
            batch = torch.cat([batch, batch.new_zeros((size - n, *batch.shape[1:]))])
        scores, boxes = self.forward(batch)
        return scores[:n].float(), boxes[:n].float()

    def detect(
        self,
        images: Sequence[Pixels],
        score_thr: float = 0.3,
        nms_thr: float = 0.3,
        max_persons: int = 100,
    ) -> list[Detections]:
        """As :meth:`models.detection.rtmdet.RTMDetector.detect` (per image its persons, image px),
        the network run on this backend at the bucket sizes."""
        return list(
            self.detector.detect(images, score_thr, nms_thr, max_persons, forward=self._run)
        )

    def warmup_sizes(self, max_batch: int) -> tuple[int, ...]:
        """Batch sizes that reach every shape a batch of ``1 .. max_batch`` images runs at."""
        if self.buckets:
            return tuple(sorted({self.size_for(n) for n in range(1, max_batch + 1)}))
        sizes, s = {1, max_batch}, 2
        while self.backend == "compile" and s < max_batch:  # a graph per range of sizes
            sizes.add(s)
            s *= 2
        return tuple(sorted(sizes))

    def warm_up(self, max_batch: int) -> list[tuple[int, float]]:
        """Run a blank batch of each :meth:`warmup_sizes`; ``[(size, seconds)]``."""
        times = []
        size = self.input_size
        for n in self.warmup_sizes(max_batch):
            t0 = time.perf_counter()
            with torch.inference_mode():
                self._run(torch.zeros(n, 3, size, size, device=self.device))
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            times.append((n, time.perf_counter() - t0))
        return times


def served_detector(
    detector: Any,
    *,
    backend: str,
    bucket_setting: str,
    max_batch_size: int,
    cache_dir: str | Path | None = None,
) -> Any:
    """``detector`` ready to serve: an RTMDet one (it has a static-shape ``network``) as a
    :class:`ServedDetector` on ``backend`` with :func:`detector_buckets`; a torchvision one (its
    shapes follow the proposals) as it is, in eager PyTorch whatever the backend.

    Raises:
        BackendError: the backend cannot run here (see :func:`detector_forward`).
    """
    network = getattr(detector, "network", None)
    if network is None:
        return detector
    device = torch.device(detector.device)
    forward = detector_forward(
        backend,
        network,
        arch=detector.arch,
        input_size=int(detector.input_size),
        device=device,
        cache_dir=cache_dir,
    )
    buckets = detector_buckets(bucket_setting, device, max_batch_size=max_batch_size)
    return ServedDetector(detector, forward, buckets)
