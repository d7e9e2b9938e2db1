"""What a person detector can take: the limit on an image's aspect ratio, checked up front.

Every detector resizes a whole image so that its longer side fits the network input (the
torchvision detectors: at most ``max_size`` = 1333 px; RTMDet: the square input, 320 or 640 px).
An image much longer than it is wide then has a shorter side of less than one pixel and the
resize raises (``10000x1``, ``1x10000``, ``65535x1``). Such images are refused before they reach
the detector batch, with a message naming the limit, so they never fail anyone else's batch.

What the detector path holds is bounded too: an image is brought down to the largest input a
detector takes before it is queued (:func:`shrink_for_detector`), and the pixel budget charges
its share (:func:`detector_pixels`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
from torch.nn import functional as nn_functional

if TYPE_CHECKING:
    from models.pose.crops import Pixels

MAX_ASPECT_RATIO = 100
"""The largest ``longer side / shorter side`` of an image given to the person detector. At the
smallest detector input (320 px) the shorter side is then still at least 3 px."""


class UndetectableImage(ValueError):
    """An image the person detector cannot take (its aspect ratio is over the limit)."""


def check_detectable(width: int, height: int, *, name: str) -> None:
    """Refuse an image whose aspect ratio is over :data:`MAX_ASPECT_RATIO`.

    Args:
        width, height: the image's size in pixels (as decoded).
        name: how messages call the image (``file 'a.png'``, ``image 0``, ``frame 3``).

    Raises:
        UndetectableImage: naming the size, the ratio and the limit.
    """
    short, long = min(width, height), max(width, height)
    if short >= 1 and long <= MAX_ASPECT_RATIO * short:
        return
    ratio = f"{long / short:,.0f}:1" if short >= 1 else "unbounded"
    raise UndetectableImage(
        f"{name} is {width}x{height} (aspect ratio {ratio}); the person detector takes images "
        f"whose longer side is at most {MAX_ASPECT_RATIO} times the shorter side: crop the "
        "image, or give its person boxes (boxes=...) or detect=false"
    )


DETECTOR_MIN_SIDE, DETECTOR_MAX_SIDE = 800, 1333
"""The largest input a person detector takes: torchvision's detectors resize the shorter side
to 800 px with the longer at most 1333 px; RTMDet's square input (320 or 640 px) is smaller."""

DETECTOR_PIXEL_COST = 13
"""What one pixel of a detector's input holds, in decoded RGB pixels (3 bytes): its uint8 copy
(1) and three float32 RGB copies (4 each: scaled to [0, 1], normalised, padded into the
batch). The pixel budget charges it for every image the detector sees
(:func:`detector_pixels`)."""


def detector_scale(width: int, height: int) -> float:
    """The factor (at most 1) that brings a ``width`` x ``height`` image to the largest input a
    detector takes (:data:`DETECTOR_MIN_SIDE`, :data:`DETECTOR_MAX_SIDE`)."""
    short, long = min(width, height), max(width, height)
    return min(1.0, DETECTOR_MIN_SIDE / max(short, 1), DETECTOR_MAX_SIDE / max(long, 1))


def detector_pixels(pixels: int) -> int:
    """What the detector path holds for an image of ``pixels`` decoded pixels, in decoded RGB
    pixels: its input (at most ``DETECTOR_MIN_SIDE x DETECTOR_MAX_SIDE`` pixels) times
    :data:`DETECTOR_PIXEL_COST`."""
    return min(pixels, DETECTOR_MIN_SIDE * DETECTOR_MAX_SIDE) * DETECTOR_PIXEL_COST


def shrink_for_detector(image: Pixels) -> tuple[Pixels, float, float]:
    """``image`` ``(H, W, 3)`` uint8 (numpy or a torch tensor) brought down to the largest input
    a detector takes (:func:`detector_scale`; area interpolation), so the detector's float
    copies are of that size whatever the upload's; unchanged when already within it.

    Returns:
        The image and the factors ``(fx, fy)`` (new size / old size per axis) that map its
        pixels from the given image's (:meth:`models.pose.persons.PersonBoxes.resized` maps back).
    """
    height, width = int(image.shape[0]), int(image.shape[1])
    s = detector_scale(width, height)
    if s >= 1.0:
        return image, 1.0, 1.0
    size = (max(1, round(width * s)), max(1, round(height * s)))
    if isinstance(image, np.ndarray):
        small: Pixels = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    else:
        chw = image.permute(2, 0, 1)[None].float()
        out = nn_functional.interpolate(chw, size=(size[1], size[0]), mode="area")
        small = out[0].permute(1, 2, 0).round_().clamp_(0, 255).to(torch.uint8).contiguous()
    return small, size[0] / width, size[1] / height
