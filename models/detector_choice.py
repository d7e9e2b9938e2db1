"""Which person detector ``auto`` names: ``HEATPOSE_DETECTOR``, ``heatpose predict --detector``
and ``heatpose eval --detector`` all ask :func:`auto_detector`, so they cannot disagree.

One-stage RTMDet by default: ``person-rtmdet-m`` (640x640, COCO person AP 62.5, 39 GFLOPs) on
CUDA, ``person-rtmdet-nano`` (320x320, AP 40.3, 0.31 GFLOPs) on the CPU. The torchvision
detectors (``person-rcnn-r50-fpn``, ``person-frcnn-mbv3``) stay available by name.
"""

from __future__ import annotations

import torch

__all__ = ["AUTO", "AUTO_CPU", "AUTO_CUDA", "auto_detector"]

AUTO = "auto"
AUTO_CUDA = "person-rtmdet-m"
AUTO_CPU = "person-rtmdet-nano"


def auto_detector(device: str | torch.device | None) -> str:
    """The zoo name ``auto`` stands for on ``device`` (``None`` = cuda if available, else cpu)."""
    cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    return AUTO_CUDA if cuda else AUTO_CPU
