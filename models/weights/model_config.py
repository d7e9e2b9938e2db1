"""ModelConfig: everything needed to rebuild and run a model, stored inside its checkpoint.

A checkpoint (:mod:`models.weights.checkpoint`) keeps :meth:`ModelConfig.to_dict` as JSON in its
header; the service rebuilds network, codec, keypoint spec and input normalisation from it alone.
This module knows no files; :mod:`models.weights.checkpoint` reads and writes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from models.pose.codec import DECODE_MODES, HeatmapCodec
from models.pose.keypoints import COCO_KEYPOINTS, KeypointSpec
from models.pose.network import DEPTHS

FORMAT_VERSION = 1
ARCHITECTURE = "pose_resnet"
COLOR_ORDERS = ("RGB", "BGR")
IMAGENET_MEAN_RGB = (123.675, 116.28, 103.53)
"""ImageNet mean of R, G, B on the 0..255 pixel scale."""
IMAGENET_STD_RGB = (58.395, 57.12, 57.375)
"""ImageNet standard deviation of R, G, B on the 0..255 pixel scale."""


@dataclass(frozen=True)
class ModelConfig:
    """The architecture, outputs and input conventions of one model.

    Attributes:
        name: a human-readable model name (e.g. ``res50-coco-256x192``).
        depth: ResNet depth of the PoseResNet body (18, 34, 50, 101, 152).
        spec: what the K heatmap channels mean.
        codec_params: :meth:`HeatmapCodec.to_dict` (input_size (w, h) input px, heatmap_size
            (w, h) heatmap px, sigma, blur_kernel); :attr:`codec` builds the object.
        color_order: channel order the network expects, ``"RGB"`` or ``"BGR"``.
        mean, std: per-channel normalisation in the network's channel order, 0..255 pixel
            scale; ``None`` = ImageNet's, in ``color_order``.
        decode_mode: default heatmap decode, ``"dark" | "shift" | "argmax"``.
        provenance: where the weights come from (source file, sha256, layout, created, ...).
        metrics: evaluation results, if any (e.g. ``{"coco_val_ap": 0.718}``).
        format_version: version of the header format that held this config.

    Raises:
        ValueError: an invalid value (colour order, decode mode, depth, mean/std length).
    """

    name: str = ARCHITECTURE
    depth: int = 50
    spec: KeypointSpec = COCO_KEYPOINTS
    codec_params: dict[str, Any] = field(default_factory=lambda: HeatmapCodec().to_dict())
    color_order: str = "RGB"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    decode_mode: str = "dark"
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        order = self.color_order.upper()
        if order not in COLOR_ORDERS:
            raise ValueError(f"color_order must be one of {COLOR_ORDERS}, got {self.color_order!r}")
        if self.decode_mode not in DECODE_MODES:
            raise ValueError(f"decode_mode must be one of {DECODE_MODES}, got {self.decode_mode!r}")
        if self.depth not in DEPTHS:
            raise ValueError(f"depth must be one of {DEPTHS}, got {self.depth}")
        put("color_order", order)
        for attr, rgb in (("mean", IMAGENET_MEAN_RGB), ("std", IMAGENET_STD_RGB)):
            value = getattr(self, attr)
            if value is None:
                value = rgb if order == "RGB" else rgb[::-1]
            if len(value) != 3:
                raise ValueError(f"{attr} must have 3 values (one per channel), got {value}")
            put(attr, tuple(float(v) for v in value))
        # JSON round trip: a config compares equal to the one read back from a file.
        for attr in ("codec_params", "provenance", "metrics"):
            put(attr, json.loads(json.dumps(getattr(self, attr))))

    @cached_property
    def codec(self) -> HeatmapCodec:
        """The :class:`HeatmapCodec` described by :attr:`codec_params`."""
        return HeatmapCodec.from_dict(self.codec_params)

    @property
    def input_size(self) -> tuple[int, int]:
        """Network input (crop) size ``(w, h)`` in pixels."""
        w, h = self.codec_params["input_size"]
        return int(w), int(h)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict a checkpoint stores in its header."""
        return {
            "format_version": self.format_version,
            "name": self.name,
            "architecture": {"name": ARCHITECTURE, "depth": self.depth},
            "keypoints": self.spec.to_dict(),
            "codec": self.codec_params,
            "color_order": self.color_order,
            "mean": list(self.mean or ()),
            "std": list(self.std or ()),
            "decode_mode": self.decode_mode,
            "provenance": self.provenance,
            "metrics": self.metrics,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: a missing entry, an invalid value, or a format version newer than
                :data:`FORMAT_VERSION`; the message says which.
        """
        try:
            version = int(d["format_version"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError("the model config has no valid format_version") from e
        if not 1 <= version <= FORMAT_VERSION:
            raise ValueError(
                f"unsupported heatpose format version {version} (this heatpose reads 1.."
                f"{FORMAT_VERSION}): upgrade heatpose, or re-export the model with this version"
            )
        try:
            arch = d["architecture"]
            if arch.get("name") != ARCHITECTURE:
                raise ValueError(f"unknown architecture {arch.get('name')!r}, not {ARCHITECTURE}")
            return cls(
                name=d["name"],
                depth=int(arch["depth"]),
                spec=KeypointSpec.from_dict(d["keypoints"]),
                codec_params=d["codec"],
                color_order=d["color_order"],
                mean=tuple(d["mean"]),
                std=tuple(d["std"]),
                decode_mode=d["decode_mode"],
                provenance=d.get("provenance", {}),
                metrics=d.get("metrics", {}),
                format_version=version,
            )
        except KeyError as e:
            raise ValueError(f"the model config lacks the entry {e}") from e
