"""HEATPOSE_BACKEND (and HEATPOSE_ONNX): the service serves through the chosen backend (or the
given ONNX file, e.g. INT8 from `heatpose export --int8`), or refuses to start clearly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import heatpose_cli
from app.engine.startup import StartupError
from app.settings import SettingsError, load_settings
from heatpose_cli import synth as synthetic
from models.inference.predictor import Predictor
from models.weights.checkpoint import load
from tests.helpers.images import encode

pytestmark = pytest.mark.anyio


async def predicted_keypoints(serve_app, image: np.ndarray, **settings) -> np.ndarray:
    """``(K, 2)`` image px: the one person ``/predict`` finds in ``image`` (flip test, shift
    decoding) from an ``onnxruntime`` service with ``settings``."""
    async with serve_app(backend="onnxruntime", **settings) as (client, app):
        assert app.state.service.predictor.forward.name == "onnxruntime"
        r = await client.post(
            "/predict",
            files=[("files", ("a.png", encode(image), "image/png"))],
            params={"decode": "shift", "flip_test": "true"},
        )
    assert r.status_code == 200, r.text
    (person,) = r.json()["images"][0]["persons"]
    return np.array([[k["x"], k["y"]] for k in person["keypoints"]])


@pytest.mark.slow
async def test_onnxruntime_service_answers_what_the_torch_predictor_does(
    serve_app, app_checkpoint, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("HEATPOSE_HOME", str(tmp_path))  # the ONNX cache lands here
    image = np.random.default_rng(3).integers(0, 256, (140, 110, 3), dtype=np.uint8)
    xy = await predicted_keypoints(serve_app, image)
    (want,) = Predictor(load(app_checkpoint), "cpu").predict([image], decode_mode="shift")[0]
    np.testing.assert_allclose(xy, want.keypoints, atol=0.05)
    assert len(list((tmp_path / "backends").glob("*.onnx"))) == 1


@pytest.fixture(scope="module")
def int8_model(app_checkpoint: Path, module_tmp: Callable[[str], Path]) -> Path:
    """The tiny service checkpoint exported as INT8, calibrated on synthetic people."""
    root = module_tmp("int8")
    data = root / "data"
    assert synthetic.main(["--out", str(data), *["--train", "6", "--val", "0", "--seed", "4"]]) == 0
    out = root / "tiny.int8.onnx"
    argv = ["export", str(app_checkpoint), "--format", "onnx", "--out", str(out), "--int8"]
    assert heatpose_cli.main([*argv, "--calibration-data", str(data), "--calibration", "8"]) == 0
    return out


async def test_service_answers_with_an_int8_model(
    serve_app, app_checkpoint: Path, int8_model: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("HEATPOSE_HOME", str(tmp_path))
    image = np.random.default_rng(5).integers(0, 256, (140, 110, 3), dtype=np.uint8)
    xy = await predicted_keypoints(serve_app, image, onnx=str(int8_model))
    int8 = Predictor(load(app_checkpoint), "cpu", backend="onnxruntime", onnx_path=str(int8_model))
    (want,) = int8.predict([image], decode_mode="shift")[0]
    np.testing.assert_allclose(xy, want.keypoints, atol=0.05)  # what the INT8 file computes
    assert not (tmp_path / "backends").exists()  # the checkpoint was not exported again


async def test_onnx_of_another_checkpoint_stops_start_up(
    serve_app, int8_model: Path, tmp_path: Path
) -> None:
    import torch

    from models.pose.codec import HeatmapCodec
    from models.weights.checkpoint import build_model, save
    from models.weights.model_config import ModelConfig

    codec = HeatmapCodec(input_size=(96, 128), heatmap_size=(24, 32))
    config = ModelConfig(name="other", depth=18, codec_params=codec.to_dict())
    torch.manual_seed(1)
    save(tmp_path / "other.safetensors", build_model(config), config)
    other = str(tmp_path / "other.safetensors")
    with pytest.raises(StartupError, match=r"HEATPOSE_ONNX=.*not the checkpoint's 'other'"):
        async with serve_app(checkpoint=other, backend="onnxruntime", onnx=str(int8_model)):
            pass


async def test_tensorrt_without_cuda_refuses_to_start_naming_the_setting(serve_app) -> None:
    with pytest.raises(StartupError, match=r"HEATPOSE_BACKEND=tensorrt\) needs a CUDA device"):
        async with serve_app(backend="tensorrt", device="cpu"):
            pass


def test_unknown_backend_is_a_settings_error(monkeypatch) -> None:
    monkeypatch.setenv("HEATPOSE_CHECKPOINT", "m.safetensors")
    monkeypatch.setenv("HEATPOSE_BACKEND", "openvino")
    with pytest.raises(SettingsError, match="HEATPOSE_BACKEND"):
        load_settings()
