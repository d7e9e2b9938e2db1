"""What a person detector can take: the limit on an image's aspect ratio, checked up front.

Every detector resizes a whole image so that its longer side fits the network input (the
torchvision detectors: at most ``max_size`` = 1333 px; RTMDet: the square input, 320 or 640 px).
An image much longer than it is wide then has a shorter side of less than one pixel and the
resize raises (``10000x1``, ``1x10000``, ``65535x1``). Such images are refused before they reach
the detector batch, with a message naming the limit, so they never fail anyone else's batch.
"""

from __future__ import annotations

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
