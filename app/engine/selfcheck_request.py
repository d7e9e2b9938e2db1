"""The self-check's built-in request and its path, stage by stage (:mod:`app.engine.selfcheck`).

The request: two small JPEGs made here once (a smooth random texture with a few shapes, the
same bytes at every start), each with an EXIF orientation that rotates it (6 and 3), the first
with one client box, the second without (the person detector's best box, or the whole image
without a detector): a few KB, decoded in milliseconds.

:class:`RequestPath` runs it the way ``/predict`` does, with each stage either plain or as
configured: decoding (Pillow, or torchvision on the device: :mod:`app.intake.torch_decode`), person
boxes, crops (cv2, or one batched warp on the device), the forward pass (any predictor: the
service's, or a torch float32 twin), heatmap decoding to image px.
"""

from __future__ import annotations

import copy
import functools
import io
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from PIL import Image

from app.intake.torch_decode import decode_uploads
from app.intake.uploads import decode_image
from models.inference.agreement import Run
from models.inference.pipeline import Detector, detections_to_boxes
from models.inference.predictor import Predictor
from models.pose.crops import Crops, Pixels, host_pixels
from models.pose.persons import PersonBoxes
from models.runtime.backends import Bucketed, TorchBackend

MAX_PIXELS = 1_000_000
ROWS = 2
"""Rows of one forward call without batch buckets (every backend's warm-up runs 1 and 2)."""
SIZE = (160, 120)
"""``(w, h)`` of the stored JPEGs; displayed 120 x 160 (EXIF 6) and 160 x 120 (EXIF 3)."""


class FeatureFailed(RuntimeError):
    """An accelerated stage answered, but not with what it is for (e.g. Pillow decoded)."""


@dataclass(frozen=True)
class Upload:
    """One image of the built-in request: its name, JPEG bytes and client boxes (image px of
    the displayed image, or ``None``)."""

    name: str
    data: bytes
    boxes: list[list[float]] | None


def _texture(seed: int) -> np.ndarray:
    """A ``(h, w, 3)`` uint8 photo-like image: smooth colour blobs and a few shapes."""
    w, h = SIZE
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (h // 12 + 1, w // 12 + 1, 3)).astype(np.uint8)
    image = np.ascontiguousarray(cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC))
    for _ in range(4):
        centre = (int(rng.integers(20, w - 20)), int(rng.integers(20, h - 20)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.circle(image, centre, int(rng.integers(6, 18)), colour, -1, cv2.LINE_AA)
    return image


@functools.lru_cache(maxsize=1)
def builtin_request() -> tuple[Upload, ...]:
    """The two uploads (see the module docstring); made once per process."""
    out = []
    for seed, tag, boxes in ((1, 6, [[12.0, 10.0, 104.0, 150.0]]), (2, 3, None)):
        img = Image.fromarray(_texture(seed))
        exif = img.getexif()
        exif[0x0112] = tag
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90, exif=exif.tobytes())
        out.append(Upload(f"selfcheck-{tag}.jpg", buf.getvalue(), boxes))
    return tuple(out)


def plain_twin(predictor: Predictor) -> Predictor:
    """``predictor`` with the plain forward: the torch module itself, float32 (no AMP), no
    batch buckets; the same weights on the same device (nothing copied)."""
    twin = copy.copy(predictor)
    twin.forward = TorchBackend(predictor.model)
    twin.amp = False
    return twin


def runs_plain(predictor: Predictor) -> bool:
    """Whether ``predictor``'s forward is already the plain one (:func:`plain_twin`)."""
    return type(predictor.forward) is TorchBackend and not predictor.amp


class RequestPath:
    """The built-in request through the service's stages (see the module docstring).

    Args:
        uploads: the request (:func:`builtin_request`).
        flip_test, decode_mode: the service's defaults.
        detector: the person detector, or ``None``.
        nms_thr: ``HEATPOSE_DETECTOR_NMS_THR``.
    """

    def __init__(
        self,
        uploads: Sequence[Upload],
        *,
        flip_test: bool,
        decode_mode: str,
        detector: Detector | None,
        nms_thr: float,
    ) -> None:
        self.uploads, self.flip_test, self.decode_mode = uploads, flip_test, decode_mode
        self.detector, self.nms_thr = detector, nms_thr

    def decode_plain(self) -> list[np.ndarray]:
        """Pillow, full size, EXIF orientation applied: ``(h, w, 3)`` uint8 RGB arrays."""
        return [
            np.asarray(decode_image(u.data, u.name, MAX_PIXELS, max_side=0).pixels)
            for u in self.uploads
        ]

    def decode_on(self, device: torch.device) -> list[Pixels]:
        """torchvision on ``device`` (nvJPEG on CUDA), as ``HEATPOSE_DECODE=torch`` decodes.

        Raises:
            FeatureFailed: a JPEG came back decoded by Pillow (torchvision refused it).
        """
        decoded = decode_uploads(
            [u.data for u in self.uploads],
            [u.name for u in self.uploads],
            max_pixels=MAX_PIXELS,
            max_side=0,
            needs=[None] * len(self.uploads),
            device=device,
        )
        if not all(isinstance(d.pixels, torch.Tensor) for d in decoded):
            raise FeatureFailed(f"torchvision did not decode the JPEGs on {device} (Pillow did)")
        return [d.pixels for d in decoded]

    def persons(self, images: Sequence[Pixels]) -> list[PersonBoxes]:
        """The client's boxes; else the detector's best box (any score) or the whole image."""
        out = []
        for upload, image in zip(self.uploads, images, strict=True):
            h, w = image.shape[:2]
            if upload.boxes is not None:
                out.append(PersonBoxes.from_client(upload.boxes, w, h))
                continue
            found = None
            if self.detector is not None:
                (det,) = self.detector.detect([image], 0.0, self.nms_thr, 1)
                found = detections_to_boxes(det, max_persons=1)
            out.append(found if found is not None and len(found) else PersonBoxes.whole_image(w, h))
        return out

    def run(
        self,
        images: Sequence[Pixels],
        persons: Sequence[PersonBoxes],
        predictor: Predictor,
        *,
        on_device: bool,
    ) -> Run:
        """Crops (cv2 or ``on_device``), ``predictor``'s forward pass and its decoding.

        Each forward call gets at most :data:`ROWS` rows (the flip test doubles the crops), or
        for a bucketed forward its smallest bucket: sizes the warm-up has run (a first call of
        a new batch size costs more than the pass itself on the CPU).
        """
        crops = Crops.concat(predictor.crop_many(images, persons, on_device=on_device))
        rows = ROWS
        if isinstance(predictor.forward, Bucketed):
            rows = predictor.forward.buckets[0]
        per_call = max(1, rows // (2 if self.flip_test else 1))
        maps = [
            predictor.heatmaps(crops.images[i : i + per_call], self.flip_test)
            for i in range(0, len(crops), per_call)
        ]
        hm = torch.cat(maps)
        kp, scores = predictor.decode(hm, crops.centers, crops.scales, self.decode_mode)
        return Run(kp, scores, hm.float().cpu().numpy())


def pixel_difference(a: Sequence[Pixels], b: Sequence[Pixels]) -> float:
    """Mean ``|a - b|`` in grey levels over all images (``inf`` when a size differs)."""
    total, count = 0.0, 0
    for x, y in zip(a, b, strict=True):
        hx, hy = host_pixels(x).astype(np.int16), host_pixels(y).astype(np.int16)
        if hx.shape != hy.shape:
            return float("inf")
        total += float(np.abs(hx - hy).sum())
        count += hx.size
    return total / max(count, 1)
