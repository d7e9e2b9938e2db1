"""Person crops: cutting them out of images and carrying them through a batch.

Two ways to cut, the same regions (:func:`models.pose.geometry.box_to_center_scale`):

- :func:`cut` (per image, numpy): ``cv2.warpAffine`` once per person, on the CPU;
- :func:`cut_batched` (all images of a request, torch): ONE ``affine_grid`` + ``grid_sample``
  for every person (:func:`models.pose.geometry.crop_persons_batched`) on the images' device, so
  on CUDA nothing of an image but its bytes goes through the CPU. The crops stay there: the
  ``images`` of such :class:`Crops` are a ``(N, h, w, 3)`` uint8 tensor on that device, and
  :meth:`Crops.concat`, :func:`stack_crops` and :func:`models.inference.predictor.normalize_crops`
  take them as they are (no copy back to the host).

:class:`Crops` joins the crops of many images into one batch and turns the batch's decoded
outputs back into :class:`~models.pose.persons.PersonResult` objects, which :func:`split` regroups
per image: the one copy of that bookkeeping, used by the predictor and the service.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from models.pose import geometry
from models.pose.persons import BoxSource, PersonBoxes, PersonResult

T = TypeVar("T")

Pixels = np.ndarray | torch.Tensor
"""uint8 RGB pixels ``(..., H, W, 3)``: a numpy array (host) or a torch tensor (any device)."""


@dataclass
class Crops:
    """Person crops cut out of one image (or, after :meth:`concat`, of many).

    Attributes:
        images: ``(N, h, w, 3)`` uint8 RGB crops of the model's input size: numpy (cut by
            cv2), or a torch tensor on the device that cut them (:func:`cut_batched`).
        centers: ``(N, 2)`` region centres, image pixels.
        scales: ``(N, 2)`` region sizes ``(w, h)``, image pixels.
        boxes: ``(N, 4)`` the person boxes ``[x1, y1, x2, y2]``, image pixels.
        box_scores: ``(N,)`` float64 detector confidences, NaN where the box was not detected.
        box_sources: ``N`` :data:`~models.pose.persons.BoxSource` values, one per crop.
    """

    images: Pixels
    centers: np.ndarray
    scales: np.ndarray
    boxes: np.ndarray
    box_scores: np.ndarray
    box_sources: tuple[BoxSource, ...]

    def __len__(self) -> int:
        return len(self.images)

    @staticmethod
    def concat(parts: Sequence[Crops]) -> Crops:
        """The crops of several images as one batch, in order (``parts`` must not be empty);
        tensor crops stay tensors on their device (:func:`join_pixels`)."""
        return Crops(
            images=join_pixels([p.images for p in parts]),
            centers=np.concatenate([p.centers for p in parts]),
            scales=np.concatenate([p.scales for p in parts]),
            boxes=np.concatenate([p.boxes for p in parts]),
            box_scores=np.concatenate([p.box_scores for p in parts]),
            box_sources=tuple(s for p in parts for s in p.box_sources),
        )

    def result(
        self, i: int, keypoints: np.ndarray, scores: np.ndarray, heatmaps: np.ndarray | None
    ) -> PersonResult:
        """Crop ``i``'s person: its box, region and box provenance with its decoded keypoints.

        Args:
            keypoints: ``(K, 2)`` image px; ``scores``: ``(K,)``; ``heatmaps``: ``(K, H, W)``.
        """
        box_score = float(self.box_scores[i])
        return PersonResult(
            box=self.boxes[i],
            keypoints=keypoints,
            scores=scores,
            center=self.centers[i],
            scale=self.scales[i],
            box_score=None if np.isnan(box_score) else box_score,
            box_source=self.box_sources[i],
            heatmaps=heatmaps,
        )


def split(items: Sequence[T], counts: Sequence[int]) -> list[list[T]]:
    """``items`` of one batch regrouped per image: ``counts[i]`` consecutive items each."""
    if sum(counts) != len(items):
        raise ValueError(f"{len(items)} items cannot be split into groups of {list(counts)}")
    out, start = [], 0
    for n in counts:
        out.append(list(items[start : start + n]))
        start += n
    return out


def join_pixels(parts: Sequence[Pixels]) -> Pixels:
    """``(N_i, ...)`` uint8 parts -> one ``(sum N_i, ...)`` batch, along the first axis.

    All numpy: a numpy array. Any tensor among them: a tensor on the first tensor's device
    (numpy parts and tensors of other devices are moved there; nothing goes to the host).
    """
    tensors = [p for p in parts if isinstance(p, torch.Tensor)]
    if not tensors:
        return np.concatenate(parts)  # type: ignore[arg-type]
    device = tensors[0].device
    return torch.cat([device_pixels(p, device) for p in parts])


def stack_crops(rows: Sequence[Pixels]) -> Pixels:
    """Single ``(h, w, 3)`` crops (rows of several :class:`Crops`) -> ``(B, h, w, 3)``, as
    :func:`join_pixels` keeps them: numpy stays numpy, tensors stay on their device."""
    return join_pixels([r[None] for r in rows])


def device_pixels(pixels: Pixels, device: torch.device) -> torch.Tensor:
    """``pixels`` as a uint8 tensor on ``device`` (a numpy array is wrapped, then copied once;
    a tensor already there is returned as it is)."""
    if isinstance(pixels, np.ndarray):
        pixels = torch.from_numpy(np.require(pixels, requirements=["C", "W"]))
    return pixels.to(device)


def host_pixels(pixels: Pixels) -> np.ndarray:
    """``pixels`` as a C-contiguous numpy array: the explicit copy to the host for what needs
    one (cv2 crops, drawing); a numpy array is returned as it is when already contiguous."""
    if isinstance(pixels, torch.Tensor):
        pixels = pixels.cpu().numpy()
    return np.ascontiguousarray(pixels)


def check_image(image: Pixels) -> tuple[int, int]:
    """The ``(width, height)`` of an ``(H, W, 3)`` uint8 RGB image (numpy or torch).

    Raises:
        ValueError: not an RGB uint8 image.
    """
    uint8 = image.dtype == (torch.uint8 if isinstance(image, torch.Tensor) else np.uint8)
    if image.ndim != 3 or image.shape[2] != 3 or not uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    return int(image.shape[1]), int(image.shape[0])


def regions(persons: PersonBoxes, input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Each person's crop region: centres ``(N, 2)`` and sizes ``(N, 2)`` ``(w, h)``, image px
    (:func:`models.pose.geometry.box_to_center_scale`)."""
    if len(persons) == 0:
        return np.zeros((0, 2)), np.zeros((0, 2))
    centers, scales = geometry.box_to_center_scale(geometry.xyxy_to_xywh(persons.boxes), input_size)
    return centers.reshape(-1, 2), scales.reshape(-1, 2)


