"""Predictor: images + person boxes -> keypoints in image pixels.

The pose stages of the one inference path: :class:`models.inference.pipeline.PosePipeline` (the
offline CLI, the training evaluation) runs them through :meth:`Predictor.poses`, the service's
dynamic batcher calls them one by one, so what is measured offline is what is served. Three stages,
each written once here:

1. :meth:`crop` (cv2 on the CPU, per image) or :meth:`crop_many` (also: all images at once,
   one batched warp on the device): boxes -> regions -> uint8 RGB crops of the input size.
2. :meth:`heatmaps` (device, any batch of crops): colour order, normalisation, forward pass
   (channels_last; AMP on CUDA), flip-test merge. The only place that enters
   ``torch.inference_mode``.
3. :meth:`decode` (device, then numpy): heatmaps -> input pixels -> image pixels.

:class:`~models.pose.crops.Crops` (:mod:`models.pose.crops`, re-exported here) joins the crops of
many images into one batch and :func:`~models.pose.crops.split` regroups a batch's results per
image.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from models.pose import geometry
from models.pose.codec import flip_merge
from models.pose.crops import (
    Crops,
    Pixels,
    check_image,
    cut,
    cut_batched,
    device_pixels,
    host_pixels,
    split,
)
from models.pose.network import fold_batchnorm
from models.pose.persons import PersonBoxes, PersonResult
from models.runtime import backends

if TYPE_CHECKING:
    from models.weights.checkpoint import ModelBundle
    from models.weights.model_config import ModelConfig


def normalize_crops(crops: Pixels, config: ModelConfig, device: torch.device) -> torch.Tensor:
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
        bundle: a loaded checkpoint (:func:`models.weights.checkpoint.load`): model + config.
        device: where to run; ``None`` = CUDA when available, else CPU.
        flip_test: default for flip-test averaging.
        decode_mode: default decode mode; ``None`` = the checkpoint's own default.
        amp: autocast on CUDA (bf16 where supported, else fp16); ``None`` = on for CUDA.
        backend: who runs the forward call, one of :data:`models.runtime.backends.BACKENDS`.
        batch_buckets: pad each forward call to one of these batch sizes
            (:class:`models.runtime.backends.Bucketed`); ``()`` = run every batch at its own size.
        onnx_path: the ``.onnx`` file the ``onnxruntime`` backend runs (e.g. INT8), instead of
            exporting the model (:func:`models.runtime.backends.create`).
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
        onnx_path: str | None = None,
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
        # Its own copy with BatchNorm folded (``bundle.model`` is left as it is: training
        # passes its live model), channels_last on every device: cuDNN and oneDNN both run
        # convolutions faster in it (BENCHMARKS.md, "The pose network on the CPU").
        self.model = (
            fold_batchnorm(bundle.model).to(self.device).to(memory_format=torch.channels_last)
        )
        # The forward call only (models/runtime/backends.py); everything around it stays here.
        self.forward = backends.create(
            backend,
            self.model,
            self.config,
            device=self.device,
            onnx_path=onnx_path,
            source=bundle.model,
        )
        if batch_buckets:
            self.forward = backends.Bucketed(self.forward, batch_buckets)

    # -- stage 1 -------------------------------------------------------------------------
    def crop(
        self, image: np.ndarray, boxes: PersonBoxes | np.ndarray | Sequence[Any] | None = None
    ) -> Crops:
        """Cut the persons out of one image, one ``cv2.warpAffine`` each.

        Args:
            image: ``(H, W, 3)`` uint8 RGB numpy, image pixels.
            boxes: :class:`~models.pose.persons.PersonBoxes`; or ``(N, 4)`` ``[x1, y1, x2, y2]``
                image px given by the caller (validated here); or ``None`` for the whole image.

        Raises:
            ValueError: not an RGB uint8 image; :class:`~models.pose.persons.BoxError` for bad
            boxes.
        """
        persons = _persons(boxes, *check_image(image))
        return cut(image, persons, self.input_size)

    def crop_many(
        self,
        images: Sequence[Pixels],
        boxes: Sequence[PersonBoxes | np.ndarray | Sequence[Any] | None],
        *,
        on_device: bool,
    ) -> list[Crops]:
        """Cut the persons out of several images (:meth:`crop`'s ``boxes`` per image).

        Args:
            images: ``(H, W, 3)`` uint8 RGB, numpy or torch (any device), image pixels.
            on_device: ``True``: all persons with ONE batched warp
                (:func:`models.pose.crops.cut_batched`) on this predictor's device (each image moved
                there once as uint8; the crops stay there as tensors); ``False``: cv2 per
                person on the CPU (:meth:`crop`; tensors are copied to the host first).

        Returns:
            Per image its :class:`~models.pose.crops.Crops` (numpy or tensor ``images``).

        Raises:
            ValueError: not an RGB uint8 image, or ``len(boxes) != len(images)``;
            :class:`~models.pose.persons.BoxError` for bad boxes.
        """
        if len(boxes) != len(images):
            raise ValueError(f"got {len(images)} images but {len(boxes)} box lists")
        persons = [_persons(b, *check_image(im)) for im, b in zip(images, boxes, strict=True)]
        if not on_device:
            return [
                cut(host_pixels(im), p, self.input_size)
                for im, p in zip(images, persons, strict=True)
            ]
        moved = [device_pixels(im, self.device) for im in images]
        return cut_batched(moved, persons, self.input_size)

    # -- stage 2 -------------------------------------------------------------------------
    @torch.inference_mode()
    def heatmaps(
        self,
        crops: Pixels,
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
        """Keypoints of every person in every image, with one forward pass for all crops:
        :meth:`crop` per image, then :meth:`poses`.

        Args:
            images: ``(H, W, 3)`` uint8 RGB arrays.
            boxes: per image what :meth:`crop` takes (``None``: the whole image); ``None`` for
                the list = whole images everywhere.
            return_heatmaps: keep each person's ``(K, H, W)`` heatmaps in the result.
            flip_test, decode_mode: ``None`` = this predictor's defaults.

        Returns:
            Per image, per person (in box order) a :class:`~models.pose.persons.PersonResult`.
        """
        if boxes is not None and len(boxes) != len(images):
            raise ValueError(f"got {len(images)} images but {len(boxes)} box lists")
        crops = [self.crop(im, None if boxes is None else boxes[i]) for i, im in enumerate(images)]
        return self.poses(
            crops, flip_test=flip_test, decode_mode=decode_mode, return_heatmaps=return_heatmaps
        )

    def poses(
        self,
        crops: Sequence[Crops],
        *,
        flip_test: bool | None = None,
        decode_mode: str | None = None,
        return_heatmaps: bool = False,
        max_batch_size: int | None = None,
    ) -> list[list[PersonResult]]:
        """Stages 2 and 3 over every image's crops (stage 1's output): forward passes of at
        most ``max_batch_size`` crops (``None``: all in one), decoding, persons regrouped per
        image. The service's batcher calls the same stages one by one
        (:mod:`app.engine.batch_worker`), batching crops across requests.

        Args:
            crops: per image its :class:`~models.pose.crops.Crops` (maybe none).
            flip_test, decode_mode: ``None`` = this predictor's defaults.
            return_heatmaps: keep each person's ``(K, H, W)`` heatmaps in the result.

        Returns:
            Per image, per crop (in crop order) a :class:`~models.pose.persons.PersonResult`,
            keypoints in image pixels.
        """
        counts = [len(c) for c in crops]
        total = sum(counts)
        if total == 0:
            return [[] for _ in crops]
        batch = Crops.concat(crops)
        step = max_batch_size or total
        people: list[PersonResult] = []
        for start in range(0, total, step):
            sl = slice(start, start + step)
            hm = self.heatmaps(batch.images[sl], flip_test)
            kps, scores = self.decode(hm, batch.centers[sl], batch.scales[sl], decode_mode)
            hm_np = hm.cpu().numpy() if return_heatmaps else None
            for j in range(len(kps)):
                heat = None if hm_np is None else hm_np[j]
                people.append(batch.result(start + j, kps[j], scores[j], heat))
        return split(people, counts)


def _persons(
    boxes: PersonBoxes | np.ndarray | Sequence[Any] | None, width: int, height: int
) -> PersonBoxes:
    """:meth:`Predictor.crop`'s ``boxes`` as :class:`~models.pose.persons.PersonBoxes` (plain boxes
    validated, ``None`` = the whole ``width x height`` image)."""
    if boxes is None:
        return PersonBoxes.whole_image(width, height)
    if isinstance(boxes, PersonBoxes):
        return boxes
    return PersonBoxes.from_client(boxes, width, height)
