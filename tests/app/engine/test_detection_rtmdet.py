"""The service and ``heatpose predict`` with an RTMDet file (random RTMDet-nano weights in the
published layout): their boxes are the detector's own, on torch and on ONNX Runtime; ``auto``
is RTMDet."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.detection.rtmdet import RTMDetector
from tests.app.engine.test_detection import upload
from tests.models.detection.test_export_detector import assert_same_detections, untied_threshold
from tests.models.lively_rtmdet import photos, write_rtmdet

pytestmark = pytest.mark.anyio


def direct(path: Path, image: np.ndarray, thr: float):
    """The detector called directly, at the service's defaults (NMS 0.3, 3 persons)."""
    return RTMDetector.from_file(path, device="cpu").detect([image], thr, 0.3, 3)[0]


def untied(path: Path, image: np.ndarray) -> float:
    """A threshold above every tied score of ``image`` (see ``untied_threshold``)."""
    det = RTMDetector.from_file(path, device="cpu")
    with torch.inference_mode():
        scores, _ = det.network(det.preprocess([image])[0])
    return max(untied_threshold(scores), 0.3)


async def post(client, image: np.ndarray, thr: float) -> list[dict]:
    r = await client.post(
        "/predict", files=upload(image), params={"bbox_thr": thr, "max_persons": 3}
    )
    assert r.status_code == 200, r.text
    return r.json()["images"][0]["persons"]


@pytest.mark.slow
async def test_service_serves_an_rtmdet_safetensors_file(serve_app, tmp_path: Path) -> None:
    path = write_rtmdet(tmp_path / "rtmdet-nano.safetensors")
    image = photos()[0]
    want = direct(path, image, 0.3)
    async with serve_app(detector=str(path), device="cpu", batch_buckets="1,2,4") as (client, app):
        info = (await client.get("/v1/model")).json()
        assert str(path) in info["detector"]
        served = app.state.service.detector
        assert (served.backend, served.buckets, served.input_size) == ("torch", (1, 2, 4), 320)
        persons = await post(client, image, 0.3)
    assert len(persons) == len(want.boxes) == 3
    assert all(p["bbox_source"] == "detector" for p in persons)
    np.testing.assert_allclose([p["bbox"] for p in persons], want.boxes, atol=0.05)
    np.testing.assert_allclose([p["bbox_score"] for p in persons], want.scores, atol=1e-4)


@pytest.mark.slow
async def test_service_runs_the_detector_on_onnxruntime(serve_app, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HEATPOSE_HOME", str(tmp_path))  # the ONNX cache
    path = write_rtmdet(tmp_path / "rtmdet_nano.pth")
    image = photos()[1]
    thr = untied(path, image)
    want = direct(path, image, thr)
    async with serve_app(detector=str(path), device="cpu", backend="onnxruntime") as (client, app):
        assert app.state.service.detector.backend == "onnxruntime"
        persons = await post(client, image, thr)
    got = [
        np.array([p["bbox"] for p in persons]).reshape(-1, 4),
        [p["bbox_score"] for p in persons],
    ]
    from models.detection.detector import Detections

    got_det = Detections(got[0].astype(np.float32), np.array(got[1], np.float32))
    assert_same_detections([got_det], [want])  # within 0.5 px
    assert list(tmp_path.glob("backends/*.onnx"))  # exported once, cached


@pytest.mark.slow
def test_predict_cli_takes_an_rtmdet_file(app_checkpoint: Path, tmp_path: Path) -> None:
    from PIL import Image

    from heatpose_cli.predict import main

    weights = write_rtmdet(tmp_path / "rtmdet_nano.pth")
    image = photos()[2]
    src = tmp_path / "three.png"
    Image.fromarray(image).save(src)
    out = tmp_path / "out"
    args = [str(src), "--out", str(out), "--checkpoint", str(app_checkpoint)]
    assert main([*args, "--detector", str(weights), "--device", "cpu", "--max-persons", "3"]) == 0
    want = direct(weights, image, 0.3)
    doc = json.loads((out / "three.json").read_text())
    boxes = np.array([p["bbox"] for p in doc["persons"]]).reshape(-1, 4)
    assert len(want.boxes) > 0
    np.testing.assert_allclose(boxes, want.boxes, atol=1e-3)
