"""What a person detector answers, and the NMS-and-keep step every detector ends with.

Owned here, apart from the detectors, because both :mod:`models.detection.detector` (torchvision's
detectors, and :func:`~models.detection.detector.load_detector`, which picks between them and
RTMDet) and
:mod:`models.detection.rtmdet` use them.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torchvision.ops import nms


class Detections(NamedTuple):
    """One image's persons, best first: ``boxes (N, 4)`` float32 ``[x1, y1, x2, y2]`` image px,
    ``scores (N,)`` float32 in ``[0, 1]``."""

    boxes: np.ndarray
    scores: np.ndarray


def suppress(
    boxes: torch.Tensor, scores: torch.Tensor, nms_thr: float, max_persons: int
) -> Detections:
    """One image's candidates -> its :class:`Detections`: NMS at IoU ``nms_thr``, then the best
    ``max_persons`` (sorted by score), as float32 numpy on the host.

    Args:
        boxes: ``(N, 4)`` ``[x1, y1, x2, y2]`` in the image's pixels, any device.
        scores: ``(N,)`` person scores, already above the caller's threshold.
    """
    keep = nms(boxes, scores, nms_thr)[: max(max_persons, 0)]
    return Detections(
        boxes[keep].cpu().numpy().astype(np.float32),
        scores[keep].cpu().numpy().astype(np.float32),
    )
