"""How alike two person results are: box IoU and keypoint OKS, as ``(N, M)`` matrices.

Used by OKS-NMS in evaluation and by the frame-to-frame tracker. Boxes are ``[x1, y1, x2, y2]``
and keypoints ``(x, y)``, both in image pixels.
"""

from __future__ import annotations

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes ``a (N, 4)`` and ``b (M, 4)`` xyxy image px -> ``(N, M)``.

    Empty boxes (zero area) have IoU 0 with everything.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0.0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0.0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0.0, None).prod(-1)
    union = area_a[:, None] + area_b[None] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def oks_matrix(
    a: np.ndarray,
    area_a: np.ndarray,
    b: np.ndarray,
    area_b: np.ndarray,
    sigmas: np.ndarray,
    *,
    valid_a: np.ndarray | None = None,
    valid_b: np.ndarray | None = None,
) -> np.ndarray:
    """OKS between poses ``a (N, K, 2)`` and ``b (M, K, 2)`` (image px) -> ``(N, M)``.

    ``exp(-d^2 / (2 * s^2 * (2 sigma)^2))`` averaged over the K keypoints, with the scale
    ``s^2`` the mean of the two areas (the symmetric OKS of OKS-NMS). With ``valid_a (N, K)``
    and/or ``valid_b (M, K)`` (bool), only keypoints valid in both poses are averaged; a pair
    with no such keypoint gets NaN (no evidence either way).
    """
    var = (2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2  # (K,)
    if a.shape[-2] != len(var) or b.shape[-2] != len(var):
        raise ValueError(f"poses of {a.shape[-2]} and {b.shape[-2]} keypoints, {len(var)} sigmas")
    d2 = ((a[:, None] - b[None]) ** 2).sum(-1)  # (N, M, K)
    s2 = (area_a[:, None] + area_b[None]) / 2.0 + np.spacing(1)  # (N, M)
    e = np.exp(-d2 / var / s2[..., None] / 2.0)
    if valid_a is None and valid_b is None:
        return e.mean(-1)
    n, m, k = e.shape
    va = np.ones((n, k), bool) if valid_a is None else np.asarray(valid_a, bool)
    vb = np.ones((m, k), bool) if valid_b is None else np.asarray(valid_b, bool)
    both = va[:, None] & vb[None]  # (N, M, K)
    count = both.sum(-1)
    total = np.where(both, e, 0.0).sum(-1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)
