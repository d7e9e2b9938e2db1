"""PoseResNet: size, output shape, parameter names, init, backbone loading errors."""

import pytest
import torch
from torchvision.models import resnet18

from models.pose.network import PoseResNet, PretrainedWeightsError


def test_resnet50_parameter_count_and_output_shape() -> None:
    model = PoseResNet(50, 17).eval()
    n = sum(p.numel() for p in model.parameters())
    assert 33.9e6 < n < 34.1e6, n  # SimpleBaselines R50 256x192: 34.0M
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 256, 192))
    assert out.shape == (2, 17, 64, 48)


def test_parameter_names_match_published_layout() -> None:
    names = set(PoseResNet(18, 17).state_dict())
    for key in [
        "conv1.weight",
        "bn1.running_mean",
        "layer4.1.conv2.weight",
        "deconv_layers.0.weight",
        "deconv_layers.1.weight",
        "deconv_layers.3.weight",
        "deconv_layers.4.running_var",
        "deconv_layers.6.weight",
        "deconv_layers.7.bias",
        "final_layer.weight",
        "final_layer.bias",
    ]:
        assert key in names
    assert "deconv_layers.0.bias" not in names
    assert not any(k.startswith(("fc.", "avgpool")) for k in names)


def test_head_init_follows_simplebaselines() -> None:
    torch.manual_seed(0)
    m = PoseResNet(18, 17)
    std = m.deconv_layers[0].weight.std().item()
    assert 0.0009 < std < 0.0011
    assert torch.all(m.final_layer.bias == 0)
    assert torch.all(m.deconv_layers[1].weight == 1)


def test_backbone_from_local_file(tmp_path) -> None:
    src = resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(src.state_dict(), path)
    m = PoseResNet(18, 17, pretrained_backbone=path)
    assert torch.equal(m.layer3[0].conv1.weight, src.layer3[0].conv1.weight)


def test_backbone_errors_say_what_to_do(tmp_path) -> None:
    with pytest.raises(PretrainedWeightsError, match="not found"):
        PoseResNet(18, 17, pretrained_backbone=tmp_path / "nope.pth")
    torch.save(resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(PretrainedWeightsError, match="do not fit ResNet-50"):
        PoseResNet(50, 17, pretrained_backbone=tmp_path / "r18.pth")
    with pytest.raises(ValueError, match="depth"):
        PoseResNet(20, 17)


def test_imagenet_offline_message(monkeypatch) -> None:
    from torchvision.models import ResNet18_Weights

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(type(ResNet18_Weights.DEFAULT), "get_state_dict", offline)
    with pytest.raises(PretrainedWeightsError, match="--pretrained-backbone"):
        PoseResNet(18, 17, pretrained_backbone="imagenet")
