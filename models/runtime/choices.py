"""The values the command lines offer as ``choices``, importable without torch.

``heatpose train|eval|weights --help`` must answer without importing torch, OpenCV or the
trainer, but the modules that own these names (:mod:`models.pose.network` for depths,
:mod:`models.pose.codec` for decode modes, :mod:`models.weights.checkpoint` for published layouts)
import torch. So the parsers read them here; ``tests/test_cli.py`` checks that each equals its
owner's.
"""

from __future__ import annotations

from typing import Literal

DEPTHS = (18, 34, 50, 101, 152)
"""ResNet depths of :class:`models.pose.network.PoseResNet` (``models.pose.network.DEPTHS``)."""

DecodeMode = Literal["argmax", "shift", "dark"]
"""The decode modes as a type (``models.pose.codec.DecodeMode``), for torch-free settings."""

DECODE_MODES = ("dark", "shift", "argmax")
"""Heatmap decoding modes (``models.pose.codec.DECODE_MODES``), the most accurate first."""

LAYOUTS = ("mmpose", "simplebaselines")
"""Published ``.pth`` key layouts ``heatpose weights import`` reads
(``models.weights.checkpoint``)."""
