"""Agreement of two runs of one request: how far apart their outputs are, and whether that is
within a stated tolerance.

The start-up self-check (:mod:`app.engine.selfcheck`, ``heatpose doctor``) runs a built-in request
through an accelerated path (nvJPEG decoding, device crops, another backend, AMP) and through
the plain one (Pillow, cv2, torch float32) and compares them here. Three measures:

- **keypoints**: the largest distance ``|dx|, |dy|`` (image px) between the two runs' keypoints,
  over the keypoints whose reference heatmap has a *clear* peak (:func:`clear_keypoints`). A
  keypoint whose heatmap has two near-equal maxima (random weights, or a real model on an image
  without that joint) can jump between them under any rounding difference; its position means
  nothing, and the heatmaps still compare it.
- **scores**: the largest difference of heatmap maxima, over all keypoints, divided by
  ``max(1, peak)`` like the heatmaps (a checkpoint whose maps peak far above 1 scales both).
- **heatmaps**: the largest ``|a - b|`` over all heatmap pixels divided by ``max(1, peak)``
  (the form of the backend tests' tolerance, ``tests/models/runtime/test_backends.py``).

The tolerances (:data:`REQUEST_PATH`, :data:`NVJPEG`, :data:`FLOAT32_FORWARD`,
:data:`HALF_FORWARD`, :data:`QUANTIZED`) are those the tests already state; each one's
docstring names its test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "FLOAT32_FORWARD",
    "HALF_FORWARD",
    "NVJPEG",
    "QUANTIZED",
    "REQUEST_PATH",
    "Difference",
    "Run",
    "Tolerance",
    "clear_keypoints",
    "compare",
]


@dataclass(frozen=True)
class Run:
    """One run's output for all persons of a request, in one fixed order.

    Attributes:
        keypoints: ``(N, K, 2)`` ``(x, y)`` image px.
        scores: ``(N, K)`` heatmap maxima.
        heatmaps: ``(N, K, H, W)`` float32 (heatmap px).
    """

    keypoints: np.ndarray
    scores: np.ndarray
    heatmaps: np.ndarray


@dataclass(frozen=True)
class Tolerance:
    """The largest differences two runs may show (``None``: that measure is not judged).

    Attributes:
        px: keypoints with a clear peak, image px.
        score: heatmap maxima, relative to ``max(1, peak)``.
        heatmap: heatmap pixels, relative to ``max(1, peak)``.
    """

    px: float | None = None
    score: float | None = None
    heatmap: float | None = None

    def __str__(self) -> str:
        parts = [
            f"{name} {value:g}"
            for name, value in (("px", self.px), ("score", self.score), ("heatmap", self.heatmap))
            if value is not None
        ]
        return ", ".join(parts) or "none"


REQUEST_PATH = Tolerance(px=0.05, score=0.01)
"""Device crops vs cv2, torchvision's CPU JPEG decoding vs Pillow's
(``tests/app/intake/test_device_path.py``: 0.05 image px, scores 0.01)."""
NVJPEG = Tolerance(px=1.0)
"""nvJPEG vs Pillow on CUDA (the ``gpu`` test of ``tests/app/intake/test_device_path.py``: 1 image
px; nvJPEG's pixels differ from libjpeg's by about one grey level)."""
FLOAT32_FORWARD = Tolerance(px=0.05, heatmap=1e-3)
"""Another float32 forward call (ONNX Runtime, ``torch.compile``, batch-bucket padding) vs the
torch module (``tests/models/runtime/test_backends.py``: onnxruntime within 1e-3 of the peak)."""
HALF_FORWARD = Tolerance(px=0.5, heatmap=5e-2)
"""A half-precision forward (AMP, TensorRT fp16) vs torch float32 (the tests: TensorRT heatmaps
within 5e-2 of the peak, AMP keypoints within 0.5 px)."""
QUANTIZED = Tolerance(heatmap=0.25)
"""A given ONNX file (``HEATPOSE_ONNX``, INT8 from ``heatpose export --int8``) vs torch float32:
lossy by design, so only gross errors count (heatmaps within 25% of the peak; keypoints not
judged; measured differences: BENCHMARKS.md, "Accuracy of the request path's shortcuts")."""


@dataclass(frozen=True)
class Difference:
    """How far one run is from the reference (see the module docstring for the measures).

    Attributes:
        keypoints_px: over the ``compared`` clear keypoints (0 when there are none); ``inf``
            when the runs found different numbers of persons or a keypoint is NaN.
        compared: how many keypoints were clear in the reference.
        scores, heatmaps: over all keypoints, relative to ``max(1, peak)``.
    """

    keypoints_px: float
    compared: int
    scores: float
    heatmaps: float

    def within(self, tol: Tolerance) -> bool:
        """Every judged measure at most its tolerance, and nothing infinite (a different
        number of persons, NaN keypoints or heatmaps) whatever is judged."""
        if not all(math.isfinite(v) for v in (self.keypoints_px, self.scores, self.heatmaps)):
            return False
        pairs = (
            (self.keypoints_px, tol.px),
            (self.scores, tol.score),
            (self.heatmaps, tol.heatmap),
        )
        return all(limit is None or value <= limit for value, limit in pairs)

    def __str__(self) -> str:
        if math.isinf(self.keypoints_px):
            return "different numbers of persons"
        return (
            f"keypoints {self.keypoints_px:.3f} px ({self.compared} clear), "
            f"scores {self.scores:.4f}, heatmaps {self.heatmaps:.2e}"
        )


def clear_keypoints(heatmaps: np.ndarray, *, radius: int = 2, margin: float = 0.1) -> np.ndarray:
    """Which keypoints have a clear peak: the maximum exceeds every value farther than
    ``radius`` heatmap px from it (a square window) by at least ``margin`` times itself.

    Args:
        heatmaps: ``(N, K, H, W)``.

    Returns:
        ``(N, K)`` bools.
    """
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n * k, h * w).astype(np.float64)
    top = flat.argmax(axis=1)
    peak = flat[np.arange(n * k), top]
    ys, xs = np.divmod(np.arange(h * w), w)
    ty, tx = np.divmod(top, w)
    near = (np.abs(ys[None] - ty[:, None]) <= radius) & (np.abs(xs[None] - tx[:, None]) <= radius)
    rest = np.where(near, -np.inf, flat).max(axis=1)
    clear = (peak > 0) & (peak - rest >= margin * peak)
    return clear.reshape(n, k)


def compare(ref: Run, got: Run) -> Difference:
    """``got`` measured against ``ref`` (persons in the same order)."""
    if ref.heatmaps.shape != got.heatmaps.shape:
        return Difference(math.inf, 0, math.inf, math.inf)
    if ref.heatmaps.size == 0:
        return Difference(0.0, 0, 0.0, 0.0)
    clear = clear_keypoints(ref.heatmaps)
    apart = np.abs(np.asarray(ref.keypoints, np.float64) - got.keypoints).max(axis=-1)
    if np.isnan(apart).any():
        clear = np.ones_like(clear)  # a NaN keypoint counts wherever it is
        apart = np.where(np.isnan(apart), math.inf, apart)
    peak = max(1.0, float(np.abs(ref.heatmaps).max()))
    maps = np.abs(ref.heatmaps.astype(np.float64) - got.heatmaps).max() / peak
    return Difference(
        keypoints_px=float(apart[clear].max()) if clear.any() else 0.0,
        compared=int(clear.sum()),
        scores=float(np.abs(np.asarray(ref.scores, np.float64) - got.scores).max() / peak),
        heatmaps=float(np.nan_to_num(maps, nan=math.inf)),
    )
