"""heatpose's core: what training and the service share (neither is imported here).

The public API is :data:`__all__`; each name is imported from its owning module on first use,
so ``import models`` stays cheap (torch is loaded only when a name that needs it is used).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.inference.pipeline import DetectMode, PipelineError, PipelineOptions, PosePipeline
    from models.inference.predictor import Predictor, normalize_crops
    from models.pose.codec import DECODE_MODES, DecodeMode, HeatmapCodec
    from models.pose.crops import Crops, split
    from models.pose.keypoints import COCO_KEYPOINTS, KeypointSpec
    from models.pose.network import PoseResNet
    from models.pose.persons import BoxError, BoxSource, PersonBoxes, PersonResult, validate_boxes
    from models.weights.checkpoint import (
        CheckpointError,
        ModelBundle,
        build_model,
        import_published,
        load,
        read_config,
        save,
        verify,
    )
    from models.weights.model_config import ModelConfig
    from models.weights.zoo import ZooError

_OWNERS = {
    "COCO_KEYPOINTS": "models.pose.keypoints",
    "KeypointSpec": "models.pose.keypoints",
    "DECODE_MODES": "models.pose.codec",
    "DecodeMode": "models.pose.codec",
    "HeatmapCodec": "models.pose.codec",
    "PoseResNet": "models.pose.network",
    "ModelConfig": "models.weights.model_config",
    "CheckpointError": "models.weights.checkpoint",
    "ModelBundle": "models.weights.checkpoint",
    "build_model": "models.weights.checkpoint",
    "import_published": "models.weights.checkpoint",
    "load": "models.weights.checkpoint",
    "read_config": "models.weights.checkpoint",
    "save": "models.weights.checkpoint",
    "verify": "models.weights.checkpoint",
    "BoxError": "models.pose.persons",
    "BoxSource": "models.pose.persons",
    "PersonBoxes": "models.pose.persons",
    "PersonResult": "models.pose.persons",
    "validate_boxes": "models.pose.persons",
    "DetectMode": "models.inference.pipeline",
    "PipelineError": "models.inference.pipeline",
    "PipelineOptions": "models.inference.pipeline",
    "PosePipeline": "models.inference.pipeline",
    "Crops": "models.pose.crops",
    "Predictor": "models.inference.predictor",
    "normalize_crops": "models.inference.predictor",
    "split": "models.pose.crops",
    "ZooError": "models.weights.zoo",
}

__all__ = [
    "COCO_KEYPOINTS",
    "DECODE_MODES",
    "BoxError",
    "BoxSource",
    "CheckpointError",
    "Crops",
    "DecodeMode",
    "DetectMode",
    "HeatmapCodec",
    "KeypointSpec",
    "ModelBundle",
    "ModelConfig",
    "PersonBoxes",
    "PersonResult",
    "PipelineError",
    "PipelineOptions",
    "PosePipeline",
    "PoseResNet",
    "Predictor",
    "ZooError",
    "build_model",
    "import_published",
    "load",
    "normalize_crops",
    "read_config",
    "save",
    "split",
    "validate_boxes",
    "verify",
]


def __getattr__(name: str) -> Any:
    if name in _OWNERS:
        return getattr(importlib.import_module(_OWNERS[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
