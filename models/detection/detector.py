"""Person detection: boxes of the people in whole images, ahead of the top-down pose model.

:class:`PersonDetector` runs one of torchvision's COCO detection models (no extra dependency;
weights in torchvision's state-dict layout, read by
:func:`models.weights.checkpoint.read_state_dict`):

- ``person-rcnn-r50-fpn``: Keypoint R-CNN ResNet-50-FPN (classes: background, person), loaded
  whole and run without its keypoint branch: only the boxes are used, the keypoint head is not
  paid for.
- ``person-frcnn-mbv3``: Faster R-CNN MobileNetV3-Large-FPN (91 COCO classes), person kept.

Both models are built as torchvision builds them for its published weights (frozen
BatchNorm, with eps 0 for the Keypoint R-CNN file as torchvision sets it), without downloading
anything. The box classifier is narrowed to *person vs the
rest*: its person probability is the softmax over all classes, as torchvision computes it, but
only person boxes are decoded and suppressed, so the thresholds below mean exactly what they
say whatever the number of classes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import (
    fasterrcnn_mobilenet_v3_large_fpn,
    keypointrcnn_resnet50_fpn,
)
from torchvision.ops import FrozenBatchNorm2d

from models.detection.detections import Detections, suppress
from models.detection.rtmdet import RTMDET_ARCHS, RTMDetector, rtmdet_arch
from models.pose.crops import Pixels, device_pixels
from models.weights.checkpoint import CheckpointError, check_state_dict, read_state_dict
from models.weights.zoo import ENTRIES, ZooEntry, resolve

__all__ = [
    "ARCHS",
    "COCO_PROTOCOL",
    "Detections",
    "PersonDetector",
    "build_torchvision_model",
    "guess_arch",
    "load_detector",
    "suppress",
]

PERSON_LABEL = 1
"""COCO's person category id, the label torchvision's COCO detectors give persons."""

# arch -> (torchvision builder, its arguments, eps of the frozen BatchNorm as torchvision runs
# the published weights: its builder sets 0.0 for the Keypoint R-CNN COCO_V1 file)
_BUILDERS: dict[str, tuple[Callable[..., Any], dict[str, int], float]] = {
    "person-rcnn-r50-fpn": (
        keypointrcnn_resnet50_fpn,
        {"num_classes": 2, "num_keypoints": 17},
        0.0,
    ),
    "person-frcnn-mbv3": (fasterrcnn_mobilenet_v3_large_fpn, {"num_classes": 91}, 1e-5),
}
ARCHS = tuple(_BUILDERS)
"""The detector architectures, by the names the weight zoo uses."""

COCO_PROTOCOL = {"score_thr": 0.0, "nms_thr": 0.5, "max_persons": 100}
"""``detect`` arguments for COCO evaluation: every box (threshold 0), torchvision's NMS 0.5,
COCO's 100 detections an image; OKS-NMS after the pose model removes the duplicates."""


def build_torchvision_model(arch: str, **kwargs: Any) -> nn.Module:
    """torchvision's model for ``arch`` as built for its published COCO weights: random init,
    nothing downloaded, every BatchNorm frozen (as torchvision's builders do with weights).

    ``kwargs`` go to the torchvision builder (``min_size``, ``max_size``, ...).
    """
    if arch not in _BUILDERS:
        raise ValueError(f"unknown detector arch {arch!r}; use one of {', '.join(ARCHS)}")
    builder, classes, eps = _BUILDERS[arch]
    model = builder(weights=None, weights_backbone=None, **classes, **kwargs)
    _freeze_batchnorm(model, eps)
    return model.eval()


