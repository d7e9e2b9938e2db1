"""check_finite: a checkpoint whose weights hold NaN/Inf is refused with one line naming them."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from models.pose.codec import HeatmapCodec
from models.weights.checkpoint import CheckpointError, build_model, load, save
from models.weights.model_config import ModelConfig
from models.weights.output_check import check_finite, check_finite_heatmaps

CONFIG = ModelConfig(
    name="test-r18-64", depth=18, codec_params=HeatmapCodec.for_input((64, 64)).to_dict()
)


def _checkpoint(tmp_path: Path, poison: dict[str, float]) -> Path:
    """A random ResNet-18 checkpoint (64x64 input) with ``poison[name]`` written into element 0
    of each named parameter or buffer."""
    torch.manual_seed(0)
    model = build_model(CONFIG)
    state = model.state_dict()
    with torch.no_grad():
        for name, value in poison.items():
            state[name].view(-1)[0] = value
    path = tmp_path / "m.safetensors"
    save(path, model, CONFIG)
    return path


def _outputs(path: Path) -> torch.Tensor:
    """Heatmaps of the loaded model on a mean-colour crop, computed here, not by the check."""
    bundle = load(path)
    with torch.no_grad():
        return bundle.model(torch.zeros(1, 3, 64, 64))


def test_a_healthy_checkpoint_passes(tmp_path: Path) -> None:
    path = _checkpoint(tmp_path, {})
    assert torch.isfinite(_outputs(path)).all()
    check_finite(load(path))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("conv1.weight", math.nan),
        ("deconv_layers.1.running_var", math.nan),  # a BN statistic, not a parameter
        ("final_layer.bias", -math.inf),
    ],
)
def test_non_finite_weights_are_refused_naming_them(
    tmp_path: Path, name: str, value: float
) -> None:
    path = _checkpoint(tmp_path, {name: value})
    assert not torch.isfinite(_outputs(path)).all()  # the poison reaches the outputs
    with pytest.raises(CheckpointError) as e:
        check_finite(load(path))
    message = str(e.value)
    assert "the model's outputs are not finite (NaN/Inf weights?)" in message
    assert name in message and "\n" not in message


def test_many_poisoned_tensors_are_summarised(tmp_path: Path) -> None:
    names = ["conv1.weight", "bn1.weight", "bn1.bias", "layer1.0.conv1.weight", "layer2.0.bn1.bias"]
    path = _checkpoint(tmp_path, dict.fromkeys(names, math.nan))
    with pytest.raises(CheckpointError, match=r"non-finite values in .* and 2 more"):
        check_finite(load(path))


def test_overflowing_outputs_of_finite_weights_are_refused(tmp_path: Path) -> None:
    """Finite but absurd weights overflow to Inf: refused, with no tensor to name."""
    path = _checkpoint(tmp_path, {})
    bundle = load(path)
    with torch.no_grad():
        bundle.model.deconv_layers[7].bias.fill_(1e30)  # the last BatchNorm's shift
        bundle.model.final_layer.weight.fill_(1e10)
    assert all(torch.isfinite(t).all() for t in bundle.model.state_dict().values())
    with pytest.raises(CheckpointError, match=r"not finite \(NaN/Inf weights\?\); re-export"):
        check_finite(bundle)


def test_heatmaps_check_alone() -> None:
    model = torch.nn.Conv2d(1, 1, 1)
    check_finite_heatmaps(torch.zeros(2, 17, 8, 6), model)
    with pytest.raises(CheckpointError, match="not finite"):
        check_finite_heatmaps(torch.full((2, 17, 8, 6), math.nan), model)
