"""Predictor: images + person boxes -> keypoints in image pixels.

The one inference path: the training evaluation and the service both call it, so what is
measured offline is what is served. Three stages, composed by :meth:`Predictor.predict`
and called one by one by the service's dynamic batcher:

1. :meth:`crop` (CPU, per image): boxes -> regions -> uint8 RGB crops of the input size.
2. :meth:`heatmaps` (device, any batch of crops): colour order, normalisation, forward pass
   (channels_last; AMP on CUDA), flip-test merge. The only place that enters
   ``torch.inference_mode``.
3. :meth:`decode` (device, then numpy): heatmaps -> input pixels -> image pixels.

:class:`Crops` joins the crops of many images into one batch (:meth:`Crops.concat`) and turns
the batch's decoded outputs back into :class:`~models.persons.PersonResult` objects, which
:func:`split` regroups per image: the one copy of that bookkeeping, used by :meth:`predict` and
by the service.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from models import backends, geometry
from models.codec import flip_merge
from models.persons import BoxSource, PersonBoxes, PersonResult

if TYPE_CHECKING:
    from models.checkpoint import ModelBundle
    from models.model_config import ModelConfig

T = TypeVar("T")


@dataclass
class Crops:
    """Person crops cut out of one image (or, after :meth:`concat`, of many).

    Attributes:
        images: ``(N, h, w, 3)`` uint8 RGB crops of the model's input size.
        centers: ``(N, 2)`` region centres, image pixels.
        scales: ``(N, 2)`` region sizes ``(w, h)``, image pixels.
        boxes: ``(N, 4)`` the person boxes ``[x1, y1, x2, y2]``, image pixels.
        box_scores: ``(N,)`` float64 detector confidences, NaN where the box was not detected.
        box_sources: ``N`` :data:`~models.persons.BoxSource` values, one per crop.
    """

    images: np.ndarray
    centers: np.ndarray
    scales: np.ndarray
    boxes: np.ndarray
    box_scores: np.ndarray
    box_sources: tuple[BoxSource, ...]

    def __len__(self) -> int:
        return len(self.images)

    @staticmethod
    def concat(parts: Sequence[Crops]) -> Crops:
        """The crops of several images as one batch, in order (``parts`` must not be empty)."""
        return Crops(
            images=np.concatenate([p.images for p in parts]),
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


def normalize_crops(
    crops: np.ndarray | torch.Tensor, config: ModelConfig, device: torch.device
) -> torch.Tensor:
    """uint8 RGB crops -> the network's normalised input, for inference and training alike.

    Args:
        crops: ``(B, h, w, 3)`` uint8 RGB crops (input px), numpy or torch on any device
            (CPU tensors bound for CUDA are pinned first, so the copy can overlap).
        config: gives the colour order and the mean/std (network channel order, 0..255 scale).
        device: where the result lives.

    Returns:
        ``(B, 3, h, w)`` float32 normalised, channels_last, on ``device``.
    """
    x = _uint8_on(crops, device)
    if config.color_order == "BGR":
        x = x.flip(-1)
    # One pass over rows of pixels: (B, h, w, 3) viewed as (B*h, w*3), the mean and std tiled
    # along a row, so the broadcast runs over a long contiguous axis instead of one of size 3
    # (about 4x less CPU than broadcasting over the channel axis; the same float32 arithmetic).
    b, h, w, c = x.shape
    mean, std = _tiled_mean_std(tuple(config.mean or ()), tuple(config.std or ()), w, device)
    rows = x.reshape(b * h, w * c).to(torch.float32)
    rows.sub_(mean).div_(std)
    # (B, h, w, 3) float is (B, 3, h, w) channels_last: no further copy.
    return rows.view(b, h, w, c).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def _uint8_on(crops: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """``(B, h, w, 3)`` uint8 crops as a contiguous tensor on ``device`` (CPU tensors bound for
    CUDA are pinned first, so the copy can overlap)."""
    if isinstance(crops, np.ndarray):
        crops = torch.from_numpy(np.ascontiguousarray(crops))
    if device.type == "cuda" and crops.device.type == "cpu":
        crops = crops.pin_memory()
    return crops.to(device, non_blocking=True).contiguous()


@functools.lru_cache(maxsize=16)
def _tiled_mean_std(
    mean: tuple[float, ...], std: tuple[float, ...], width: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(width * 3,)`` float32 mean and std repeated once per pixel of a crop row."""
    m = torch.tensor(mean, dtype=torch.float32).repeat(width).to(device)
    s = torch.tensor(std, dtype=torch.float32).repeat(width).to(device)
    return m, s