def _freeze_batchnorm(module: nn.Module, eps: float) -> None:
    """Replace every ``BatchNorm2d`` by ``FrozenBatchNorm2d(eps=eps)``, as the builders do when
    given weights; the state-dict keys then match the published files."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, FrozenBatchNorm2d(child.num_features, eps=eps))
        else:
            _freeze_batchnorm(child, eps)


def guess_arch(keys: Sequence[str]) -> str:
    """The architecture whose state dict has these keys (Keypoint R-CNN has a keypoint head)."""
    if any(k.startswith("roi_heads.keypoint_head.") for k in keys):
        return "person-rcnn-r50-fpn"
    if any(k.startswith("backbone.body.") and ".block." in k for k in keys):
        return "person-frcnn-mbv3"  # MobileNetV3's inverted residual blocks
    raise CheckpointError(
        f"cannot tell the detector architecture from the keys; expected a torchvision state "
        f"dict of one of {', '.join(ARCHS)}, or an RTMDet one (person-rtmdet-nano, -m)"
    )


def _without_frozen_counters(
    state: dict[str, torch.Tensor], model: nn.Module
) -> dict[str, torch.Tensor]:
    """``state`` less the ``num_batches_tracked`` buffers of ``model``'s frozen BatchNorms:
    ordinary BatchNorm saves them, ``FrozenBatchNorm2d`` ignores them when it loads (as
    torchvision's own loading does); any other unexpected key is still refused."""
    frozen = {n for n, m in model.named_modules() if isinstance(m, FrozenBatchNorm2d)}
    suffix = ".num_batches_tracked"
    return {
        k: v for k, v in state.items() if not (k.endswith(suffix) and k[: -len(suffix)] in frozen)
    }


class _PersonVsRest(nn.Module):
    """Box predictor narrowed to two classes: ``[log-sum-exp of all non-person logits, person
    logit]``, so softmax gives torchvision's person probability; person box deltas only.
    Outputs are float32 (box decoding stays in full precision under AMP)."""

    def __init__(self, predictor: nn.Module) -> None:
        super().__init__()
        self.predictor = predictor

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, deltas = self.predictor(x)
        logits = logits.float()
        person = logits[:, PERSON_LABEL]
        rest = torch.cat([logits[:, :PERSON_LABEL], logits[:, PERSON_LABEL + 1 :]], dim=1)
        two = torch.stack([torch.logsumexp(rest, dim=1), person], dim=1)
        return two, deltas[:, : 4 * (PERSON_LABEL + 1)].float()


class _Float32Outputs(nn.Module):
    """Runs a module and returns its (nested list) outputs as float32 (the RPN head)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        objectness, deltas = self.module(x)
        return [o.float() for o in objectness], [d.float() for d in deltas]


class PersonDetector:
    """Person boxes in whole images with a torchvision detection model (see the module doc).

    Evaluation and the service use a detector only through :meth:`detect`; a test double
    with the same ``detect`` stands in for it.

    Args:
        model: a model from :func:`build_torchvision_model` with its weights loaded; the
            detector adapts it in place (no keypoint head, person-vs-rest box predictor).
        device: ``None`` = cuda if available, else cpu. On CUDA the forward pass runs under
            autocast (fp16); box decoding and scores stay float32.
    """

    def __init__(self, model: nn.Module, device: str | torch.device | None = None) -> None:
        self.device = torch.device(
            device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        )
        heads: Any = model.roi_heads
        if isinstance(heads.box_predictor, _PersonVsRest):
            raise ValueError("this model already belongs to a PersonDetector; build a new one")
        heads.keypoint_roi_pool = heads.keypoint_head = heads.keypoint_predictor = None
        assert not heads.has_keypoint()  # RoIHeads skips the keypoint branch
        heads.box_predictor = _PersonVsRest(heads.box_predictor)
        # Everything a forward pass finds goes out; detect() applies the caller's thresholds.
        heads.score_thresh = -1.0
        heads.nms_thresh = 1.0  # IoU never exceeds 1: no suppression inside the model
        model.eval()
        rpn: Any = model.rpn
        heads.detections_per_img = max(rpn.post_nms_top_n(), 1)  # every proposal
        rpn.head = _Float32Outputs(rpn.head)
        self.model = model.to(self.device)

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        arch: str | None = None,
        device: str | torch.device | None = None,
        *,
        min_size: int = 800,
        max_size: int = 1333,
        **options: Any,
    ) -> PersonDetector:
        """A detector from a torchvision state dict (``.pth`` read with ``weights_only=True``,
        or ``.safetensors``; the published file as is, keypoint head included).

        Args:
            arch: one of :data:`ARCHS`; ``None`` = told from the file's keys.
            min_size, max_size: torchvision's resize (shorter side to ``min_size``, longer at
                most ``max_size``; image px); the defaults are torchvision's.
            options: other options of the torchvision builder (``rpn_post_nms_top_n_test``).

        Raises:
            CheckpointError: unreadable file, or keys/shapes that are not ``arch``'s.
        """
        state = read_state_dict(path)
        arch = arch or guess_arch(list(state))
        if arch not in ARCHS:
            raise CheckpointError(f"unknown detector arch {arch!r}; use one of {ARCHS}")
        model = build_torchvision_model(arch, min_size=min_size, max_size=max_size, **options)
        state = _without_frozen_counters(state, model)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        check_state_dict(state, expected, f"{path} is not a {arch} state dict")
        model.load_state_dict(state, strict=True)
        return cls(model, device)

    @torch.inference_mode()
    def detect(
        self,
        images: Sequence[Pixels],
        score_thr: float = 0.3,
        nms_thr: float = 0.3,
        max_persons: int = 100,
    ) -> list[Detections]:
        """Persons in each image: one forward pass for all ``images``.

        Args:
            images: ``(H, W, 3)`` uint8 RGB, numpy arrays or torch tensors (a tensor already on
                the detector's device is used where it is: no host round trip), sizes may differ
                (torchvision's transform resizes and pads them into one batch); never written.
            score_thr: keep boxes whose person score is ``>= score_thr``.
            nms_thr: IoU above which a lower-scored person box is suppressed.
            max_persons: at most this many boxes an image.

        Returns:
            One :class:`Detections` an image, in order; boxes in that image's pixels, sorted
            by score (best first).
        """
        if not images:
            return []
        # device_pixels: a writable C-contiguous numpy image is shared, not copied; a read-only
        # one (the service's intake images) is copied once, uint8; a tensor on the device stays.
        tensors = [device_pixels(im, self.device).permute(2, 0, 1) for im in images]
        inputs = [t.float().div_(255.0) for t in tensors]
        with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            outputs = self.model(inputs)
        # score >= thr, person labels only (the narrowed predictor has no others)
        floor = math.nextafter(score_thr, -math.inf)
        out = []
        for o in outputs:
            boxes, scores = o["boxes"].float(), o["scores"].float()
            keep = (scores > floor) & (o["labels"] == PERSON_LABEL)
            out.append(suppress(boxes[keep], scores[keep], nms_thr, max_persons))
        return out


def load_detector(
    name_or_path: str | Path,
    device: str | torch.device | None = None,
    *,
    home: str | Path | None = None,
    progress: bool = True,
    entries: Mapping[str, ZooEntry] | None = None,
    **options: Any,
) -> PersonDetector | RTMDetector:
    """A detector from a zoo name (``person-rcnn-r50-fpn``, ``person-rtmdet-m``, fetched and
    cached once) or a local file: an RTMDet state dict (mmdet's names, nano or m told from the
    tensors) gives a :class:`models.detection.rtmdet.RTMDetector`, a torchvision one a
    :class:`PersonDetector` (arch told from its keys); ``options`` go to ``from_file``.

    Raises:
        ZooError: an unknown name or weights that cannot be downloaded (the message says how
            to provide a file instead).
        CheckpointError: a file that is not a detector's state dict.
    """
    table = ENTRIES if entries is None else entries
    path = resolve(name_or_path, home, progress=progress, entries=table, kind="detector")
    entry = table.get(str(name_or_path))
    arch = entry.arch if entry is not None and path != Path(name_or_path) else None
    if arch in RTMDET_ARCHS:
        return RTMDetector.from_file(path, arch, device, **options)
    if arch is None:
        state = read_state_dict(path)
        if rtmdet_arch(state) is not None:
            return RTMDetector.from_state_dict(state, None, device, source=str(path), **options)
    return PersonDetector.from_file(path, arch, device, **options)
