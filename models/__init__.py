"""heatpose's core: what training and the service share (neither is imported here).

The public API is :data:`__all__`; each name is imported from its owning module on first use,
so ``import models`` stays cheap (torch is loaded only when a name that needs it is used).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.checkpoint import (
        CheckpointError,
        ModelBundle,
        build_model,
        import_published,
        load,
        read_config,
        save,
        verify,
    )
    from models.codec import DECODE_MODES, DecodeMode, HeatmapCodec
    from models.crops import Crops, split
    from models.keypoints import COCO_KEYPOINTS, KeypointSpec
    from models.model_config import ModelConfig
    from models.network import PoseResNet
    from models.persons import BoxError, BoxSource, PersonBoxes, PersonResult, validate_boxes
    from models.pipeline import DetectMode, PipelineError, PipelineOptions, PosePipeline
    from models.predictor import Predictor, normalize_crops
    from models.zoo import ZooError

_OWNERS = {
    "COCO_KEYPOINTS": "models.keypoints",
    "KeypointSpec": "models.keypoints",
    "DECODE_MODES": "models.codec",
    "DecodeMode": "models.codec",
    "HeatmapCodec": "models.codec",
    "PoseResNet": "models.network",
    "ModelConfig": "models.model_config",
    "CheckpointError": "models.checkpoint",
    "ModelBundle": "models.checkpoint",
    "build_model": "models.checkpoint",
    "import_published": "models.checkpoint",
    "load": "models.checkpoint",
    "read_config": "models.checkpoint",
    "save": "models.checkpoint",
    "verify": "models.checkpoint",
    "BoxError": "models.persons",
    "BoxSource": "models.persons",
    "PersonBoxes": "models.persons",
    "PersonResult": "models.persons",
    "validate_boxes": "models.persons",
    "DetectMode": "models.pipeline",
    "PipelineError": "models.pipeline",
    "PipelineOptions": "models.pipeline",
    "PosePipeline": "models.pipeline",
    "Crops": "models.crops",
    "Predictor": "models.predictor",
    "normalize_crops": "models.predictor",
    "split": "models.crops",
    "ZooError": "models.zoo",
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
