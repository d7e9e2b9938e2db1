"""The start-up self-check (app/engine/selfcheck.py): the built-in request through the configured
path and the plain one before /ready; a failing or disagreeing acceleration is turned off (the
service chose it) or stops start-up (it was named).

On the CPU the service never chooses nvJPEG or device crops by itself (``auto`` picks them on
CUDA only); :func:`auto_accelerates` makes the check see ``auto`` as CUDA does, so the
fallbacks are tested here. The stand-ins sit where the real calls are: torchvision's
``decode_jpeg`` (app/intake/torch_decode.py), the batched crop (models/pose/geometry.py) and the
backend factory (models/runtime/backends.py)."""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

import app.engine.selfcheck_features as features
import app.intake.torch_decode as td
from app.engine.selfcheck_request import builtin_request
from app.engine.startup import StartupError
from models.inference.predictor import Predictor
from models.pose import geometry
from models.runtime import backends
from models.weights.checkpoint import load
from tests.helpers.images import encode, noise

pytestmark = pytest.mark.anyio
ACCELERATIONS = ("decode", "crop", "backend", "amp")


@pytest.fixture
def auto_accelerates(monkeypatch) -> None:
    """``HEATPOSE_DECODE=auto`` / ``HEATPOSE_CROP=auto`` count as on, as on a CUDA device."""
    monkeypatch.setattr(features, "decodes_with_torch", lambda s, d: s.decode != "pillow")
    monkeypatch.setattr(features, "crops_on_device", lambda setting, d: setting != "cv2")


def shifted(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``t`` moved by one pixel along ``dim`` (what a subtly wrong kernel might do)."""
    return t.roll(1, dims=dim)


class Raising(RuntimeError):
    pass


def break_decoder(monkeypatch, how: str) -> None:
    real = td.decode_jpeg

    def stand_in(datas, **kw):
        if how == "raise":
            raise OSError("decoder stand-in: no JPEG today")
        return [shifted(t, -1) for t in real(datas, **kw)]  # (3, H, W): one px right

    monkeypatch.setattr(td, "decode_jpeg", stand_in)


def break_cropper(monkeypatch, how: str) -> None:
    real = geometry.crop_persons_batched

    def stand_in(*args, **kw):
        if how == "raise":
            raise Raising("cropper stand-in: out of luck")
        return shifted(real(*args, **kw), 2)  # (B, h, w, 3): one crop px right

    monkeypatch.setattr(geometry, "crop_persons_batched", stand_in)


def break_backend(monkeypatch, how: str) -> None:
    """The forward call, wrong on real crops only: the warm-up's black crops pass (uniform
    input), the self-check's do not."""
    create = backends.create

    class StandIn:
        def __init__(self, inner: backends.Backend) -> None:
            self.inner, self.name = inner, "stand-in"

        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            out = self.inner(x)
            if x.flatten(2).std(-1).max() == 0:  # every crop one colour: the warm-up's
                return out
            if how == "raise":
                raise Raising("backend stand-in: kernel fault")
            return shifted(out, -1)  # one heatmap px right

    monkeypatch.setattr(backends, "create", lambda *a, **k: StandIn(create(*a, **k)))


BREAK = {"decode": break_decoder, "crop": break_cropper, "backend": break_backend}
AUTO = {"decode": {}, "crop": {}, "backend": {}}  # auto (backend: not set)
NAMED = {"decode": {"decode": "torch"}, "crop": {"crop": "device"}, "backend": {"backend": "torch"}}
SETTING = {"decode": "HEATPOSE_DECODE", "crop": "HEATPOSE_CROP", "backend": "HEATPOSE_BACKEND"}


def gauge(metrics: str, feature: str) -> float:
    (line,) = [
        ln for ln in metrics.splitlines() if f'heatpose_fallback{{feature="{feature}"}}' in ln
    ]
    return float(line.split()[-1])


def jpeg(seed: int) -> bytes:
    return encode(noise(120, 90, seed), "JPEG", quality=95)


def test_the_builtin_request_is_small_rotated_jpegs_with_and_without_boxes() -> None:
    uploads = builtin_request()
    assert [u.boxes is None for u in uploads] == [False, True]
    for u, tag in zip(uploads, (6, 3), strict=True):
        assert u.data[:3] == b"\xff\xd8\xff" and len(u.data) < 16_000
        img = Image.open(io.BytesIO(u.data))
        assert img.getexif()[0x0112] == tag and img.size == (160, 120)  # stored landscape
    assert builtin_request() is uploads  # made once


