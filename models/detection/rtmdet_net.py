"""RTMDet's network in plain PyTorch: CSPNeXt backbone, CSPNeXt-PAFPN neck, separate-BN head.

As mmdet 3.x builds it for mmpose's person detectors (``rtmdet_nano_320-8xb32_coco-person.py``
over ``rtmdet_l_8xb32-300e_coco.py``, ``rtmdet_m_640-8xb32_coco-person.py`` over
``rtmdet_m_8xb32-300e_coco.py``): every module and attribute name is mmdet's, so the published
``state_dict`` loads as it is (``backbone.*``, ``neck.*``, ``bbox_head.*``). Conventions:

- a ``ConvModule`` is conv (no bias) + BatchNorm (``SyncBN`` in the configs: eps 1e-5) + SiLU;
- a depthwise-separable conv is a depthwise ``ConvModule`` then a 1x1 one;
- the head shares its convolutions across levels when ``share_conv`` (RTMDet-m): mmdet's state
  dict then stores the shared conv under every level's key, and each level keeps its own BN, so
  here every level has its own conv, loaded from its own key (after BN folding they differ);
- the head predicts, per level of stride ``s`` (8, 16, 32), one person logit and four distances
  ``(left, top, right, bottom) * s`` (``exp_on_reg`` False in both configs) from the prior
  point ``(x * s, y * s)`` (``MlvlPointGenerator``, offset 0); boxes are decoded inside the
  network (``DistancePointBBoxCoder``, no clipping: the caller clips to the image).

:class:`RTMDetNet` takes ``(B, 3, S, S)`` float32 BGR input normalised as mmdet's data
preprocessor, and returns ``scores (B, N)`` (sigmoid) and ``boxes (B, N, 4)`` ``x1y1x2y2`` in
input pixels for all ``N`` priors (level by level, row-major): static shapes, no NMS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["STRIDES", "RTMDetArch", "RTMDetNet", "fold_batchnorm"]

M = TypeVar("M", bound=nn.Module)

STRIDES = (8, 16, 32)
"""The head's levels: feature strides in input pixels (``MlvlPointGenerator(strides=...)``)."""

BN_EPS = 1e-5
"""``norm_cfg=dict(type='SyncBN')`` in the configs replaces the modules' default eps 1e-3."""


