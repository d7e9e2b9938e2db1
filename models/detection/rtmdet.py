"""RTMDet person detectors: OpenMMLab's published person-only RTMDet-nano / RTMDet-m weights.

:class:`RTMDetector` loads mmdet's checkpoint as published (``{'meta', 'state_dict'}``, read by
:func:`models.weights.checkpoint.read_state_dict`) or our ``.safetensors`` copy of it, folds
BatchNorm into the convolutions, and runs the configs' test pipeline:

1. keep-ratio resize of each RGB image to fit the square input ``S`` (OpenCV bilinear; new
   size ``int(side * S / longest + 0.5)``, as mmcv's ``imrescale``), pad bottom/right with
   114 to ``S x S``, BGR order, ``(x - mean) / std`` (mmdet's ``DetDataPreprocessor``);
   on CUDA the same letterbox runs on the device (torch bilinear, rounded to uint8 levels);
2. one forward pass of :class:`~models.detection.rtmdet_net.RTMDetNet` for the batch (static shape
   ``(B, 3, S, S)``): sigmoid person scores and decoded boxes for every prior point;
3. per image: scores ``>= score_thr``, at most ``nms_pre`` (1000) best per level, boxes
   divided by the image's resize factors ``(sx, sy)`` (mmdet's ``scale_factor``), clipped to
   the image, empty boxes dropped (mmdet's ``min_bbox_size`` 0), NMS at ``nms_thr``, the best
   ``max_persons``. The configs' own ``test_cfg`` (score 0.001, IoU 0.65, 300 boxes) is what
   COCO evaluation passes through :data:`models.detection.detector.COCO_PROTOCOL` instead.

Interface used by export and backends: ``network`` (BN folded; ``(B, 3, S, S)`` normalised
input -> ``scores (B, N)``, ``boxes (B, N, 4)`` input px), :meth:`RTMDetector.preprocess`
(-> batch, ``scales (B, 2)`` ``(sx, sy)``, ``sizes (B, 2)`` ``(h, w)``) and
:meth:`RTMDetector.postprocess`, which :meth:`RTMDetector.detect` chains.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from models.detection.detections import Detections, suppress
from models.detection.rtmdet_net import STRIDES, RTMDetArch, RTMDetNet, fold_batchnorm
from models.pose.crops import Pixels, check_image, device_pixels, host_pixels
from models.weights.checkpoint import CheckpointError, check_state_dict, read_state_dict

__all__ = [
    "ARCH_SPECS",
    "RTMDET_ARCHS",
    "RTMDetector",
    "letterbox_cv2",
    "letterbox_size",
    "letterbox_torch",
    "rtmdet_arch",
]

ARCH_SPECS = {
    # rtmdet_nano_320-8xb32_coco-person.py: depthwise everywhere, head convs not shared
    "person-rtmdet-nano": RTMDetArch(0.33, 0.25, True, 1, 64, share_conv=False, input_size=320),
    # rtmdet_m_640-8xb32_coco-person.py (rtmdet_m over rtmdet_l): shared head convs
    "person-rtmdet-m": RTMDetArch(0.67, 0.75, False, 2, 192, share_conv=True, input_size=640),
}
RTMDET_ARCHS = tuple(ARCH_SPECS)
"""The RTMDet detector architectures, by the names the weight zoo uses."""

MEAN_BGR = (103.53, 116.28, 123.675)
STD_BGR = (57.375, 57.12, 58.395)
PAD_VALUE = 114
NMS_PRE = 1000


def rtmdet_arch(keys: Iterable[str]) -> str | None:
    """The RTMDet architecture whose published state dict has these keys; ``None`` when the
    keys are not an RTMDet's at all.

    Raises:
        CheckpointError: an RTMDet of another size (tiny, s, l, x).
    """
    keys = set(keys)
    if "bbox_head.rtm_cls.0.weight" not in keys or "backbone.stem.0.conv.weight" not in keys:
        return None
    if "backbone.stage1.0.depthwise_conv.conv.weight" in keys:
        return "person-rtmdet-nano"
    blocks = [
        len({k.split(".")[4] for k in keys if k.startswith(f"backbone.stage{i}.1.blocks.")})
        for i in (1, 2)
    ]
    if blocks == [2, 4]:  # round(3 * 0.67), round(6 * 0.67)
        return "person-rtmdet-m"
    raise CheckpointError(
        f"an RTMDet with {blocks[0]} and {blocks[1]} blocks in its first two stages is neither "
        f"of {', '.join(RTMDET_ARCHS)}; heatpose runs those two"
    )


def letterbox_size(height: int, width: int, size: int) -> tuple[int, int]:
    """``(h, w)`` of an image resized to fit ``size x size`` keeping its aspect ratio (mmcv's
    ``rescale_size``: factor ``size / longest side``, sides rounded half up, at least 1)."""
    factor = size / max(height, width)
    return max(int(height * factor + 0.5), 1), max(int(width * factor + 0.5), 1)


def letterbox_cv2(image: np.ndarray, size: int) -> np.ndarray:
    """``(size, size, 3)`` uint8: ``image`` resized (``cv2.INTER_LINEAR``), padded with 114
    at the bottom/right; channels as given."""
    h, w = letterbox_size(image.shape[0], image.shape[1], size)
    out = np.full((size, size, 3), PAD_VALUE, np.uint8)
    out[:h, :w] = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    return out


def letterbox_torch(image: torch.Tensor, size: int) -> torch.Tensor:
    """:func:`letterbox_cv2` on ``image``'s device: ``(H, W, 3)`` uint8 -> ``(3, size, size)``
    float32 in 0..255, channels as given (bilinear, half-pixel centres, no antialiasing, as
    OpenCV; rounded to whole levels as OpenCV's uint8 output is)."""
    h, w = letterbox_size(image.shape[0], image.shape[1], size)
    x = image.permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=False)
    out = torch.full((3, size, size), float(PAD_VALUE), device=image.device)
    out[:, :h, :w] = x[0].round_().clamp_(0, 255)
    return out


