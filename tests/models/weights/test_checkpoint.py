"""Checkpoints: safetensors round trip, header config, errors, published .pth import, safety."""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from models.pose.codec import HeatmapCodec
from models.pose.keypoints import COCO_KEYPOINTS
from models.pose.network import PoseResNet
from models.weights.checkpoint import (
    CheckpointError,
    _infer_depth,
    _read_pth,
    import_published,
    load,
    read_config,
    save,
    verify,
)
from models.weights.model_config import ModelConfig


def _random_model(depth: int = 18, seed: int = 0) -> PoseResNet:
    """A PoseResNet whose every tensor (BN statistics and counters too) is random."""
    torch.manual_seed(seed)
    model = PoseResNet(depth, 17)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(int(torch.randint(1, 10_000, ())))
            elif name.endswith("running_var"):
                t.uniform_(0.5, 2.0)
            else:
                t.normal_(0, 0.05)
    return model.eval()


def _heatmaps(model: torch.nn.Module) -> torch.Tensor:
    torch.manual_seed(1)
    with torch.no_grad():
        return model.eval()(torch.randn(2, 3, 64, 48))


def _config(**kw: object) -> ModelConfig:
    base: dict = dict(name="test-r18", depth=18, decode_mode="shift", metrics={"ap": 0.5})
    base["provenance"] = {"source": "unit test", "created": "2024-01-01T00:00:00+00:00"}
    return ModelConfig(**{**base, **kw})  # type: ignore[arg-type]


