"""heatpose's inference service (FastAPI); never imports ``training``.

The public API is :data:`__all__`; each name is imported from its owning module on first use,
so ``import app`` (and ``heatpose serve --help``) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.batcher import (
        Batcher,
        BatchFailed,
        BatchQueue,
        DeadlineExceeded,
        NotServing,
        QueueFull,
    )
    from app.detector_batcher import DetectorBatcher
    from app.errors import ApiError, http_error
    from app.main import create_app
    from app.service import PoseService, PredictOptions
    from app.settings import Settings, SettingsError, load_settings
    from app.startup import StartupError

_OWNERS = {
    "BatchFailed": "app.batcher",
    "Batcher": "app.batcher",
    "BatchQueue": "app.batcher",
    "DetectorBatcher": "app.detector_batcher",
    "DeadlineExceeded": "app.batcher",
    "NotServing": "app.batcher",
    "QueueFull": "app.batcher",
    "ApiError": "app.errors",
    "http_error": "app.errors",
    "create_app": "app.main",
    "PoseService": "app.service",
    "PredictOptions": "app.service",
    "StartupError": "app.startup",
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
