"""Which person detector ``auto`` names, and the rule for one that cannot be had.

``HEATPOSE_DETECTOR``, ``heatpose predict --detector`` and ``heatpose eval --detector`` all ask
:func:`auto_detector`, so they cannot disagree: one-stage RTMDet, ``person-rtmdet-m`` (640x640,
COCO person AP 62.5, 39 GFLOPs) on CUDA, ``person-rtmdet-nano`` (320x320, AP 40.3, 0.31
GFLOPs) on the CPU. The torchvision detectors (``person-rcnn-r50-fpn``, ``person-frcnn-mbv3``)
stay available by name.

Every front door (``heatpose serve``, ``heatpose predict``, ``heatpose eval --boxes detector``)
applies the same rule: when ``auto``'s weights are neither cached nor downloadable (or
unreadable), the program goes on *without* a detector and says why, once, in the words of
:func:`unavailable_reason`. A detector named explicitly (a zoo name or a file) stays required:
its error propagates and the program stops with one line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

from models.weights.checkpoint import CheckpointError
from models.weights.zoo import ZooError

__all__ = [
    "AUTO",
    "AUTO_CPU",
    "AUTO_CUDA",
    "NO_DETECTOR_EFFECT",
    "auto_detector",
    "load_or_reason",
    "unavailable_reason",
]

AUTO = "auto"
"""The detector setting that picks by device and may fall back to no detector."""
AUTO_CUDA = "person-rtmdet-m"
AUTO_CPU = "person-rtmdet-nano"

NO_DETECTOR_EFFECT = "images without boxes are answered as one whole-image person"

T = TypeVar("T")


def auto_detector(device: str | torch.device | None) -> str:
    """The zoo name ``auto`` stands for on ``device`` (``None`` = cuda if available, else cpu)."""
    cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    return AUTO_CUDA if cuda else AUTO_CPU


def unavailable_reason(name: str, error: BaseException, effect: str = NO_DETECTOR_EFFECT) -> str:
    """One line: ``auto``'s detector ``name`` could not be had (``error``), and what follows."""
    return (
        f"person detection is off: the automatic detector {name} cannot be loaded ({error}); "
        f"{effect}"
    )


def load_or_reason(
    setting: str,
    name: str,
    load: Callable[[], T],
    *,
    errors: tuple[type[BaseException], ...] = (),
    effect: str = NO_DETECTOR_EFFECT,
) -> tuple[T | None, str | None]:
    """``load()`` -> ``(detector, None)``; when it fails and ``setting`` is ``auto`` ->
    ``(None, reason)``.

    Args:
        setting: the user's detector setting (``auto``, a zoo name or a file).
        name: what ``auto`` (or the setting) resolved to, for the reason.
        load: fetches and loads the detector.
        errors: more exception types that mean "cannot be had" besides
            :class:`~models.weights.zoo.ZooError`,
            :class:`~models.weights.checkpoint.CheckpointError` and
            :class:`OSError` (e.g. the caller's wrapper of them).
        effect: what the program does without the detector, for the reason.

    Raises:
        Whatever ``load`` raises when ``setting`` is not ``auto``.
    """
    unavailable: tuple[type[BaseException], ...] = (ZooError, CheckpointError, OSError, *errors)
    try:
        return load(), None
    except unavailable as e:
        if setting != AUTO:
            raise
        return None, unavailable_reason(name, e, effect)