def _header(path: Path) -> dict:
    """The safetensors JSON header, parsed by hand (8-byte little-endian length, then JSON)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n])


@pytest.fixture(scope="module")
def model18() -> PoseResNet:
    return _random_model()


# ---- safetensors artifact ---------------------------------------------------------------------


def test_round_trip_is_bit_exact_and_keeps_config(tmp_path: Path, model18: PoseResNet) -> None:
    path = tmp_path / "m.safetensors"
    config = _config()
    save(path, model18, config)
    assert os.listdir(tmp_path) == ["m.safetensors"]  # no temp file left behind
    bundle = load(path)
    assert bundle.config == config
    assert not bundle.model.training
    original, loaded = model18.state_dict(), bundle.model.state_dict()
    assert set(original) == set(loaded)
    for key, tensor in original.items():
        assert loaded[key].dtype == tensor.dtype, key
        assert torch.equal(loaded[key], tensor), key
    assert int(loaded["bn1.num_batches_tracked"]) == int(original["bn1.num_batches_tracked"]) > 0
    assert torch.equal(_heatmaps(bundle.model), _heatmaps(model18))


def test_header_holds_the_whole_config_as_json(tmp_path: Path, model18: PoseResNet) -> None:
    path = tmp_path / "m.safetensors"
    save(path, model18, _config(color_order="BGR"))
    stored = json.loads(_header(path)["__metadata__"]["heatpose"])
    assert stored["format_version"] == 1
    assert stored["architecture"] == {"name": "pose_resnet", "depth": 18}
    assert stored["keypoints"]["names"] == list(COCO_KEYPOINTS.names)
    assert stored["codec"] == json.loads(json.dumps(HeatmapCodec().to_dict()))
    assert stored["color_order"] == "BGR"
    assert stored["mean"] == [103.53, 116.28, 123.675]  # ImageNet, B G R
    assert stored["std"] == [57.375, 57.12, 58.395]
    assert stored["decode_mode"] == "shift"
    assert stored["metrics"] == {"ap": 0.5}
    assert read_config(path) == _config(color_order="BGR")


def test_non_contiguous_tensors_are_saved(tmp_path: Path) -> None:
    model = _random_model()
    weight = torch.randn(256, 17, 1, 1).permute(1, 0, 2, 3)  # (17, 256, 1, 1), not contiguous
    assert not weight.is_contiguous()
    model.final_layer.weight = torch.nn.Parameter(weight)
    save(tmp_path / "m.safetensors", model, _config())
    assert torch.equal(load(tmp_path / "m.safetensors").model.final_layer.weight, weight)


def test_model_config_defaults_and_properties() -> None:
    config = ModelConfig()
    assert (config.depth, config.color_order, config.decode_mode) == (50, "RGB", "dark")
    assert config.mean == (123.675, 116.28, 103.53)
    assert config.std == (58.395, 57.12, 57.375)
    assert config.input_size == (192, 256)
    assert config.spec == COCO_KEYPOINTS
    assert isinstance(config.codec, HeatmapCodec)
    assert config.codec.to_dict() == HeatmapCodec().to_dict()
    assert ModelConfig(color_order="bgr").mean == (103.53, 116.28, 123.675)
    assert ModelConfig.from_dict(config.to_dict()) == config
    for bad in ({"color_order": "RGBA"}, {"decode_mode": "soft"}, {"depth": 42}, {"mean": (1.0,)}):
        with pytest.raises(ValueError):
            ModelConfig(**bad)  # type: ignore[arg-type]


def test_save_refuses_a_config_that_does_not_describe_the_model(
    tmp_path: Path, model18: PoseResNet
) -> None:
    with pytest.raises(CheckpointError, match=r"ResNet-50, K=17\): missing keys.*layer1.0.conv3"):
        save(tmp_path / "m.safetensors", model18, _config(depth=50))
    assert not list(tmp_path.iterdir())


# ---- errors -------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("content", [b"", b"not a safetensors file at all", b"\xff" * 64])
def test_garbage_is_not_safetensors(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load(path)


def test_truncated_file(tmp_path: Path, model18: PoseResNet) -> None:
    path = tmp_path / "m.safetensors"
    save(path, model18, _config())
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(CheckpointError):
        load(path)


def test_safetensors_without_heatpose_metadata(tmp_path: Path, model18: PoseResNet) -> None:
    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in model18.state_dict().items()}, str(path))
    with pytest.raises(CheckpointError, match=r"no 'heatpose' metadata.*weights import"):
        read_config(path)


def test_newer_format_version_is_refused(tmp_path: Path) -> None:
    header = {**_config().to_dict(), "format_version": 99}
    path = tmp_path / "future.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"heatpose": json.dumps(header)})
    with pytest.raises(CheckpointError, match=r"format version 99.*upgrade heatpose"):
        read_config(path)


def test_key_mismatch_names_missing_and_unexpected_keys(
    tmp_path: Path, model18: PoseResNet
) -> None:
    tensors = {k: v.contiguous() for k, v in model18.state_dict().items()}
    del tensors["final_layer.bias"]
    tensors["extra_head.weight"] = torch.zeros(3)
    tensors["bn1.weight"] = torch.zeros(65)
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path), metadata={"heatpose": json.dumps(_config().to_dict())})
    with pytest.raises(CheckpointError) as err:
        load(path)
    message = str(err.value)
    assert "missing keys (1): final_layer.bias" in message
    assert "unexpected keys (1): extra_head.weight" in message
    assert "bn1.weight (65,) instead of (64,)" in message


def test_verify_finds_a_header_naming_another_depth_without_reading_tensors(
    tmp_path: Path, model18: PoseResNet, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = tmp_path / "good.safetensors"
    save(good, model18, _config())
    assert verify(good) == _config()
    wrong = tmp_path / "wrong.safetensors"  # ResNet-18 tensors under a ResNet-34 header
    tensors = {k: v.contiguous() for k, v in model18.state_dict().items()}
    header = ModelConfig(depth=34).to_dict()
    save_file(tensors, str(wrong), metadata={"heatpose": json.dumps(header)})
    import models.weights.checkpoint as checkpoint

    def no_tensor_reads(*args: object, **kwargs: object) -> None:
        raise AssertionError("verify must not read tensor data")

    monkeypatch.setattr(checkpoint, "load_file", no_tensor_reads)
    with pytest.raises(CheckpointError) as err:
        verify(wrong)
    message = str(err.value)
    assert "ResNet-34" in message and "do not fit" in message
    assert "missing keys" in message  # layer3.2..5 of ResNet-34 are not in a ResNet-18


# ---- published .pth files ---------------------------------------------------------------------


def _mmpose_file(model: PoseResNet, path: Path, legacy: bool = False) -> None:
    """mmpose 1.x's container: {'meta': ... numpy inside ..., 'state_dict': prefixed keys}."""
    state = {}
    for k, v in model.state_dict().items():
        state[("head." if k.startswith(("deconv_layers", "final_layer")) else "backbone.") + k] = v
    meta = {
        "epoch": 210,
        "iter": np.int64(5),
        "hist": np.zeros(3),
        "lr": np.float32(5e-6),
        "mmengine_version": "0.7.0",
        "dataset_meta": {
            "dataset_name": "coco",
            "flip_indices": list(COCO_KEYPOINTS.flip_indices),
            "sigmas": np.array(COCO_KEYPOINTS.sigmas, dtype=np.float32),
            "keypoint_colors": np.zeros((17, 3), dtype=np.uint8),
            "skeleton_links": [(15, 13), (13, 11)],
        },
    }
    torch.save({"meta": meta, "state_dict": state}, path, _use_new_zipfile_serialization=not legacy)