def _crops(images: Pixels, persons: PersonBoxes, centers: np.ndarray, scales: np.ndarray) -> Crops:
    n = len(persons)
    box_scores = np.full(n, np.nan) if persons.scores is None else persons.scores
    return Crops(
        images=images,
        centers=centers,
        scales=scales,
        boxes=persons.boxes,
        box_scores=np.asarray(box_scores, dtype=np.float64),
        box_sources=(persons.source,) * n,
    )


def cut(image: np.ndarray, persons: PersonBoxes, input_size: tuple[int, int]) -> Crops:
    """The persons of one ``(H, W, 3)`` uint8 RGB numpy image, one ``cv2.warpAffine`` each
    (:func:`models.pose.geometry.crop_person`) -> ``(N, h, w, 3)`` uint8 numpy crops."""
    centers, scales = regions(persons, input_size)
    w, h = input_size
    out = np.empty((len(persons), h, w, 3), np.uint8)
    for i in range(len(persons)):
        out[i] = geometry.crop_person(image, centers[i], scales[i], input_size)
    return _crops(out, persons, centers, scales)


def cut_batched(
    images: Sequence[torch.Tensor],
    persons: Sequence[PersonBoxes],
    input_size: tuple[int, int],
) -> list[Crops]:
    """The persons of all ``images`` (``(H_i, W_i, 3)`` uint8 tensors on one device) with ONE
    :func:`models.pose.geometry.crop_persons_batched` call; per image its :class:`Crops`, whose
    ``images`` are ``(N_i, h, w, 3)`` uint8 views of one batch on that device."""
    found = [regions(p, input_size) for p in persons]
    counts = [len(p) for p in persons]
    device = images[0].device if images else torch.device("cpu")
    w, h = input_size
    if sum(counts) == 0:
        batch = torch.empty((0, h, w, 3), dtype=torch.uint8, device=device)
    else:
        batch = geometry.crop_persons_batched(
            images,
            np.repeat(np.arange(len(images)), counts),
            np.concatenate([c for c, _ in found]),
            np.concatenate([s for _, s in found]),
            input_size,
        )
    starts = np.concatenate([[0], np.cumsum(counts)])
    return [
        _crops(batch[int(a) : int(b)], p, c, s)
        for a, b, p, (c, s) in zip(starts[:-1], starts[1:], persons, found, strict=True)
    ]