def default_device() -> torch.device:
    """CUDA when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Predictor:
    """Top-down inference with one model.

    Args:
        bundle: a loaded checkpoint (:func:`models.checkpoint.load`): model + config.
        device: where to run; ``None`` = CUDA when available, else CPU.
        flip_test: default for flip-test averaging.
        decode_mode: default decode mode; ``None`` = the checkpoint's own default.
        amp: autocast on CUDA (bf16 where supported, else fp16); ``None`` = on for CUDA.
        backend: who runs the forward call, one of :data:`models.backends.BACKENDS`.
        batch_buckets: pad each forward call to one of these batch sizes
            (:class:`models.backends.Bucketed`); ``()`` = run every batch at its own size.
    """

    def __init__(
        self,
        bundle: ModelBundle,
        device: torch.device | str | None = None,
        flip_test: bool = True,
        decode_mode: str | None = None,
        amp: bool | None = None,
        backend: str = "torch",
        batch_buckets: Sequence[int] = (),
    ) -> None:
        self.config = bundle.config
        self.spec = bundle.config.spec
        self.codec = bundle.config.codec
        self.input_size: tuple[int, int] = tuple(self.codec.input_size)  # type: ignore[assignment]
        self.device = torch.device(device) if device is not None else default_device()
        self.flip_test = flip_test
        self.decode_mode = decode_mode or bundle.config.decode_mode
        cuda = self.device.type == "cuda"
        self.amp = cuda if amp is None else (amp and cuda)
        self.amp_dtype = (
            torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
        )
        # channels_last on every device: cuDNN and oneDNN both run convolutions faster in it
        # (about 1.45x for ResNet-50 on a 2-core CPU, benchmarks/bench_service.py).
        self.model = bundle.model.to(self.device).eval().to(memory_format=torch.channels_last)
        # The forward call only (models/backends.py); everything around it stays here.
        self.forward = backends.create(backend, self.model, self.config, device=self.device)
        if batch_buckets:
            self.forward = backends.Bucketed(self.forward, batch_buckets)

    # -- stage 1 -------------------------------------------------------------------------
    def crop(
        self, image: np.ndarray, boxes: PersonBoxes | np.ndarray | Sequence[Any] | None = None
    ) -> Crops:
        """Cut the persons out of one image.

        Args:
            image: ``(H, W, 3)`` uint8 RGB, image pixels.
            boxes: :class:`~models.persons.PersonBoxes`; or ``(N, 4)`` ``[x1, y1, x2, y2]``
                image px given by the caller (validated here); or ``None`` for the whole image.

        Raises:
            ValueError: not an RGB uint8 image; :class:`~models.persons.BoxError` for bad boxes.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        height, width = image.shape[:2]
        if boxes is None:
            boxes = PersonBoxes.whole_image(width, height)
        elif not isinstance(boxes, PersonBoxes):
            boxes = PersonBoxes.from_client(boxes, width, height)
        b = boxes.boxes
        w, h = self.input_size
        out = np.empty((len(b), h, w, 3), np.uint8)
        if len(b) == 0:
            centers = scales = np.zeros((0, 2))
        else:
            xywh = geometry.xyxy_to_xywh(b)
            centers, scales = geometry.box_to_center_scale(xywh, self.input_size)
        for i in range(len(b)):
            out[i] = geometry.crop_person(image, centers[i], scales[i], self.input_size)
        box_scores = np.full(len(b), np.nan) if boxes.scores is None else boxes.scores
        return Crops(
            images=out,
            centers=centers.reshape(-1, 2),
            scales=scales.reshape(-1, 2),
            boxes=b,
            box_scores=np.asarray(box_scores, dtype=np.float64),
            box_sources=(boxes.source,) * len(b),
        )

    # -- stage 2 -------------------------------------------------------------------------
    @torch.inference_mode()
    def heatmaps(
        self,
        crops: np.ndarray | torch.Tensor,
        flip: np.ndarray | bool | None = None,
    ) -> torch.Tensor:
        """Forward a batch of crops; flip-test merge where asked.

        Args:
            crops: ``(B, h, w, 3)`` uint8 RGB crops.
            flip: per crop ``(B,)`` bools, one bool for all, or ``None`` for the default.

        Returns:
            ``(B, K, H, W)`` float32 heatmaps on the device (heatmap pixels).
        """
        u8 = _uint8_on(crops, self.device)
        b = u8.shape[0]
        mask = np.broadcast_to(
            np.asarray(self.flip_test if flip is None else flip, dtype=bool), (b,)
        )
        idx = np.nonzero(mask)[0]
        if len(idx):
            # The mirrored crops are made from the uint8 crops (a quarter of the bytes), then
            # normalised with the rest in one pass: the same values as mirroring the input.
            flipped = (
                u8 if len(idx) == b else u8.index_select(0, torch.from_numpy(idx).to(u8.device))
            )
            u8 = torch.cat([u8, flipped.flip(2)])
        x = normalize_crops(u8, self.config, self.device)
        amp = torch.autocast("cuda", dtype=self.amp_dtype) if self.amp else contextlib.nullcontext()
        with amp:
            out = self.forward(x)
        out = out.float()
        hm = out[:b]
        if len(idx) == b:
            hm = flip_merge(hm, out[b:], self.spec)
        elif len(idx):
            at = torch.from_numpy(idx).to(out.device)
            hm = hm.clone()
            hm[at] = flip_merge(hm.index_select(0, at), out[b:], self.spec)
        return hm

    # -- stage 3 -------------------------------------------------------------------------
    def decode(
        self,
        heatmaps: torch.Tensor,
        centers: np.ndarray,
        scales: np.ndarray,
        mode: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Heatmaps -> keypoints in image pixels.

        Args:
            heatmaps: ``(B, K, H, W)`` on any device.
            centers, scales: ``(B, 2)`` the regions the crops were cut from, image pixels.
            mode: ``dark`` | ``shift`` | ``argmax``; ``None`` = this predictor's default.

        Returns:
            keypoints ``(B, K, 2)`` float32 image pixels and scores ``(B, K)`` float32.
        """
        kp, scores = self.codec.decode(heatmaps, mode=mode or self.decode_mode)
        kp_np = kp.detach().float().cpu().numpy()
        img = geometry.crop_to_image(kp_np, centers, scales, self.input_size)
        return img.astype(np.float32), scores.detach().float().cpu().numpy()

    # -- all three -----------------------------------------------------------------------
    def predict(
        self,
        images: Sequence[np.ndarray],
        boxes: Sequence[PersonBoxes | np.ndarray | Sequence[Any] | None] | None = None,
        *,
        return_heatmaps: bool = False,
        flip_test: bool | None = None,
        decode_mode: str | None = None,
    ) -> list[list[PersonResult]]:
        """Keypoints of every person in every image, with one forward pass for all crops.

        Args:
            images: ``(H, W, 3)`` uint8 RGB arrays.
            boxes: per image what :meth:`crop` takes (``None``: the whole image); ``None`` for
                the list = whole images everywhere.
            return_heatmaps: keep each person's ``(K, H, W)`` heatmaps in the result.
            flip_test, decode_mode: ``None`` = this predictor's defaults.

        Returns:
            Per image, per person (in box order) a :class:`~models.persons.PersonResult`.
        """
        if boxes is not None and len(boxes) != len(images):
            raise ValueError(f"got {len(images)} images but {len(boxes)} box lists")
        crops = [self.crop(im, None if boxes is None else boxes[i]) for i, im in enumerate(images)]
        counts = [len(c) for c in crops]
        if sum(counts) == 0:
            return [[] for _ in images]
        batch = Crops.concat(crops)
        hm = self.heatmaps(batch.images, flip_test)
        kps, scores = self.decode(hm, batch.centers, batch.scales, decode_mode)
        hm_np = hm.cpu().numpy() if return_heatmaps else None
        people = [
            batch.result(j, kps[j], scores[j], None if hm_np is None else hm_np[j])
            for j in range(len(batch))
        ]
        return split(people, counts)
