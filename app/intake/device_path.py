"""Where ``/predict``'s images are decoded and cropped: on the CPU or on the serving device.

Two settings, resolved against the first predictor's device (the one that cuts the crops):

- ``HEATPOSE_CROP`` (:func:`crops_on_device`): ``cv2`` cuts each person with
  ``cv2.warpAffine`` on the CPU; ``device`` cuts all persons of a request with one batched
  warp on the device (:meth:`models.inference.predictor.Predictor.crop_many`), images moved there
  once as uint8, crops left there for the batcher; ``auto`` = ``device`` on CUDA, else ``cv2``.
- ``HEATPOSE_DECODE`` (:func:`decodes_with_torch`): ``pillow`` decodes on the CPU;
  ``torch`` decodes ``/predict``'s JPEGs with torchvision on the serving device, one batched
  call a request (:mod:`app.intake.torch_decode`; nvJPEG on CUDA); ``auto`` = ``torch`` when the
  crops are cut on a CUDA device, else ``pillow``.

On CUDA with the defaults nothing of a JPEG but its bytes then goes through the CPU: nvJPEG
decodes it, the crop's grid sample cuts it, ``normalize_crops`` takes the crops where they
are, and the detector (:meth:`models.detection.detector.PersonDetector.detect`) reads the image
there. ``/visualize`` (it draws on CPU pixels) and WebSocket streams keep the Pillow decode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from app.intake.reduction import PoseNeed
from app.intake.uploads import DecodedImage, decode_image
from app.settings import Settings
from models.inference.predictor import Predictor
from models.pose.crops import Crops, Pixels
from models.pose.persons import PersonBoxes


def crops_on_device(setting: str, device: torch.device) -> bool:
    """Whether ``HEATPOSE_CROP`` = ``setting`` cuts the crops on ``device`` (not cv2)."""
    return setting == "device" or (setting == "auto" and device.type == "cuda")


def decodes_with_torch(settings: Settings, device: torch.device) -> bool:
    """Whether ``/predict``'s JPEGs are decoded by torchvision on ``device``
    (``HEATPOSE_DECODE``; ``auto``: where the crops are cut on a CUDA device)."""
    if settings.decode == "auto":
        return device.type == "cuda" and crops_on_device(settings.crop, device)
    return settings.decode == "torch"


@dataclass(frozen=True)
class Uploads:
    """One request's uploads, read and checked (count, content types) but not decoded.

    Calling it decodes them with Pillow (:func:`app.intake.uploads.decode_image`: what
    ``/visualize`` and the CPU path do); :meth:`on_device` decodes the JPEGs with torchvision
    instead.

    Attributes:
        datas, names: the bytes and file names, in upload order.
        needs: per image what its pose crops need (Pillow's reduced-scale decoding).
        max_pixels, max_side: ``HEATPOSE_MAX_IMAGE_PIXELS``, ``HEATPOSE_DECODE_MAX_SIDE``.
    """

    datas: Sequence[bytes]
    names: Sequence[str]
    needs: Sequence[PoseNeed | None]
    max_pixels: int
    max_side: int

    def __call__(self) -> list[DecodedImage]:
        return [
            decode_image(d, n, self.max_pixels, max_side=self.max_side, need=want)
            for d, n, want in zip(self.datas, self.names, self.needs, strict=True)
        ]

    def on_device(self, device: torch.device) -> list[DecodedImage]:
        """JPEGs decoded on ``device`` (:func:`app.intake.torch_decode.decode_uploads`), the rest
        with Pillow."""
        from app.intake.torch_decode import (
            decode_uploads,  # torchvision.io: only for device decoding
        )

        return decode_uploads(
            self.datas,
            self.names,
            max_pixels=self.max_pixels,
            max_side=self.max_side,
            needs=self.needs,
            device=device,
        )


def decode_images(
    uploads: Callable[[], list[DecodedImage]], settings: Settings, device: torch.device
) -> list[DecodedImage]:
    """``uploads`` decoded where the settings say (:func:`decodes_with_torch`; a plain
    callable, not :class:`Uploads`, is simply called)."""
    if isinstance(uploads, Uploads) and decodes_with_torch(settings, device):
        return uploads.on_device(device)
    return uploads()


def crop(
    predictor: Predictor,
    images: Sequence[Pixels],
    persons: Sequence[PersonBoxes],
    settings: Settings,
) -> list[Crops]:
    """Every image's person crops, cut where ``HEATPOSE_CROP`` says (:func:`crops_on_device`
    of ``predictor``'s device)."""
    on_device = crops_on_device(settings.crop, predictor.device)
    return predictor.crop_many(images, persons, on_device=on_device)