class RTMDetector:
    """Person boxes with RTMDet (see the module doc); :meth:`detect` as
    :meth:`models.detection.detector.PersonDetector.detect`.

    Args:
        network: the network, BN folded (:meth:`from_file` builds it).
        arch: one of :data:`RTMDET_ARCHS`.
        device: ``None`` = cuda if available, else cpu.
        nms_pre: at most this many candidates per level before NMS.
    """

    def __init__(
        self,
        network: RTMDetNet,
        arch: str,
        device: str | torch.device | None = None,
        *,
        nms_pre: int = NMS_PRE,
    ) -> None:
        self.device = torch.device(
            device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        )
        self.arch = arch
        self.input_size = network.arch.input_size
        self.nms_pre = nms_pre
        self.network = network.eval().to(self.device)
        self._mean = torch.tensor(MEAN_BGR, device=self.device).reshape(1, 3, 1, 1)
        self._std = torch.tensor(STD_BGR, device=self.device).reshape(1, 3, 1, 1)
        n = [(self.input_size // s) ** 2 for s in STRIDES]
        self._levels = [(sum(n[:i]), sum(n[: i + 1])) for i in range(len(n))]

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        arch: str | None = None,
        device: str | torch.device | None = None,
        **options: int,
    ) -> RTMDetector:
        """A detector from the published ``.pth`` or its ``.safetensors`` copy; ``arch`` (one
        of :data:`RTMDET_ARCHS`) ``None`` = told from the tensors; ``options``: ``nms_pre``.

        Raises:
            CheckpointError: unreadable file, or tensors that are not ``arch``'s (named).
        """
        state = read_state_dict(path)
        return cls.from_state_dict(state, arch, device, source=str(path), **options)

    @classmethod
    def from_state_dict(
        cls,
        state: dict[str, torch.Tensor],
        arch: str | None = None,
        device: str | torch.device | None = None,
        *,
        source: str = "the state dict",
        **options: int,
    ) -> RTMDetector:
        """A detector from mmdet's parameter names and shapes, every tensor used (BatchNorm's
        ``num_batches_tracked`` counters, which inference does not use, are ignored)."""
        state = {k: v for k, v in state.items() if not k.endswith(".num_batches_tracked")}
        arch = arch or rtmdet_arch(state)
        if arch not in ARCH_SPECS:
            raise CheckpointError(
                f"{source}: not an RTMDet state dict of {', '.join(RTMDET_ARCHS)} (arch {arch})"
            )
        network = RTMDetNet(ARCH_SPECS[arch])
        expected = {
            k: tuple(v.shape)
            for k, v in network.state_dict().items()
            if not k.endswith(".num_batches_tracked")
        }
        check_state_dict(state, expected, f"{source} is not a {arch} state dict")
        network.load_state_dict(state, strict=False)  # all but the counters, checked above
        return cls(fold_batchnorm(network), arch, device, **options)

    def preprocess(self, images: Sequence[Pixels]) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """The network's input for ``images`` (``(H, W, 3)`` uint8 RGB, any sizes, numpy or
        torch on any device; never written).

        Returns:
            ``batch (B, 3, S, S)`` float32 on the device (normalised BGR), ``scales (B, 2)``
            float64 ``(sx, sy)`` = resized / original side, ``sizes (B, 2)`` int ``(h, w)``.
        """
        size = self.input_size
        sizes = np.array([check_image(im)[::-1] for im in images], np.int64).reshape(-1, 2)
        resized = np.array([letterbox_size(h, w, size) for h, w in sizes]).reshape(-1, 2)
        scales = resized[:, ::-1] / sizes[:, ::-1]
        if self.device.type == "cpu":
            boxed = np.stack([letterbox_cv2(host_pixels(im), size) for im in images])
            batch = torch.from_numpy(boxed).permute(0, 3, 1, 2).float()
        else:
            batch = torch.stack(
                [letterbox_torch(device_pixels(im, self.device), size) for im in images]
            )
        batch = batch.flip(1)  # RGB -> BGR, the order the weights were trained in
        return (batch - self._mean) / self._std, scales, sizes

    def postprocess(
        self,
        scores: torch.Tensor | np.ndarray,
        boxes: torch.Tensor | np.ndarray,
        scales: np.ndarray,
        sizes: np.ndarray,
        *,
        score_thr: float,
        nms_thr: float,
        max_persons: int,
    ) -> list[Detections]:
        """Each image's persons from the network's ``scores (B, N)`` and ``boxes (B, N, 4)``
        (input px), ``scales``/``sizes`` from :meth:`preprocess`: see the module doc, step 3.
        Works where the tensors are (numpy arrays are read on the CPU)."""
        scores, boxes = torch.as_tensor(scores).float(), torch.as_tensor(boxes).float()
        out = []
        for b in range(scores.shape[0]):
            keep = []
            for start, stop in self._levels:
                level = scores[b, start:stop]
                idx = torch.nonzero(level >= score_thr).flatten()
                top = level[idx].argsort(descending=True)[: self.nms_pre]
                keep.append(idx[top] + start)
            sel = torch.cat(keep)
            sx, sy = scales[b]
            h, w = sizes[b]
            factor = torch.tensor([sx, sy, sx, sy], dtype=torch.float32, device=boxes.device)
            found = boxes[b, sel] / factor
            found[:, 0::2] = found[:, 0::2].clamp(0, float(w))
            found[:, 1::2] = found[:, 1::2].clamp(0, float(h))
            score = scores[b, sel]
            ok = (found[:, 2] > found[:, 0]) & (found[:, 3] > found[:, 1])
            out.append(suppress(found[ok], score[ok], nms_thr, max_persons))
        return out

    @torch.inference_mode()
    def detect(
        self,
        images: Sequence[Pixels],
        score_thr: float = 0.3,
        nms_thr: float = 0.3,
        max_persons: int = 100,
        *,
        forward: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> list[Detections]:
        """Persons in each image, one forward pass for all ``images`` (the meaning of
        :meth:`models.detection.detector.PersonDetector.detect`: boxes ``[x1, y1, x2, y2]`` in each
        image's pixels, best first; scores ``>= score_thr``; NMS IoU ``nms_thr``).

        ``forward`` runs the network on the preprocessed ``(B, 3, S, S)`` batch and returns
        ``scores (B, N)`` and ``boxes (B, N, 4)`` in input pixels; ``None`` = :attr:`network`
        (a :class:`models.detection.detector_backends.ServedDetector` passes its backend and
        buckets).
        """
        if not images:
            return []
        batch, scales, sizes = self.preprocess(images)
        scores, boxes = (forward or self.network)(batch)
        return self.postprocess(
            scores,
            boxes,
            scales,
            sizes,
            score_thr=score_thr,
            nms_thr=nms_thr,
            max_persons=max_persons,
        )
