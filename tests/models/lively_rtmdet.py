"""Random-weight RTMDet files for tests: the architecture built from its description, saved as
mmdet saves a checkpoint (``{'meta', 'state_dict'}``, unfolded BatchNorm), with weights that
find persons at the service's threshold (0.3) and boxes of varied sizes."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.detection.rtmdet import ARCH_SPECS, RTMDetector
from models.detection.rtmdet_net import RTMDetNet

SQUARE = ((320, 320), (640, 640), (160, 160))
"""Sizes of images that fill the square input (no letterbox padding)."""


def lively_state(arch: str = "person-rtmdet-nano", seed: int = 0) -> dict[str, torch.Tensor]:
    """The network's random parameters with BN statistics measured on textured images (so
    activations keep their scale through the depth, the features vary over the image and
    folding matters), sharper class logits (scores spread over ``(0, 1)``) and positive side
    distances (boxes that are not empty)."""
    torch.manual_seed(seed)
    net = RTMDetNet(ARCH_SPECS[arch])
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # a cumulative average over the calibration passes
            m.weight.data.uniform_(0.8, 1.2)
            m.bias.data.normal_(0.0, 0.1)
    x = _calibration_batch(net, arch)
    net.train()
    with torch.no_grad():
        net(x)
        net(x)
    net.eval()
    # Predictors standardised on the calibration input: logits about N(-1, 2^2) (scores over
    # (0, 1)), side distances about (3 +- 1) strides (boxes that are not empty).
    head = net.bbox_head
    for convs, mean, spread in ((head.rtm_cls, -1.0, 2.0), (head.rtm_reg, 3.0, 1.0)):
        for conv in convs:
            seen: list[torch.Tensor] = []
            hook = conv.register_forward_hook(lambda m, a, out, seen=seen: seen.append(out))
            with torch.no_grad():
                net(x)
            hook.remove()
            out = seen[0].transpose(0, 1).flatten(1)  # (C, everything)
            gain = spread / out.std(dim=1).clamp_min(1e-6)
            with torch.no_grad():
                conv.weight.mul_(gain.reshape(-1, 1, 1, 1))
                conv.bias.copy_(mean - out.mean(dim=1) * gain + conv.bias * gain)
    state = net.state_dict()
    return state


def _calibration_batch(net: RTMDetNet, arch: str) -> torch.Tensor:
    """The detector's own input for :func:`photos` (both sets the tests use), letterboxed and
    normalised by :meth:`models.detection.rtmdet.RTMDetector.preprocess`."""
    images = photos() + photos(sizes=SQUARE)
    return RTMDetector(copy.deepcopy(net), arch, "cpu").preprocess(images)[0]


def write_rtmdet(path: Path, arch: str = "person-rtmdet-nano", seed: int = 0) -> Path:
    """Write :func:`lively_state` as a published ``.pth`` (mmdet's checkpoint dict) or, for a
    ``.safetensors`` path, as a bare state dict; returns ``path``."""
    state = lively_state(arch, seed)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({"meta": {"epoch": 100}, "state_dict": state}, path)
    return path


def photos(
    seed: int = 1, sizes: tuple[tuple[int, int], ...] = ((480, 640), (300, 200), (256, 256))
) -> list[np.ndarray]:
    """Textured RGB images of these ``(h, w)``, ``(H, W, 3)`` uint8: blocks plus per-pixel
    noise, so no two prior points see the same pixels (no tied scores) inside an image."""
    rng = np.random.default_rng(seed)
    out = []
    for h, w in sizes:
        coarse = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3)).astype(np.float32)
        big = np.kron(coarse, np.ones((16, 16, 1), np.float32))[:h, :w]
        out.append((big * 0.8 + rng.integers(0, 50, (h, w, 3))).clip(0, 255).astype(np.uint8))
    return out
