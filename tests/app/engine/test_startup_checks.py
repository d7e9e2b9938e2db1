"""Start-up refuses a checkpoint whose outputs are not finite, with or without warm-up."""

from __future__ import annotations

import math
from pathlib import Path

import anyio
import pytest
import torch

from app.engine.service import PoseService
from app.engine.startup import StartupError
from app.observability.metrics import Metrics
from app.settings import Settings
from models.pose.codec import HeatmapCodec
from models.weights.checkpoint import build_model, save
from models.weights.model_config import ModelConfig


@pytest.mark.parametrize("warmup", [True, False])
def test_nan_weights_stop_start_up_with_one_line(tmp_path: Path, warmup: bool) -> None:
    config = ModelConfig(
        name="nan-r18", depth=18, codec_params=HeatmapCodec.for_input((64, 64)).to_dict()
    )
    model = build_model(config)
    with torch.no_grad():
        model.final_layer.bias[3] = math.nan
    path = tmp_path / "nan.safetensors"
    save(path, model, config)
    settings = Settings(_env_file=None, checkpoint=str(path), warmup=warmup)
    service = PoseService(settings, Metrics())
    with pytest.raises(StartupError) as e:
        anyio.run(service.start)
    message = str(e.value)
    assert "HEATPOSE_CHECKPOINT" in message and "not finite" in message
    assert "final_layer.bias" in message and "\n" not in message
    assert not service.ready
