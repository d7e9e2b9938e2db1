"""PoseResNet: the SimpleBaselines network (Xiao et al., ECCV 2018).

A torchvision ResNet body (no avgpool/fc), three 4x4 stride-2 deconvolutions of 256
channels (no bias) each followed by BatchNorm and ReLU, and a 1x1 convolution to K heatmaps.
Input ``(B, 3, h, w)`` normalised pixels; output ``(B, K, h/4, w/4)`` heatmaps.

Parameter names are those of the published checkpoints with their prefixes removed:
``conv1``, ``bn1``, ``layer1``..``layer4``, ``deconv_layers.{0,1,3,4,6,7}``, ``final_layer``.

:func:`fold_batchnorm` gives the inference copy: every BatchNorm folded into the
(de)convolution before it, the same outputs within float rounding, fewer passes over memory.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models import resnet

_RESNETS = {
    18: (resnet.resnet18, resnet.ResNet18_Weights),
    34: (resnet.resnet34, resnet.ResNet34_Weights),
    50: (resnet.resnet50, resnet.ResNet50_Weights),
    101: (resnet.resnet101, resnet.ResNet101_Weights),
    152: (resnet.resnet152, resnet.ResNet152_Weights),
}
DEPTHS = tuple(_RESNETS)


class PretrainedWeightsError(RuntimeError):
    """The ImageNet backbone weights could not be obtained or read."""


class PoseResNet(nn.Module):
    """ResNet body + deconvolution head producing K keypoint heatmaps at stride 4.

    Args:
        depth: ResNet depth, one of 18, 34, 50, 101, 152.
        num_keypoints: K, the number of output heatmaps.
        pretrained_backbone: ``None`` (random init), ``"imagenet"`` (torchvision's weights
            API, downloads on first use) or a path to a local torchvision ResNet state dict.
        deconv_channels: channels of each of the three deconvolutions (256 in the paper).
    """

    def __init__(
        self,
        depth: int = 50,
        num_keypoints: int = 17,
        pretrained_backbone: str | Path | None = None,
        deconv_channels: int = 256,
    ) -> None:
        super().__init__()
        if depth not in _RESNETS:
            raise ValueError(f"ResNet depth must be one of {DEPTHS}, got {depth}")
        self.depth = depth
        self.num_keypoints = num_keypoints
        body = _RESNETS[depth][0](weights=None)
        self.conv1, self.bn1, self.relu = body.conv1, body.bn1, body.relu
        self.maxpool = body.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            body.layer1,
            body.layer2,
            body.layer3,
            body.layer4,
        )
        in_ch = 512 if depth < 50 else 2048
        layers: list[nn.Module] = []
        for _ in range(3):
            layers += [
                nn.ConvTranspose2d(in_ch, deconv_channels, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(deconv_channels),
                nn.ReLU(inplace=True),
            ]
            in_ch = deconv_channels
        self.deconv_layers = nn.Sequential(*layers)
        self.final_layer = nn.Conv2d(deconv_channels, num_keypoints, kernel_size=1)
        self._init_head()
        if pretrained_backbone is not None:
            self.load_backbone(pretrained_backbone)

    def _init_head(self) -> None:
        """SimpleBaselines init: deconv/final weights ~ N(0, 0.001), biases 0, BN weight 1."""
        for m in [*self.deconv_layers.modules(), self.final_layer]:
            if isinstance(m, (nn.ConvTranspose2d, nn.Conv2d)):
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def load_backbone(self, source: str | Path) -> None:
        """Load ImageNet weights into the ResNet body (``"imagenet"`` or a local file).

        Raises:
            PretrainedWeightsError: the download failed (e.g. offline) or the file is unusable;
                the message says how to pass a local file instead.
        """
        weights_enum = _RESNETS[self.depth][1].DEFAULT
        if str(source) == "imagenet":
            try:
                state = weights_enum.get_state_dict(progress=True)
            except Exception as e:  # network errors come in many types (URLError, OSError, ...)
                raise PretrainedWeightsError(
                    f"could not download torchvision's ImageNet ResNet-{self.depth} weights "
                    f"({type(e).__name__}: {e}). Offline, download {weights_enum.url} elsewhere "
                    "and pass the file: --pretrained-backbone "
                    f"/path/to/{Path(weights_enum.url).name}, or train from scratch with "
                    "--pretrained-backbone none"
                ) from e
        else:
            path = Path(source)
            if not path.is_file():
                raise PretrainedWeightsError(
                    f"backbone weights file not found: {path} (give a torchvision ResNet-"
                    f"{self.depth} state dict, e.g. {Path(weights_enum.url).name}, or 'imagenet')"
                )
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:
                raise PretrainedWeightsError(f"cannot read backbone weights {path}: {e}") from e
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        own = {k for k in self.state_dict() if not k.startswith(("deconv_layers", "final_layer"))}
        missing, unexpected = sorted(own - set(state)), sorted(set(state) - own)
        if missing or unexpected:
            raise PretrainedWeightsError(
                f"backbone weights {source} do not fit ResNet-{self.depth}: "
                f"missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        self.load_state_dict(state, strict=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, h, w)`` normalised input -> ``(B, K, h/4, w/4)`` heatmaps."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.final_layer(self.deconv_layers(x))


def _fold_pair(parent: nn.Module, conv_name: str, bn_name: str) -> None:
    """Replace ``parent.<conv_name>`` by the conv with ``parent.<bn_name>`` folded in (eval
    statistics) and the BatchNorm by an identity."""
    conv, bn = parent.get_submodule(conv_name), parent.get_submodule(bn_name)
    if not isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) or not isinstance(bn, _BatchNorm):
        return
    fused = fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d))
    parent.register_module(conv_name, fused)
    parent.register_module(bn_name, nn.Identity())


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of a :class:`PoseResNet` with each BatchNorm folded into the conv it
    follows: ``w' = w * g / sqrt(var + eps)``, ``b' = beta + (b - mean) * g / sqrt(var + eps)``.

    The pairs are the ResNet's (``convN``/``bnN`` in the stem and every block, ``downsample``
    ``0``/``1``) and the head's (``deconv_layers`` ``0/1``, ``3/4``, ``6/7``); SyncBatchNorm
    folds too. ``model`` itself is not changed (training passes its live model). Same input
    and output as ``model``: ``(B, 3, h, w)`` -> ``(B, K, h/4, w/4)``.
    """
    folded = copy.deepcopy(model).eval()
    for module in list(folded.modules()):
        for n in ("1", "2", "3"):
            if hasattr(module, f"bn{n}"):
                _fold_pair(module, f"conv{n}", f"bn{n}")
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for conv_name, bn_name in itertools.pairwise(names):
                _fold_pair(module, conv_name, bn_name)
    return folded.eval()