@pytest.mark.parametrize("legacy", [False, True])
def test_import_mmpose_gives_identical_heatmaps(
    tmp_path: Path, model18: PoseResNet, legacy: bool
) -> None:
    src, dst = tmp_path / "td-hm_res18.pth", tmp_path / "out" / "r18.safetensors"
    _mmpose_file(model18, src, legacy=legacy)
    config = import_published(src, dst, decode_mode="dark")
    assert (config.name, config.depth, config.color_order) == ("td-hm_res18", 18, "RGB")
    assert config.mean == (123.675, 116.28, 103.53)
    assert config.decode_mode == "dark"
    assert config.provenance["layout"] == "mmpose"
    assert config.provenance["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert config.provenance["source_meta"]["iter"] == 5
    bundle = load(dst)
    assert bundle.config == config
    assert torch.equal(_heatmaps(bundle.model), _heatmaps(model18))


def test_import_simplebaselines_dataparallel_legacy(tmp_path: Path, model18: PoseResNet) -> None:
    src, dst = tmp_path / "pose_resnet_18.pth.tar", tmp_path / "sb.safetensors"
    state = {"module." + k: v for k, v in model18.state_dict().items()}
    torch.save(state, src, _use_new_zipfile_serialization=False)
    config = import_published(src, dst, name="sb")
    assert (config.name, config.color_order, config.decode_mode) == ("sb", "BGR", "shift")
    assert config.mean == (103.53, 116.28, 123.675)
    assert config.provenance["layout"] == "simplebaselines"
    assert torch.equal(_heatmaps(load(dst).model), _heatmaps(model18))


def test_numpy1_module_names_are_allowed(tmp_path: Path, model18: PoseResNet) -> None:
    """Files written under numpy 1 name ``numpy.core.multiarray``; numpy 2 ``numpy._core``."""
    src = tmp_path / "np1.pth"
    _mmpose_file(model18, src, legacy=True)  # legacy format: one flat pickle stream
    raw = src.read_bytes()
    assert b"numpy._core.multiarray" in raw or np.__version__.startswith("1.")
    src.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert b"numpy.core.multiarray\n_reconstruct" in src.read_bytes()
    import_published(src, tmp_path / "np1.safetensors")
    assert torch.equal(_heatmaps(load(tmp_path / "np1.safetensors").model), _heatmaps(model18))


class _Exploit:
    """Unpickling this runs ``exec`` and writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.code = f"open({str(marker)!r}, 'w').write('pwned')"

    def __reduce__(self) -> tuple:
        return (builtins.exec, (self.code,))


class _SystemExploit:
    def __init__(self, marker: Path) -> None:
        self.command = f"touch {marker}"

    def __reduce__(self) -> tuple:
        return (os.system, (self.command,))


@pytest.mark.parametrize("how", ["zip", "legacy", "raw-pickle", "os.system"])
def test_code_in_a_pickle_never_runs(tmp_path: Path, model18: PoseResNet, how: str) -> None:
    marker = tmp_path / "marker"
    exploit = _SystemExploit(marker) if how == "os.system" else _Exploit(marker)
    payload = {"meta": {"x": exploit}, "state_dict": dict(model18.state_dict())}
    src = tmp_path / "evil.pth"
    if how == "raw-pickle":
        src.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, src, _use_new_zipfile_serialization=how != "legacy")
    with pytest.raises(CheckpointError, match="refused to load"):
        import_published(src, tmp_path / "evil.safetensors")
    assert not marker.exists()
    assert not (tmp_path / "evil.safetensors").exists()
    # The payload is real: an unrestricted load would have run it.
    pickle.loads(pickle.dumps(exploit))
    assert marker.exists()


def test_import_mismatch_names_keys(tmp_path: Path, model18: PoseResNet) -> None:
    src = tmp_path / "m.pth"
    _mmpose_file(model18, src)
    container = _read_pth(src)  # our own loader, allow-list and all
    del container["state_dict"]["head.final_layer.bias"]
    container["state_dict"]["head.extra.weight"] = torch.zeros(2)
    torch.save(container, src)
    with pytest.raises(CheckpointError) as err:
        import_published(src, tmp_path / "m.safetensors")
    assert "missing keys (1): final_layer.bias" in str(err.value)
    assert "unexpected keys (1): extra.weight" in str(err.value)
    with pytest.raises(CheckpointError, match="look like mmpose"):
        import_published(src, tmp_path / "m.safetensors", layout="simplebaselines")
    assert not (tmp_path / "m.safetensors").exists()


def test_import_refuses_non_checkpoints(tmp_path: Path) -> None:
    src = tmp_path / "x.pth"
    src.write_text("hello")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        import_published(src, tmp_path / "x.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        import_published(tmp_path / "missing.pth", tmp_path / "x.safetensors")
    torch.save({"a": torch.zeros(1)}, src)
    with pytest.raises(CheckpointError, match="cannot tell the layout"):
        import_published(src, tmp_path / "x.safetensors")


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_depth_is_inferred_from_the_keys(depth: int) -> None:
    with torch.device("meta"):
        state = PoseResNet(depth, 17).state_dict()
    assert _infer_depth(state, Path("x.pth")) == depth
