"""A person detector as ONNX: RTMDet's network, static input, NMS outside the graph.

    heatpose export person-rtmdet-nano --format onnx --out detector.onnx
    heatpose export rtmdet_m.pth --detector --format onnx --out detector.onnx

The graph is :attr:`models.detection.rtmdet.RTMDetector.network` only (BatchNorm folded): input
``input`` ``(B, 3, S, S)`` float32, letterboxed and normalised as
:meth:`~models.detection.rtmdet.RTMDetector.preprocess` makes it (input px; ``S`` static, the batch
axis dynamic); outputs ``scores`` ``(B, N)`` (sigmoid person score of each of the ``N`` point
priors) and ``boxes`` ``(B, N, 4)`` ``[x1, y1, x2, y2]`` input px. The score threshold,
``nms_pre``, NMS and the mapping back to image pixels stay outside the graph, in
:meth:`~models.detection.rtmdet.RTMDetector.postprocess` (torchvision's NMS), shared by every
backend: no NMS operator, so every runtime (ONNX Runtime, TensorRT) runs the same static-shape graph
and the thresholds are the caller's per request. ``{"arch", "input_size", "nms"}`` is stored in the
ONNX ``metadata_props`` under :data:`DETECTOR_KEY`. The two-stage torchvision detectors are not
exported (their shapes depend on the proposals).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.runtime.export import (
    INPUT_NAME,
    graph_bytes,
    read_metadata,
    require,
    write_atomically,
)

DETECTOR_KEY = "heatpose-detector"
SCORES, BOXES = "scores", "boxes"
OUTPUTS = (SCORES, BOXES)
NMS_PLACE = "outside the graph (RTMDetector.postprocess)"


def export_detector_onnx(
    network: torch.nn.Module, out: str | Path, *, arch: str, input_size: int, opset: int = 17
) -> Path:
    """Write ``network``'s ONNX graph (see the module doc) to ``out`` atomically.

    Raises:
        ExportError: ``onnx`` is missing or the checker rejects the graph.
    """
    meta = {DETECTOR_KEY: json.dumps({"arch": arch, "input_size": input_size, "nms": NMS_PLACE})}
    data = graph_bytes(
        network, (input_size, input_size), outputs=OUTPUTS, metadata=meta, opset=opset
    )
    return write_atomically(out, data)


def read_detector_meta(path: str | Path) -> dict[str, Any]:
    """``{"arch", "input_size", "nms"}`` of an exported detector.

    Raises:
        ExportError: no such file, not ONNX, or not a detector exported by heatpose.
    """
    return dict(json.loads(read_metadata(path, DETECTOR_KEY)))


def detector_max_abs_diff(detector: Any, path: str | Path, *, seed: int = 0) -> tuple[float, float]:
    """Largest ``|torch - onnxruntime|`` of the scores and of the boxes (input px) on the
    detector's own input for three random pictures of different aspect ratios (smooth colour
    blocks and noise, letterboxed by its ``preprocess``), CPU, float32."""
    ort = require("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    images = []
    for h, w in ((480, 640), (640, 360), (300, 300)):
        blocks = rng.integers(0, 256, (h // 32 + 1, w // 32 + 1, 3)).astype(np.float32)
        big = np.kron(blocks, np.ones((32, 32, 1), np.float32))[:h, :w]
        images.append((big + rng.normal(0, 8, (h, w, 3))).clip(0, 255).astype(np.uint8))
    x = detector.preprocess(images)[0].cpu().float()
    with torch.inference_mode():
        ref = [t.cpu().numpy() for t in detector.network.cpu().float().eval()(x)]
    got = session.run(list(OUTPUTS), {INPUT_NAME: x.numpy()})
    return float(np.abs(got[0] - ref[0]).max()), float(np.abs(got[1] - ref[1]).max())
