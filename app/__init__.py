"""heatpose's inference service (FastAPI); never imports ``training``.

The public API is :data:`__all__`; each name is imported from its owning module on first use,
so ``import app`` (and ``heatpose serve --help``) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.engine.batch_queue import BatchQueue
    from app.engine.detector_batcher import DetectorBatcher
    from app.engine.failures import BatchFailed, DeadlineExceeded, NotServing, QueueFull
    from app.engine.inference import PredictOptions
    from app.engine.pose_batcher import Batcher
    from app.engine.service import PoseService
    from app.engine.startup import StartupError
    from app.errors import ApiError
    from app.http.errors import http_error
    from app.main import create_app
    from app.settings import Settings, SettingsError, load_settings

_OWNERS = {
    "BatchFailed": "app.engine.failures",
    "Batcher": "app.engine.pose_batcher",
    "BatchQueue": "app.engine.batch_queue",
    "DetectorBatcher": "app.engine.detector_batcher",
    "DeadlineExceeded": "app.engine.failures",
    "NotServing": "app.engine.failures",
    "QueueFull": "app.engine.failures",
    "ApiError": "app.errors",
    "http_error": "app.http.errors",
    "create_app": "app.main",
    "PoseService": "app.engine.service",
    "PredictOptions": "app.engine.inference",
    "StartupError": "app.engine.startup",
    "Settings": "app.settings",
    "SettingsError": "app.settings",
    "load_settings": "app.settings",
}

__all__ = [
    "ApiError",
    "BatchFailed",
    "BatchQueue",
    "Batcher",
    "DeadlineExceeded",
    "DetectorBatcher",
    "NotServing",
    "PoseService",
    "PredictOptions",
    "QueueFull",
    "Settings",
    "SettingsError",
    "StartupError",
    "create_app",
    "http_error",
    "load_settings",
]


def __getattr__(name: str) -> Any:
    if name in _OWNERS:
        return getattr(importlib.import_module(_OWNERS[name]), name)
    raise AttributeError(f"module 'app' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
