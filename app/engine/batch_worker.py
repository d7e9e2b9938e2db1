"""What the batcher's worker thread does with one batch: forward pass, then decode.

Kept apart from the queueing in :mod:`app.engine.batch_queue` so it can be read (and tested) on
its own. The model is reached only through two callables, in production the bound methods
``Predictor.heatmaps`` (which enters ``torch.inference_mode``) and ``Predictor.decode``
(:mod:`models.inference.predictor`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from models.pose.crops import Pixels

log = logging.getLogger("heatpose.batcher")

RunBatch = Callable[[Pixels, np.ndarray], Any]
"""``(crops (B, h, w, 3) uint8 RGB numpy or torch (any device), flip (B,) bool) -> heatmaps
(B, K, H, W)`` torch or numpy."""
Decode = Callable[[Any, np.ndarray, np.ndarray, str | None], tuple[Any, Any]]
"""``(heatmaps (B, K, H, W), centers (B, 2), scales (B, 2) image px, mode) ->
(keypoints (B, K, 2) image px, scores (B, K))``."""


class BatchOutput(NamedTuple):
    """Per crop of a batch: ``keypoints`` ``(K, 2)`` image px, ``scores`` ``(K,)``, and
    ``heatmaps`` ``(K, H, W)`` float32 or ``None`` (each a list over the batch)."""

    keypoints: list[np.ndarray]
    scores: list[np.ndarray]
    heatmaps: list[np.ndarray | None]


def forward(run_batch: RunBatch, crops: Pixels, flip: np.ndarray) -> Any:
    """``run_batch`` on the whole batch; on CUDA out-of-memory, on each half (recursively)."""
    try:
        return run_batch(crops, flip)
    except torch.cuda.OutOfMemoryError:
        if len(crops) == 1:
            raise
        half = len(crops) // 2
        log.warning(
            "CUDA out of memory on a batch of %d; retrying as %d + %d",
            len(crops),
            half,
            len(crops) - half,
        )
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        a = forward(run_batch, crops[:half], flip[:half])
        b = forward(run_batch, crops[half:], flip[half:])
        return torch.cat([a, b]) if isinstance(a, torch.Tensor) else np.concatenate([a, b])


def run(
    run_batch: RunBatch,
    decode: Decode,
    *,
    crops: Pixels,
    flip: np.ndarray,
    centers: np.ndarray,
    scales: np.ndarray,
    modes: Sequence[str | None],
    want_heatmaps: Sequence[bool],
) -> BatchOutput:
    """One batch, on the worker thread.

    Args:
        crops: ``(B, h, w, 3)`` uint8 RGB, numpy or a tensor (on any device: ``run_batch``
            moves it to its own, :func:`models.inference.predictor.normalize_crops`); ``flip``:
            ``(B,)``.
        centers, scales: ``(B, 2)`` crop regions, image px.
        modes: per crop its decode mode (crops sharing a mode are decoded together).
        want_heatmaps: per crop whether to return its ``(K, H, W)`` heatmaps (as numpy).

    Returns:
        ``B`` crops' outputs, keypoints in image pixels.
    """
    heatmaps = forward(run_batch, crops, flip)
    n = len(crops)
    keypoints: list[Any] = [None] * n
    scores: list[Any] = [None] * n
    for mode in dict.fromkeys(modes):
        idx = [k for k, m in enumerate(modes) if m == mode]
        sel = heatmaps if len(idx) == n else heatmaps[idx]
        kp, sc = decode(sel, centers[idx], scales[idx], mode)
        for j, k in enumerate(idx):
            keypoints[k], scores[k] = kp[j], sc[j]
    return BatchOutput(
        keypoints=[np.asarray(k) for k in keypoints],
        scores=[np.asarray(s) for s in scores],
        heatmaps=[_to_numpy(heatmaps[k]) if want_heatmaps[k] else None for k in range(n)],
    )


def _to_numpy(t: Any) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().float().cpu().numpy()
    return np.asarray(t, dtype=np.float32)
