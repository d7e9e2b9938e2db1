"""HEATPOSE_BACKEND: the service serves through the chosen backend, or refuses to start clearly."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from app.settings import SettingsError, load_settings
from app.startup import StartupError
from models.checkpoint import load
from models.predictor import Predictor

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_onnxruntime_service_answers_what_the_torch_predictor_does(
    serve_app, app_checkpoint, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("HEATPOSE_HOME", str(tmp_path))  # the ONNX cache lands here
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (140, 110, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    async with serve_app(backend="onnxruntime") as (client, app):
        assert app.state.service.predictor.forward.name == "onnxruntime"
        r = await client.post(
            "/predict",
            files=[("files", ("a.png", buf.getvalue(), "image/png"))],
            params={"decode": "shift", "flip_test": "true"},
        )
    assert r.status_code == 200, r.text
    (person,) = r.json()["images"][0]["persons"]
    (want,) = Predictor(load(app_checkpoint), "cpu").predict([image], decode_mode="shift")[0]
    xy = np.array([[k["x"], k["y"]] for k in person["keypoints"]])
    np.testing.assert_allclose(xy, want.keypoints, atol=0.05)
    assert len(list((tmp_path / "backends").glob("*.onnx"))) == 1


async def test_tensorrt_without_cuda_refuses_to_start_naming_the_setting(serve_app) -> None:
    with pytest.raises(StartupError, match=r"HEATPOSE_BACKEND=tensorrt\) needs a CUDA device"):
        async with serve_app(backend="tensorrt", device="cpu"):
            pass


def test_unknown_backend_is_a_settings_error(monkeypatch) -> None:
    monkeypatch.setenv("HEATPOSE_CHECKPOINT", "m.safetensors")
    monkeypatch.setenv("HEATPOSE_BACKEND", "openvino")
    with pytest.raises(SettingsError, match="HEATPOSE_BACKEND"):
        load_settings()
