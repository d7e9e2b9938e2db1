"""HEATPOSE_DETECTOR=auto is optional, a named detector required
(models/detection/detector_choice.py): the service starts without auto's detector when its weights
cannot be had and says so in the log (once), /v1/model, /health's details and every /predict
answer."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

import app.engine.startup
from app.engine.startup import StartupError
from models.detection.detector import build_torchvision_model
from models.weights.checkpoint import save_state_dict
from tests.app.engine.test_detection import upload
from tests.app.http.test_api import image

pytestmark = pytest.mark.anyio

OFFLINE = "http://127.0.0.1:9"  # a closed loopback port: the weight host is unreachable


@pytest.fixture
def empty_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No cached weights, no reachable weight host."""
    monkeypatch.setenv("HEATPOSE_HOME", str(tmp_path))
    monkeypatch.setenv("HEATPOSE_WEIGHTS_URL", OFFLINE)
    return tmp_path


async def test_auto_without_weights_serves_without_a_detector_and_says_so(
    serve_app, empty_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="heatpose"):
        async with serve_app(detector="auto", device="cpu") as (client, _):
            info = (await client.get("/v1/model")).json()
            health = (await client.get("/health")).json()
            r = await client.post("/predict", files=upload(image()))
            detect = await client.post("/predict", files=upload(image()), params={"detect": "true"})
    off = info["detector_off"]
    assert info["detector"] is None
    assert "person detection is off" in off and "cannot download" in off
    assert "boxes" in off  # how to send boxes instead
    assert health == {"status": "ok", "details": {"detector": off}}
    assert r.status_code == 200 and r.json()["model"]["detection_off"] == off
    (person,) = r.json()["images"][0]["persons"]
    assert person["bbox_source"] == "image"
    assert detect.status_code == 422 and detect.json()["error"]["code"] == "no_detector"
    said = [rec for rec in caplog.records if "person detection is off" in rec.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    assert not list(empty_home.rglob("*.safetensors"))


async def test_named_detector_without_weights_stops_the_start(serve_app, empty_home: Path) -> None:
    with pytest.raises(
        StartupError, match=r"HEATPOSE_DETECTOR=.person-frcnn-mbv3.*cannot download"
    ):
        async with serve_app(detector="person-frcnn-mbv3", device="cpu"):
            pass


@pytest.mark.slow
async def test_detector_none_is_said_in_predict_but_health_stays_plain(serve_app) -> None:
    async with serve_app(detector="none") as (client, _):
        r = await client.post("/predict", files=upload(image()))
        health = (await client.get("/health")).json()
        info = (await client.get("/v1/model")).json()
    assert "HEATPOSE_DETECTOR=none" in r.json()["model"]["detection_off"]
    assert info["detector_off"] == r.json()["model"]["detection_off"]
    assert health == {"status": "ok"}  # the operator's own choice, not a degradation


@pytest.mark.slow
async def test_auto_with_cached_weights_uses_them(
    serve_app, empty_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever name auto picks: its cached artifact (the layout `heatpose weights fetch` writes
    under HEATPOSE_HOME) is loaded without a download."""
    monkeypatch.setattr(
        app.engine.startup, "detector_name", lambda setting, device: "person-frcnn-mbv3"
    )
    torch.manual_seed(0)
    state = build_torchvision_model("person-frcnn-mbv3").state_dict()
    save_state_dict(
        empty_home / "person-frcnn-mbv3.safetensors", state, {"arch": "person-frcnn-mbv3"}
    )
    async with serve_app(detector="auto", device="cpu") as (client, _):
        info = (await client.get("/v1/model")).json()
        health = (await client.get("/health")).json()
        r = await client.post("/predict", files=upload(image()), params={"detect": "true"})
    assert info["detector_off"] is None and "person-frcnn-mbv3" in info["detector"]
    assert health == {"status": "ok"}
    assert r.status_code == 200 and r.json()["model"]["detection_off"] is None
    assert {p["bbox_source"] for p in r.json()["images"][0]["persons"]} <= {"detector"}
