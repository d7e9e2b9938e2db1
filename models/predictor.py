"""Predictor: images + person boxes -> keypoints in image pixels.

The one inference path: the training evaluation and the service both call it, so what is
measured offline is what is served. Three stages, composed by :meth:`Predictor.predict`
and called one by one by the service's dynamic batcher:

1. :meth:`crop` (CPU, per image): boxes -> regions -> uint8 RGB crops of the input size.
2. :meth:`heatmaps` (device, any batch of crops): colour order, normalisation, forward pass
   (channels_last; AMP on CUDA), flip-test merge.
3. :meth:`decode` (device, then numpy): heatmaps -> input pixels -> image pixels.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from models import backends, geometry
from models.codec import flip_merge

if TYPE_CHECKING:
    from models.checkpoint import ModelBundle
    from models.model_config import ModelConfig


@dataclass
class Crops:
    """Person crops cut out of one image.

    Attributes:
        images: ``(N, h, w, 3)`` uint8 RGB crops of the model's input size.
        centers: ``(N, 2)`` region centres, image pixels.
        scales: ``(N, 2)`` region sizes ``(w, h)``, image pixels.
        boxes: ``(N, 4)`` the person boxes ``[x1, y1, x2, y2]``, image pixels.
    """

    images: np.ndarray
    centers: np.ndarray
    scales: np.ndarray
    boxes: np.ndarray


@dataclass
class PersonPose:
    """One person's result.

    Attributes:
        box: ``(4,)`` ``[x1, y1, x2, y2]`` image pixels.
        keypoints: ``(K, 2)`` ``(x, y)`` image pixels.
        scores: ``(K,)`` heatmap maxima.
        center: ``(2,)`` and ``scale``: ``(2,)`` the cropped region, image pixels.
        heatmaps: ``(K, H, W)`` float32 when asked for, else ``None``.
    """

    box: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    heatmaps: np.ndarray | None = None


def to_input(crops: torch.Tensor, config: ModelConfig, device: torch.device) -> torch.Tensor:
    """The network's input convention, for inference and training alike.

    Args:
        crops: ``(B, h, w, 3)`` uint8 RGB crops (input px), on any device.
        config: gives the colour order and the mean/std (network channel order, 0..255 scale).
        device: where the result lives.

    Returns:
        ``(B, 3, h, w)`` float32 normalised, channels_last, on ``device``.
    """
    x = crops.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    if config.color_order == "BGR":
        x = x.flip(1)
    mean = torch.tensor(config.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(config.std, device=device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def default_device() -> torch.device:
    """CUDA when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def parse_boxes(boxes: np.ndarray | list | None, width: int, height: int) -> np.ndarray:
    """``(N, 4)`` float64 ``[x1, y1, x2, y2]`` boxes; ``None`` = the whole image as one box."""
    if boxes is None:
        return np.array([[0.0, 0.0, float(width), float(height)]])
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not np.isfinite(b).all():
        raise ValueError("boxes must be finite numbers")
    if ((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])).any():
        raise ValueError("boxes must have x2 > x1 and y2 > y1")
    return b


