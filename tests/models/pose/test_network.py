"""PoseResNet: size, output shape, parameter names, init, backbone loading errors, BN folding."""

import copy

import pytest
import torch
from torchvision.models import resnet18

from models.pose.network import PoseResNet, PretrainedWeightsError, fold_batchnorm
from tests.helpers.networks import with_batchnorm_statistics


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


@pytest.mark.parametrize("depth", [18, 50])
def test_folding_batchnorm_keeps_the_outputs_and_leaves_the_model_alone(depth: int) -> None:
    model = with_batchnorm_statistics(PoseResNet(depth, 17)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    kinds = {type(m) for m in folded.modules()}
    assert not any(issubclass(k, torch.nn.modules.batchnorm._BatchNorm) for k in kinds)
    assert not folded.training
    # The deconvolutions carry the head's folded BN as a bias now.
    assert all(folded.deconv_layers[i].bias is not None for i in (0, 3, 6))
    x = torch.randn(2, 3, 128, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model.eval()(x)
        out = folded(x)
    assert ref.abs().max() > 1e-3  # the comparison below is not between zeros
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
    # The source keeps its BatchNorms and weights (training evaluates its live model).
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) > 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_sync_batchnorm_folds_like_batchnorm() -> None:
    model = with_batchnorm_statistics(PoseResNet(18, 5)).eval()
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(model)).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(fold_batchnorm(synced)(x), model(x), rtol=1e-4, atol=1e-6)
