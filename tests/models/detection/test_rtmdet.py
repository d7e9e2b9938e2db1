"""RTMDet's published checkpoints: names and shapes, loading, arch recognition, BN folding.

The published layout is written here from mmdet 3.x's module code (``CSPNeXt``,
``CSPNeXtPAFPN``, ``RTMDetSepBNHead``, mmcv's ``ConvModule`` and
``DepthwiseSeparableConvModule``) and the two mmpose person configs, as a flat table of
names and shapes, not from our network's ``state_dict()``; its parameter counts are the ones
mmpose publishes (0.99 M and 24.66 M).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from models.detection.detector import load_detector
from models.detection.rtmdet import ARCH_SPECS, RTMDET_ARCHS, RTMDetector, rtmdet_arch
from models.detection.rtmdet_net import RTMDetNet, fold_batchnorm
from models.weights.checkpoint import CheckpointError, import_published, read_state_dict

Shape = tuple[int, ...]

# arch -> (deepen, widen, depthwise, neck blocks, neck/head channels, share_conv), the configs'
CONFIGS = {
    "person-rtmdet-nano": (0.33, 0.25, True, 1, 64, False),
    "person-rtmdet-m": (0.67, 0.75, False, 2, 192, True),
}


def _conv_module(p: str, cin: int, cout: int, k: int, groups: int = 1) -> Iterator[tuple]:
    yield f"{p}.conv.weight", (cout, cin // groups, k, k)
    for name in ("weight", "bias", "running_mean", "running_var"):
        yield f"{p}.bn.{name}", (cout,)
    yield f"{p}.bn.num_batches_tracked", ()


def _conv(p: str, dw: bool, cin: int, cout: int, k: int) -> Iterator[tuple]:
    if dw:  # DepthwiseSeparableConvModule
        yield from _conv_module(f"{p}.depthwise_conv", cin, cin, k, groups=cin)
        yield from _conv_module(f"{p}.pointwise_conv", cin, cout, 1)
    else:
        yield from _conv_module(p, cin, cout, k)


def _csp_layer(p: str, cin: int, cout: int, n: int, dw: bool, attention: bool) -> Iterator[tuple]:
    mid = cout // 2  # expand_ratio 0.5
    yield from _conv_module(f"{p}.main_conv", cin, mid, 1)
    yield from _conv_module(f"{p}.short_conv", cin, mid, 1)
    yield from _conv_module(f"{p}.final_conv", 2 * mid, cout, 1)
    for i in range(n):  # CSPNeXtBlock, expansion 1.0
        yield from _conv(f"{p}.blocks.{i}.conv1", dw, mid, mid, 3)
        yield from _conv(f"{p}.blocks.{i}.conv2", True, mid, mid, 5)
    if attention:
        yield f"{p}.attention.fc.weight", (2 * mid, 2 * mid, 1, 1)
        yield f"{p}.attention.fc.bias", (2 * mid,)


def published_layout(arch: str) -> dict[str, Shape]:
    """Every tensor name and shape of the published checkpoint's ``state_dict``."""
    deepen, widen, dw, neck_blocks, ch, _ = CONFIGS[arch]
    out: list[tuple] = []
    stem = int(64 * widen // 2)
    out += _conv_module("backbone.stem.0", 3, stem, 3)
    out += _conv_module("backbone.stem.1", stem, stem, 3)
    out += _conv_module("backbone.stem.2", stem, 2 * stem, 3)
    p5 = [(64, 128, 3), (128, 256, 6), (256, 512, 6), (512, 1024, 3)]
    for s, (cin, cout, n) in enumerate(p5, start=1):
        cin, cout, n = int(cin * widen), int(cout * widen), max(round(n * deepen), 1)
        out += _conv(f"backbone.stage{s}.0", dw, cin, cout, 3)
        if s == 4:  # SPPBottleneck, then the CSP layer at index 2
            out += _conv_module("backbone.stage4.1.conv1", cout, cout // 2, 1)
            out += _conv_module("backbone.stage4.1.conv2", cout // 2 * 4, cout, 1)
        out += _csp_layer(f"backbone.stage{s}.{2 if s == 4 else 1}", cout, cout, n, dw, True)
    c3, c4, c5 = int(256 * widen), int(512 * widen), int(1024 * widen)
    out += _conv_module("neck.reduce_layers.0", c5, c4, 1)
    out += _csp_layer("neck.top_down_blocks.0", 2 * c4, c4, neck_blocks, dw, False)
    out += _conv_module("neck.reduce_layers.1", c4, c3, 1)
    out += _csp_layer("neck.top_down_blocks.1", 2 * c3, c3, neck_blocks, dw, False)
    out += _conv("neck.downsamples.0", dw, c3, c3, 3)
    out += _csp_layer("neck.bottom_up_blocks.0", 2 * c3, c4, neck_blocks, dw, False)
    out += _conv("neck.downsamples.1", dw, c4, c4, 3)
    out += _csp_layer("neck.bottom_up_blocks.1", 2 * c4, c5, neck_blocks, dw, False)
    for i, c in enumerate((c3, c4, c5)):
        out += _conv(f"neck.out_convs.{i}", dw, c, ch, 3)
    for level in range(3):
        for branch in ("cls_convs", "reg_convs"):
            for i in range(2):  # stacked_convs
                out += _conv(f"bbox_head.{branch}.{level}.{i}", dw, ch, ch, 3)
        out += [(f"bbox_head.rtm_cls.{level}.weight", (1, ch, 1, 1))]
        out += [(f"bbox_head.rtm_cls.{level}.bias", (1,))]
        out += [(f"bbox_head.rtm_reg.{level}.weight", (4, ch, 1, 1))]
        out += [(f"bbox_head.rtm_reg.{level}.bias", (4,))]
    table = dict(out)
    assert len(table) == len(out)
    return table


def published_state(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors in the published layout; BN statistics plausible; with ``share_conv``
    the shared head convs repeated under every level's key, as mmdet saves them."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, shape in published_layout(arch).items():
        if k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(1000, dtype=torch.long)
        elif k.endswith("running_var"):
            state[k] = torch.rand(shape, generator=g) + 0.5
        elif k.endswith(("bn.weight", "running_mean", "bn.bias")):
            state[k] = torch.randn(shape, generator=g) * 0.2 + (k.endswith("bn.weight"))
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            state[k] = torch.randn(shape, generator=g) / fan_in**0.5
    if CONFIGS[arch][5]:
        for k in state:
            if k.startswith(("bbox_head.cls_convs.", "bbox_head.reg_convs.")) and ".conv." in k:
                state[k] = state[k.replace(f".{k.split('.')[2]}.", ".0.", 1)]
    return state


def save_published(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """``state`` as mmdet's ``publish_model`` writes it: ``{'meta', 'state_dict'}``, legacy
    (non-zip) serialisation, a meta with tuples, lists and numpy scalars."""
    meta = {
        "epoch": 100,
        "iter": np.int64(7),
        "mmengine_version": "0.7.0",
        "dataset_meta": {"classes": ("person",), "palette": [(220, 20, 60)]},
    }
    torch.save({"meta": meta, "state_dict": state}, path, _use_new_zipfile_serialization=False)
    return path


@pytest.mark.parametrize(("arch", "millions"), [(RTMDET_ARCHS[0], 0.99), (RTMDET_ARCHS[1], 24.66)])
def test_layout_has_the_published_parameter_count(arch: str, millions: float) -> None:
    """mmpose's README: 0.99 M / 24.66 M parameters (a shared conv counted once)."""
    shared = CONFIGS[arch][5]
    count = sum(
        int(np.prod(shape))
        for k, shape in published_layout(arch).items()
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
        and not (
            shared
            and k.startswith(("bbox_head.cls_convs.", "bbox_head.reg_convs."))
            and k.split(".")[2] != "0"
            and ".conv." in k
        )
    )
    assert round(count / 1e6, 2) == millions


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal within float32 rounding (cheaper than ``assert_close`` on 25 M numbers)."""
    return a.shape == b.shape and float((a - b).abs().max()) <= 1e-5 * float(b.abs().max()) + 1e-7


def _folded(weight: torch.Tensor, state: dict[str, torch.Tensor], bn: str) -> tuple:
    scale = state[f"{bn}.weight"] / torch.sqrt(state[f"{bn}.running_var"] + 1e-5)
    bias = state[f"{bn}.bias"] - state[f"{bn}.running_mean"] * scale
    return weight * scale.reshape(-1, 1, 1, 1), bias


@pytest.mark.parametrize("arch", RTMDET_ARCHS)
def test_published_file_loads_with_every_tensor_in_its_place(tmp_path: Path, arch: str) -> None:
    """Each published tensor lands where mmdet has it (folded with its own BN); the nano file
    goes through a file, m's 100 MB only through memory (the reading is the same)."""
    state = published_state(arch)
    if arch == "person-rtmdet-nano":
        detector = RTMDetector.from_file(save_published(tmp_path / "det.pth", state), device="cpu")
    else:
        detector = RTMDetector.from_state_dict(state, device="cpu")
    assert (detector.arch, detector.input_size) == (arch, ARCH_SPECS[arch].input_size)
    params = dict(detector.network.state_dict())
    used = 0
    for k, v in state.items():
        if k.endswith(".conv.weight"):  # each conv folded with its own BN (SyncBN eps 1e-5)
            weight, bias = _folded(v, state, k.removesuffix(".conv.weight") + ".bn")
            assert _same(params[k], weight), k
            assert _same(params[k.replace("weight", "bias")], bias), k
            used += 6
        elif ".bn." not in k:  # predictors and channel attention, as published
            assert torch.equal(params[k], v), k
            used += 1
    assert used == len(state)


@pytest.mark.parametrize("arch", RTMDET_ARCHS)
def test_arch_is_told_from_the_tensors(arch: str) -> None:
    keys = list(published_layout(arch))
    assert rtmdet_arch(keys) == arch
    counters = [k for k in keys if not k.endswith("num_batches_tracked")]
    assert rtmdet_arch(counters) == arch


def test_other_files_are_not_rtmdet_or_named_as_other_sizes() -> None:
    assert rtmdet_arch(["backbone.body.conv1.weight", "rpn.head.conv.0.0.weight"]) is None
    # RTMDet-l (deepen 1.0): three blocks in stage 1, six in stage 2
    keys = [k for k in published_layout("person-rtmdet-m") if ".blocks." not in k]
    keys += [f"backbone.stage1.1.blocks.{i}.conv1.conv.weight" for i in range(3)]
    keys += [f"backbone.stage2.1.blocks.{i}.conv1.conv.weight" for i in range(6)]
    with pytest.raises(CheckpointError, match="3 and 6 blocks"):
        rtmdet_arch(keys)


def test_missing_extra_and_misshaped_tensors_are_named(tmp_path: Path) -> None:
    arch = "person-rtmdet-nano"
    good = published_state(arch)
    cases = {
        "missing": (
            {k: v for k, v in good.items() if k != "neck.out_convs.1.pointwise_conv.bn.bias"},
            "neck.out_convs.1.pointwise_conv.bn.bias",
        ),
        "unexpected": (
            good | {"bbox_head.rtm_obj.0.weight": torch.zeros(1, 64, 1, 1)},
            "bbox_head.rtm_obj.0.weight",
        ),
        "shape": (
            good | {"bbox_head.rtm_reg.2.weight": torch.zeros(5, 64, 1, 1)},
            "bbox_head.rtm_reg.2.weight",
        ),
    }
    for what, (state, key) in cases.items():
        path = save_published(tmp_path / f"{what}.pth", state)
        with pytest.raises(CheckpointError, match=rf"{what}.*{key.replace('.', '[.]')}"):
            RTMDetector.from_file(path, device="cpu")
    # the counters are optional: a file without them loads
    bare = {k: v for k, v in good.items() if not k.endswith("num_batches_tracked")}
    RTMDetector.from_file(save_published(tmp_path / "bare.pth", bare), device="cpu")
    with pytest.raises(CheckpointError, match="not a person-rtmdet-m state dict"):
        RTMDetector.from_file(tmp_path / "bare.pth", "person-rtmdet-m", device="cpu")


def test_a_local_file_gives_an_rtmdet_detector(tmp_path: Path) -> None:
    path = save_published(tmp_path / "nano.pth", published_state("person-rtmdet-nano"))
    detector = load_detector(path, "cpu")
    assert isinstance(detector, RTMDetector) and detector.arch == "person-rtmdet-nano"
    assert set(read_state_dict(path)) == set(published_layout("person-rtmdet-nano"))


def test_folding_keeps_the_outputs() -> None:
    """The folded network's scores and boxes equal the unfolded one's (eval BN); nano has
    plain and depthwise-separable convs, a small input keeps it fast (the layers do not depend
    on the input size). RTMDet-m's folded tensors are checked one by one above."""
    arch = "person-rtmdet-nano"
    state = {k: v for k, v in published_state(arch, seed=3).items()}
    net = RTMDetNet(replace(ARCH_SPECS[arch], input_size=64)).eval()
    net.load_state_dict(state)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        scores, boxes = net(x)
        folded_scores, folded_boxes = fold_batchnorm(net)(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert scores.shape == (2, 8**2 + 4**2 + 2**2) and boxes.shape == (*scores.shape, 4)
    torch.testing.assert_close(folded_scores, scores, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(folded_boxes, boxes, atol=1e-3, rtol=1e-4)


def test_spp_pools_are_the_9_and_13_max_pools() -> None:
    """The chained 5x5 pools give exactly mmdet's 5/9/13 pools (stride 1, padding k // 2)."""
    from models.detection.rtmdet_net import SPPBottleneck

    spp = SPPBottleneck(8).eval()
    spp.conv1 = spp.conv2 = torch.nn.Identity()  # type: ignore[assignment]
    x = torch.randn(2, 8, 11, 7)
    pools = [torch.nn.functional.max_pool2d(x, k, 1, k // 2) for k in (5, 9, 13)]
    assert torch.equal(spp(x), torch.cat([x, *pools], dim=1))


def test_importing_an_rtmdet_as_a_pose_model_says_what_it_is(tmp_path: Path) -> None:
    path = save_published(tmp_path / "nano.pth", published_state("person-rtmdet-nano"))
    with pytest.raises(CheckpointError, match="RTMDet person detector's checkpoint, not a pose"):
        import_published(path, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()