async def test_default_start_checks_the_plain_path_and_says_so(
    serve_app, app_checkpoint, caplog
) -> None:
    caplog.set_level(logging.INFO, "heatpose.app")
    async with serve_app() as (client, app):
        report = app.state.service.selfcheck
        plain = report.check("plain")
        assert plain.state == "on" and plain.answered == "2 images, 2 persons"
        assert report.seconds >= plain.seconds > 0
        info = (await client.get("/v1/model")).json()["features"]
        assert {k: v["state"] for k, v in info.items()} == dict.fromkeys(ACCELERATIONS, "unused")
        assert info["decode"]["setting"] == "HEATPOSE_DECODE=auto"
        metrics = (await client.get("/metrics")).text
        assert [gauge(metrics, f) for f in ACCELERATIONS] == [0.0] * 4
        assert "heatpose_selfcheck_seconds " in metrics
    assert [r.message for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert any("self-check passed" in r.message for r in caplog.records)


def test_the_reference_run_is_what_the_predictor_computes(app_checkpoint) -> None:
    """The plain path of the check answers what Predictor.predict does on Pillow's pixels."""
    from app.engine.selfcheck_request import RequestPath, plain_twin

    predictor = Predictor(load(app_checkpoint), "cpu")
    path = RequestPath(
        builtin_request(), flip_test=True, decode_mode="dark", detector=None, nms_thr=0.3
    )
    images = path.decode_plain()
    assert [im.shape for im in images] == [(160, 120, 3), (120, 160, 3)]
    run = path.run(images, path.persons(images), plain_twin(predictor), on_device=False)
    boxes = [u.boxes for u in builtin_request()]
    want = [p for per in predictor.predict(images, boxes, flip_test=True) for p in per]
    np.testing.assert_allclose(run.keypoints, np.stack([p.keypoints for p in want]), atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("feature", ["decode", "crop", "backend"])
@pytest.mark.parametrize("how", ["raise", "shift"])
async def test_an_auto_acceleration_that_fails_is_turned_off_and_said_once(
    serve_app, auto_accelerates, monkeypatch, caplog, reference, feature: str, how: str
) -> None:
    caplog.set_level(logging.INFO, "heatpose.app")
    BREAK[feature](monkeypatch, how)
    files = [("files", ("a.jpg", jpeg(1), "image/jpeg"))]
    async with serve_app(**AUTO[feature]) as (client, _):
        assert (await client.get("/ready")).status_code == 200
        info = (await client.get("/v1/model")).json()["features"]
        states = {k: v["state"] for k, v in info.items()}
        others = {"decode": "on", "crop": "on", "backend": "unused", "amp": "unused"}
        assert states == {**others, feature: "off"}
        if how == "raise":
            assert "raised" in info[feature]["detail"]
        else:
            assert "disagrees" in info[feature]["detail"]
        metrics = (await client.get("/metrics")).text
        assert [gauge(metrics, f) for f in ACCELERATIONS] == [
            1.0 if f == feature else 0.0 for f in ACCELERATIONS
        ]
        r = await client.post("/predict", files=files, params={"flip_test": "true"})
        assert r.status_code == 200, r.text
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(SETTING[feature]), warnings
    assert f'heatpose_fallback{{feature="{feature}"}} = 1' in warnings[0]
    # what is served now is the plain path's answer
    (person,) = r.json()["images"][0]["persons"]
    got = np.array([[k["x"], k["y"]] for k in person["keypoints"]])
    image = np.asarray(Image.open(io.BytesIO(jpeg(1))))  # Pillow's pixels
    (want,) = reference.predict([image], flip_test=True)[0]
    np.testing.assert_allclose(got, want.keypoints, atol=0.05)


@pytest.mark.parametrize("feature", ["decode", "crop", "backend"])
async def test_a_named_acceleration_that_fails_stops_start_up_in_one_line(
    serve_app, auto_accelerates, monkeypatch, feature: str
) -> None:
    BREAK[feature](monkeypatch, "shift")
    with pytest.raises(StartupError) as e:
        async with serve_app(**NAMED[feature]):
            pass
    line = str(e.value)
    assert "\n" not in line and line.startswith(f"{SETTING[feature]}="), line
    assert "self-check failed" in line and "disagrees" in line


async def test_accelerations_that_agree_stay_on(serve_app, auto_accelerates) -> None:
    async with serve_app(batch_buckets="2,4") as (client, app):
        report = app.state.service.selfcheck
        states = {c.feature: c.state for c in report.checks}
        assert states == {
            "plain": "on",
            "decode": "on",
            "crop": "on",
            "backend": "on",
            "amp": "unused",
            "path": "on",
        }
        assert report.check("backend").tried == "torch forward at batch 2 on cpu"
        # torchvision's CPU decoder is libjpeg-turbo, as Pillow's
        assert report.check("decode").difference.startswith("pixels 0.00 grey levels")
        service = app.state.service
        assert (service.settings.decode, service.settings.crop) == ("torch", "device")
        r = await client.post("/predict", files=[("files", ("a.jpg", jpeg(2), "image/jpeg"))])
        assert r.status_code == 200, r.text


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
async def test_cuda_defaults_pass_the_real_check(serve_app) -> None:
    """On CUDA the defaults (nvJPEG, device crops, buckets, AMP) pass the check and stay on."""
    async with serve_app(device="cuda") as (client, app):
        report = app.state.service.selfcheck
        rows = {c.feature: (c.state, c.answered) for c in report.checks}
        assert all(state == "on" for state, _ in rows.values() if state != "unused"), rows
        assert {rows[f][0] for f in ("decode", "crop", "backend", "amp")} == {"on"}, rows
        assert (await client.get("/ready")).status_code == 200
        print(json.dumps({c.feature: [c.state, c.answered, c.seconds] for c in report.checks}))