class Predictor:
    """Top-down inference with one model.

    Args:
        bundle: a loaded checkpoint (:func:`models.checkpoint.load`): model + config.
        device: where to run; ``None`` = CUDA when available, else CPU.
        flip_test: default for flip-test averaging.
        decode_mode: default decode mode; ``None`` = the checkpoint's own default.
        amp: autocast on CUDA (bf16 where supported, else fp16); ``None`` = on for CUDA.
        backend: who runs the forward call, one of :data:`models.backends.BACKENDS`.
    """

    def __init__(
        self,
        bundle: ModelBundle,
        device: torch.device | str | None = None,
        flip_test: bool = True,
        decode_mode: str | None = None,
        amp: bool | None = None,
        backend: str = "torch",
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

    # -- stage 1 -------------------------------------------------------------------------
    def crop(self, image: np.ndarray, boxes: np.ndarray | list | None = None) -> Crops:
        """Cut the persons out of one image.

        Args:
            image: ``(H, W, 3)`` uint8 RGB, image pixels.
            boxes: ``(N, 4)`` ``[x1, y1, x2, y2]`` image pixels, or ``None`` for the whole image.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        b = parse_boxes(boxes, image.shape[1], image.shape[0])
        centers, scales = geometry.box_to_center_scale(geometry.xyxy_to_xywh(b), self.input_size)
        w, h = self.input_size
        out = np.empty((len(b), h, w, 3), np.uint8)
        for i in range(len(b)):
            out[i] = geometry.crop_person(image, centers[i], scales[i], self.input_size)
        return Crops(out, centers.reshape(-1, 2), scales.reshape(-1, 2), b)

    # -- stage 2 -------------------------------------------------------------------------
    def to_input(self, crops: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``(B, h, w, 3)`` uint8 RGB -> ``(B, 3, h, w)`` normalised float on the device."""
        if isinstance(crops, np.ndarray):
            crops = torch.from_numpy(np.ascontiguousarray(crops))
        if self.device.type == "cuda" and crops.device.type == "cpu":
            crops = crops.pin_memory()
        return to_input(crops, self.config, self.device)

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
        x = self.to_input(crops)
        b = x.shape[0]
        mask = np.broadcast_to(
            np.asarray(self.flip_test if flip is None else flip, dtype=bool), (b,)
        )
        idx = torch.from_numpy(np.nonzero(mask)[0]).to(self.device)
        if len(idx):
            x = torch.cat([x, x.index_select(0, idx).flip(-1)])
        amp = torch.autocast("cuda", dtype=self.amp_dtype) if self.amp else contextlib.nullcontext()
        with amp:
            out = self.forward(x)
        out = out.float()
        hm = out[:b]
        if len(idx):
            hm = hm.clone()
            hm[idx] = flip_merge(hm.index_select(0, idx), out[b:], self.spec)
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
        images: list[np.ndarray],
        boxes: list[np.ndarray | list | None] | None = None,
        return_heatmaps: bool = False,
        flip_test: bool | None = None,
        decode_mode: str | None = None,
    ) -> list[list[PersonPose]]:
        """Keypoints of every person in every image, with one forward pass for all crops.

        Args:
            images: ``(H, W, 3)`` uint8 RGB arrays.
            boxes: per image ``(N, 4)`` ``[x1, y1, x2, y2]`` image pixels, or ``None`` (whole
                image); ``None`` for the list = whole images everywhere.
            return_heatmaps: keep each person's ``(K, H, W)`` heatmaps in the result.
        """
        if boxes is not None and len(boxes) != len(images):
            raise ValueError(f"got {len(images)} images but {len(boxes)} box lists")
        crops = [self.crop(im, None if boxes is None else boxes[i]) for i, im in enumerate(images)]
        counts = [len(c.images) for c in crops]
        if sum(counts) == 0:
            return [[] for _ in images]
        batch = np.concatenate([c.images for c in crops])
        centers = np.concatenate([c.centers for c in crops])
        scales = np.concatenate([c.scales for c in crops])
        hm = self.heatmaps(batch, flip_test)
        kps, scores = self.decode(hm, centers, scales, decode_mode)
        hm_np = hm.cpu().numpy() if return_heatmaps else None
        out: list[list[PersonPose]] = []
        start = 0
        for c, n in zip(crops, counts, strict=True):
            people = []
            for j in range(start, start + n):
                people.append(
                    PersonPose(
                        box=c.boxes[j - start],
                        keypoints=kps[j],
                        scores=scores[j],
                        center=centers[j],
                        scale=scales[j],
                        heatmaps=None if hm_np is None else hm_np[j],
                    )
                )
            out.append(people)
            start += n
        return out