@dataclass(frozen=True)
class RTMDetArch:
    """One RTMDet size: mmdet config values (``deepen_factor``, ``widen_factor``, ...)."""

    deepen: float
    widen: float
    depthwise: bool  # backbone, neck downsamples and head convs depthwise-separable
    neck_blocks: int  # num_csp_blocks
    channels: int  # neck out_channels = head in_channels = feat_channels
    share_conv: bool
    input_size: int

    def backbone_stages(self) -> list[tuple[int, int, int, bool, bool]]:
        """``(in, out, blocks, add_identity, spp)`` of the four stages (CSPNeXt ``P5``)."""
        p5 = [(64, 128, 3, True, False), (128, 256, 6, True, False)]
        p5 += [(256, 512, 6, True, False), (512, 1024, 3, False, True)]
        return [
            (int(i * self.widen), int(o * self.widen), max(round(n * self.deepen), 1), a, s)
            for i, o, n, a, s in p5
        ]

    def stem_channels(self) -> tuple[int, int]:
        return int(64 * self.widen // 2), int(64 * self.widen)


class ConvModule(nn.Module):
    """mmcv's ``ConvModule`` as RTMDet uses it: conv (bias-free) -> BN -> SiLU.

    After :func:`fold_batchnorm` the conv has a bias and ``bn`` is an identity.
    """

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class DepthwiseSeparable(nn.Module):
    """mmcv's ``DepthwiseSeparableConvModule``: depthwise ``k x k`` then pointwise ``1 x 1``."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1) -> None:
        super().__init__()
        self.depthwise_conv = ConvModule(cin, cin, k, stride, groups=cin)
        self.pointwise_conv = ConvModule(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


def _conv(depthwise: bool, cin: int, cout: int, k: int, stride: int = 1) -> nn.Module:
    return (
        DepthwiseSeparable(cin, cout, k, stride) if depthwise else ConvModule(cin, cout, k, stride)
    )


class ChannelAttention(nn.Module):
    """``x * hardsigmoid(fc(mean over H, W of x))`` (mmdet's ``ChannelAttention``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1, bias=True)
        self.act = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.act(self.fc(x.mean(dim=(2, 3), keepdim=True)))


class CSPNeXtBlock(nn.Module):
    """3x3 conv then a 5x5 depthwise-separable one, with a residual when asked."""

    def __init__(self, channels: int, add_identity: bool, depthwise: bool) -> None:
        super().__init__()
        self.conv1 = _conv(depthwise, channels, channels, 3)
        self.conv2 = DepthwiseSeparable(channels, channels, 5)
        self.add_identity = add_identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.add_identity else out


class CSPLayer(nn.Module):
    """Cross-stage partial layer (expand ratio 0.5): blocks on one half, concat, 1x1 conv."""

    def __init__(
        self,
        cin: int,
        cout: int,
        blocks: int,
        *,
        add_identity: bool,
        depthwise: bool = False,
        attention: bool = False,
    ) -> None:
        super().__init__()
        mid = int(cout * 0.5)
        self.main_conv = ConvModule(cin, mid, 1)
        self.short_conv = ConvModule(cin, mid, 1)
        self.final_conv = ConvModule(2 * mid, cout, 1)
        self.blocks = nn.Sequential(
            *(CSPNeXtBlock(mid, add_identity, depthwise) for _ in range(blocks))
        )
        self.attention = ChannelAttention(2 * mid) if attention else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([self.blocks(self.main_conv(x)), self.short_conv(x)], dim=1)
        if self.attention is not None:
            out = self.attention(out)
        return self.final_conv(out)


class SPPBottleneck(nn.Module):
    """1x1 conv, max pools 5/9/13 (stride 1) concatenated with their input, 1x1 conv.

    The 9 and 13 pools are computed as two and three 5 pools in a row (YOLOv5's SPPF): the
    same maxima exactly (padding never wins a max), a fraction of the work.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        mid = channels // 2
        self.conv1 = ConvModule(channels, mid, 1)
        self.pool = nn.MaxPool2d(5, 1, 2)
        self.conv2 = ConvModule(mid * 4, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        p5 = self.pool(x)
        p9 = self.pool(p5)
        return self.conv2(torch.cat([x, p5, p9, self.pool(p9)], dim=1))


class CSPNeXt(nn.Module):
    """The backbone: a 3-conv stem (stride 2) and four stages (stride 2 each); features of
    stages 2-4 (strides 8, 16, 32)."""

    def __init__(self, arch: RTMDetArch) -> None:
        super().__init__()
        half, full = arch.stem_channels()
        self.stem = nn.Sequential(
            ConvModule(3, half, 3, 2), ConvModule(half, half, 3), ConvModule(half, full, 3)
        )
        for i, (cin, cout, blocks, identity, spp) in enumerate(arch.backbone_stages()):
            layers = [_conv(arch.depthwise, cin, cout, 3, 2)]
            layers += [SPPBottleneck(cout)] if spp else []
            layers.append(
                CSPLayer(
                    cout,
                    cout,
                    blocks,
                    add_identity=identity,
                    depthwise=arch.depthwise,
                    attention=True,
                )
            )
            self.add_module(f"stage{i + 1}", nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for name in ("stage1", "stage2", "stage3", "stage4"):
            x = self.get_submodule(name)(x)
            feats.append(x)
        return feats[1:]


class CSPNeXtPAFPN(nn.Module):
    """Top-down then bottom-up path over three levels; a 3x3 conv to ``out`` channels each.

    ``depthwise`` (nano) makes the downsamples, the blocks' first convs and the output convs
    depthwise-separable (mmdet >= 3.0's ``CSPNeXtPAFPN``); the 1x1 reduce layers stay plain.
    """

    def __init__(self, cins: list[int], out: int, blocks: int, depthwise: bool) -> None:
        super().__init__()
        self.reduce_layers = nn.ModuleList(ConvModule(cins[i], cins[i - 1], 1) for i in (2, 1))
        self.top_down_blocks = nn.ModuleList(
            CSPLayer(cins[i - 1] * 2, cins[i - 1], blocks, add_identity=False, depthwise=depthwise)
            for i in (2, 1)
        )
        self.downsamples = nn.ModuleList(_conv(depthwise, c, c, 3, 2) for c in cins[:2])
        self.bottom_up_blocks = nn.ModuleList(
            CSPLayer(cins[i] * 2, cins[i + 1], blocks, add_identity=False, depthwise=depthwise)
            for i in (0, 1)
        )
        self.out_convs = nn.ModuleList(_conv(depthwise, c, out, 3) for c in cins)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        up = nn.functional.interpolate
        c3, c4, c5 = feats
        p5 = self.reduce_layers[0](c5)
        t4 = self.top_down_blocks[0](torch.cat([up(p5, scale_factor=2.0), c4], 1))
        p4 = self.reduce_layers[1](t4)
        n3 = self.top_down_blocks[1](torch.cat([up(p4, scale_factor=2.0), c3], 1))
        n4 = self.bottom_up_blocks[0](torch.cat([self.downsamples[0](n3), p4], 1))
        n5 = self.bottom_up_blocks[1](torch.cat([self.downsamples[1](n4), p5], 1))
        return [conv(f) for conv, f in zip(self.out_convs, (n3, n4, n5), strict=True)]


class RTMDetSepBNHead(nn.Module):
    """Per level: two 3x3 convs for the class branch, two for the box branch, 1x1 predictors."""

    def __init__(self, channels: int, depthwise: bool) -> None:
        super().__init__()

        def stack() -> nn.Sequential:  # stacked_convs 2
            return nn.Sequential(*(_conv(depthwise, channels, channels, 3) for _ in range(2)))

        self.cls_convs = nn.ModuleList(stack() for _ in STRIDES)
        self.reg_convs = nn.ModuleList(stack() for _ in STRIDES)
        self.rtm_cls = nn.ModuleList(nn.Conv2d(channels, 1, 1) for _ in STRIDES)
        self.rtm_reg = nn.ModuleList(nn.Conv2d(channels, 4, 1) for _ in STRIDES)

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, N)`` logits and ``(B, N, 4)`` distances ``(l, t, r, b)`` in input px."""
        logits, dists = [], []
        for i, (x, stride) in enumerate(zip(feats, STRIDES, strict=True)):
            logits.append(self.rtm_cls[i](self.cls_convs[i](x)).flatten(1))
            dist = self.rtm_reg[i](self.reg_convs[i](x))
            dists.append(dist.flatten(2).transpose(1, 2) * stride)
        return torch.cat(logits, 1), torch.cat(dists, 1)


def prior_points(input_size: int) -> torch.Tensor:
    """``(N, 2)`` prior points ``(x, y)`` in input px: level by level, row-major (offset 0)."""
    points = []
    for stride in STRIDES:
        n = input_size // stride
        ys, xs = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        points.append(torch.stack([xs, ys], -1).reshape(-1, 2) * stride)
    return torch.cat(points).float()


class RTMDetNet(nn.Module):
    """RTMDet for a fixed square input (see the module doc); attributes named as mmdet's."""

    def __init__(self, arch: RTMDetArch) -> None:
        super().__init__()
        if arch.input_size % STRIDES[-1]:
            raise ValueError(f"input size {arch.input_size} is not a multiple of {STRIDES[-1]}")
        self.arch = arch
        self.backbone = CSPNeXt(arch)
        cins = [stage[1] for stage in arch.backbone_stages()[1:]]  # out of stages 2-4
        self.neck = CSPNeXtPAFPN(cins, arch.channels, arch.neck_blocks, arch.depthwise)
        self.bbox_head = RTMDetSepBNHead(arch.channels, arch.depthwise)
        self.register_buffer("priors", prior_points(arch.input_size), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 3, S, S)`` normalised BGR -> ``scores (B, N)``, ``boxes (B, N, 4)`` input px."""
        logits, dist = self.bbox_head(self.neck(self.backbone(x)))
        points = self.priors.to(dist.dtype)
        boxes = torch.cat([points - dist[..., :2], points + dist[..., 2:]], dim=-1)
        return logits.sigmoid(), boxes


@torch.no_grad()
def fold_batchnorm(module: M) -> M:
    """Fold every :class:`ConvModule`'s BatchNorm (eval statistics) into its conv, in place
    (torch's ``fuse_conv_bn_eval``: ``w' = w * g / sqrt(var + eps)``,
    ``b' = beta - mean * g / sqrt(var + eps)``); ``module`` is left in eval mode."""
    module.eval()
    for m in module.modules():
        if isinstance(m, ConvModule) and isinstance(m.bn, nn.BatchNorm2d):
            m.conv = fuse_conv_bn_eval(m.conv, m.bn)
            m.bn = nn.Identity()
    return module
