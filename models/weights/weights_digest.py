"""The identity of a checkpoint's content: what exported files and built engines are keyed by.

:mod:`models.runtime.backends` names its cached ONNX files and TensorRT engines by it, and INT8
exports (:mod:`models.inference.quantize`) record it so that a served file is checked against the
checkpoint.
"""

from __future__ import annotations

import hashlib
import json

import torch

from models.weights.model_config import ModelConfig


def weights_sha256(model: torch.nn.Module, config: ModelConfig) -> str:
    """sha256 of the checkpoint's content: its config JSON and every tensor, by name.

    Equal for the same checkpoint wherever its file lies (copies, renames), different as soon
    as one weight or one config entry changes; what the backend caches are keyed by.
    """
    return state_sha256(model, json.dumps(config.to_dict(), sort_keys=True))


def state_sha256(model: torch.nn.Module, header: str) -> str:
    """sha256 of ``header`` and every tensor of ``model``'s state dict, by name."""
    digest = hashlib.sha256(header.encode())
    for key, value in sorted(model.state_dict().items()):
        t = value.detach().cpu().contiguous()
        digest.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
