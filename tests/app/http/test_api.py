"""The real app on a small checkpoint: /predict matches the Predictor, /visualize, auth, ops."""

from __future__ import annotations

import asyncio
import base64
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.helpers.images import encode

pytestmark = pytest.mark.anyio

# Batches of other sizes run other kernels: float differences (~1e-6) may move DARK-decoded
# keypoints by a few hundredths of a pixel.
PX = 0.05


def image(h: int = 150, w: int = 100, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = cv2.resize(rng.integers(0, 256, (h // 10, w // 10, 3), dtype=np.uint8), (w, h))
    return np.asarray(a, dtype=np.uint8)


async def test_predict_matches_the_predictor(serve_app, reference) -> None:
    a, b = image(seed=1), image(120, 160, seed=2)
    boxes = [[[10, 20, 90, 140], [0, 0, 50, 60]], None]
    async with serve_app() as (client, _):
        r = await client.post(
            "/predict",
            files=[
                ("files", ("a.png", encode(a), "image/png")),
                ("files", ("b.png", encode(b), "image/png")),
            ],
            data={"boxes": str(boxes).replace("None", "null")},
            params={"decode": "shift", "flip_test": "false"},
        )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"]["name"] == "tiny-res18" and body["model"]["decode"] == "shift"
    assert body["model"]["input_size"] == {"width": 96, "height": 128}
    assert body["model"]["flip_test"] is False and len(body["model"]["keypoints"]) == 17
    expected = reference.predict(
        [a, b], [np.array(boxes[0]), None], flip_test=False, decode_mode="shift"
    )
    assert [im["filename"] for im in body["images"]] == ["a.png", "b.png"]
    assert (body["images"][1]["width"], body["images"][1]["height"]) == (160, 120)
    for got_image, want_image in zip(body["images"], expected, strict=True):
        assert len(got_image["persons"]) == len(want_image)
        for got, want in zip(got_image["persons"], want_image, strict=True):
            np.testing.assert_allclose(got["bbox"], want.box, atol=1e-6)
            xy = np.array([[k["x"], k["y"]] for k in got["keypoints"]])
            np.testing.assert_allclose(xy, want.keypoints, atol=PX)
            np.testing.assert_allclose(
                [k["score"] for k in got["keypoints"]], want.scores, rtol=1e-3, atol=1e-4
            )
            assert got["keypoints"][0]["name"] == "nose" and got["heatmaps"] is None
    assert body["timing"]["total_ms"] > 0 and "Server-Timing" in r.headers


async def test_flip_test_dark_and_heatmaps(serve_app, reference) -> None:
    a = image(seed=3)
    async with serve_app() as (client, _):
        r = await client.post(
            "/predict",
            files=[("files", ("a.png", encode(a), "image/png"))],
            params={"heatmaps": "true"},
        )
    assert r.status_code == 200, r.text
    (person,) = r.json()["images"][0]["persons"]
    (want,) = reference.predict([a], None, return_heatmaps=True)[0]  # flip + dark defaults
    assert r.json()["model"]["flip_test"] is True and r.json()["model"]["decode"] == "dark"
    assert person["bbox"] == [0.0, 0.0, 100.0, 150.0]
    xy = np.array([[k["x"], k["y"]] for k in person["keypoints"]])
    np.testing.assert_allclose(xy, want.keypoints, atol=PX)
    hm = person["heatmaps"]
    assert hm["shape"] == [17, 32, 24] and hm["dtype"] == "float32"
    arr = np.frombuffer(base64.b64decode(hm["data"]), "<f4").reshape(hm["shape"])
    np.testing.assert_allclose(arr, want.heatmaps, atol=1e-4)


async def test_exif_orientation_sets_the_coordinate_space(serve_app, reference) -> None:
    stored = image(100, 160, seed=4)  # landscape as stored
    pil = Image.fromarray(stored)
    exif = pil.getexif()
    exif[0x0112] = 8  # displayed rotated 90 degrees counter-clockwise: portrait
    data = encode(stored, "JPEG", quality=98, exif=exif.tobytes())
    shown = np.asarray(Image.open(io.BytesIO(data)).transpose(Image.Transpose.ROTATE_90))
    async with serve_app() as (client, _):
        r = await client.post("/predict", files=[("files", ("r.jpg", data, "image/jpeg"))])
    got = r.json()["images"][0]
    assert (got["width"], got["height"]) == (100, 160)
    (want,) = reference.predict([shown], None)[0]
    xy = np.array([[k["x"], k["y"]] for k in got["persons"][0]["keypoints"]])
    np.testing.assert_allclose(xy, want.keypoints, atol=PX)


async def test_empty_box_list_means_no_persons(serve_app) -> None:
    async with serve_app() as (client, _):
        up = [("files", ("a.png", encode(image()), "image/png"))]
        r = await client.post("/predict", files=up, data={"boxes": "[[]]"})
    assert r.status_code == 200 and r.json()["images"][0]["persons"] == []


async def test_visualize_png_at_the_oriented_size(serve_app) -> None:
    a = image(150, 100, seed=5)
    data = encode(a)
    box = "[[[0, 0, 50, 75]]]"  # top-left quarter only
    async with serve_app() as (client, _):
        out = {}
        for mode in ("heatmap", "skeleton", "both"):
            r = await client.post(
                "/visualize",
                files=[("file", ("a.png", data, "image/png"))],
                data={"boxes": box},
                params={"mode": mode, "kpt_thr": 0.0},
            )
            assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
            out[mode] = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
            assert out[mode].shape == (150, 100, 3)
        r = await client.post(
            "/visualize",
            files=[("file", ("a.png", data, "image/png"))],
            params={"keypoint": "left_wrist", "mode": "heatmap"},
        )
        assert r.status_code == 200
        r = await client.post(
            "/visualize",
            files=[("file", ("a.png", data, "image/png"))],
            params={"keypoint": "tail"},
        )
        assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_keypoint"
        assert "left_wrist" in r.json()["error"]["message"]
    heat = out["heatmap"]
    # the crop region (box enlarged to 3:4, x1.25) is tinted; far outside it nothing changed
    assert np.abs(heat[:40, :30].astype(int) - a[:40, :30]).mean() > 5
    np.testing.assert_array_equal(heat[120:, 80:], a[120:, 80:])
    assert not np.array_equal(out["skeleton"], a)  # threshold 0: every keypoint is drawn
    assert not np.array_equal(out["both"], out["heatmap"])


async def test_api_key_guards_model_routes_only(serve_app) -> None:
    upload = [("files", ("a.png", encode(image()), "image/png"))]
    async with serve_app(api_key="s3cret") as (client, _):
        for headers in ({}, {"Authorization": "Bearer nope"}, {"X-API-Key": "s3cre"}):
            r = await client.post("/predict", files=upload, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
            assert r.headers["www-authenticate"] == "Bearer"
        assert (await client.get("/v1/model")).status_code == 401
        assert (await client.post("/visualize", files=[("file", upload[0][1])])).status_code == 401
        bearer = {"Authorization": "Bearer s3cret"}
        ok1 = await client.post("/predict", files=upload, headers=bearer)
        ok2 = await client.post("/predict", files=upload, headers={"X-API-Key": "s3cret"})
        assert ok1.status_code == ok2.status_code == 200
        model = await client.get("/v1/model", headers={"X-API-Key": "s3cret"})
        assert model.status_code == 200
        for path in ("/health", "/ready", "/metrics"):
            assert (await client.get(path)).status_code == 200


async def test_ops_routes(serve_app, app_checkpoint) -> None:
    async with serve_app() as (client, app):
        assert (await client.get("/health")).json() == {"status": "ok"}
        assert (await client.get("/ready")).json() == {
            "ready": True,
            "model": "tiny-res18",
            "device": "cpu",
        }
        meta = (await client.get("/v1/model")).json()
        assert meta["name"] == "tiny-res18" and meta["architecture"]["depth"] == 18
        assert meta["input_size"] == [96, 128] and meta["heatmap_size"] == [24, 32]
        assert meta["keypoints"]["names"][0] == "nose" and meta["checkpoint"] == app_checkpoint.name
        await client.post("/predict", files=[("files", ("a.png", encode(image()), "image/png"))])
        text = (await client.get("/metrics")).text
        for needle in (
            'heatpose_requests_total{method="POST",route="/predict",status="200"} 1.0',
            "heatpose_request_latency_seconds_bucket",
            "heatpose_batch_size_count 1.0",
            "heatpose_queue_depth 0.0",
            "heatpose_inference_seconds_count 1.0",
        ):
            assert needle in text
        app.state.service.begin_drain()  # what SIGTERM does at once
        r = await client.get("/ready")
        assert r.status_code == 503 and "shutting down" in r.json()["error"]["message"]
        up = [("files", ("a.png", encode(image()), "image/png"))]
        r = await client.post("/predict", files=up)
        assert r.status_code == 200  # still served during the drain delay
        app.state.service.stopping = True  # what the end of the drain delay does
        r = await client.post("/predict", files=up)
        assert r.status_code == 503 and r.json()["error"]["code"] == "shutting_down"


async def test_not_ready_before_start_and_after_the_batcher_dies(serve_app, app_checkpoint) -> None:
    import httpx

    from app.main import create_app
    from app.settings import Settings

    cold = create_app(Settings(_env_file=None, checkpoint=str(app_checkpoint), detector="none"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=cold), base_url="http://a") as c:
        r = await c.get("/ready")
        assert r.status_code == 503 and "not loaded" in r.json()["error"]["message"]
        assert (await c.get("/health")).status_code == 200
    async with serve_app() as (client, app):
        batcher = app.state.service.batcher
        assert batcher._task is not None
        batcher._task.cancel()  # the loop is gone
        await asyncio.sleep(0.05)
        r = await client.get("/ready")
        assert r.status_code == 503 and "batcher" in r.json()["error"]["message"]


async def test_docs_cors_and_errors_for_unknown_routes(serve_app) -> None:
    async with serve_app(cors_origins=["https://ui.example"]) as (client, _):
        assert (await client.get("/docs")).status_code == 200
        schema = (await client.get("/openapi.json")).json()
        assert {"/predict", "/visualize", "/health", "/ready", "/metrics", "/v1/model"} <= set(
            schema["paths"]
        )
        pre = await client.options(
            "/predict",
            headers={"Origin": "https://ui.example", "Access-Control-Request-Method": "POST"},
        )
        assert pre.headers["access-control-allow-origin"] == "https://ui.example"
        r = await client.get("/nope")
        assert r.status_code == 404 and r.json() == {
            "error": {"code": "not_found", "message": "no route GET /nope"}
        }
        r = await client.get("/predict")
        assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_json_logs(capsys: pytest.CaptureFixture[str]) -> None:
    import json
    import logging

    from app.observability.logs import configure_logging

    configure_logging("info", json_logs=True)
    try:
        logging.getLogger("heatpose.app").info("hello %s", "world")
        line = capsys.readouterr().err.strip().splitlines()[-1]
        record = json.loads(line)
        assert record["message"] == "hello world" and record["level"] == "info"
        assert record["logger"] == "heatpose.app"
    finally:
        for name in ("heatpose", "uvicorn", "uvicorn.error", "uvicorn.access"):
            logger = logging.getLogger(name)
            logger.handlers.clear()
            logger.propagate = True
            logger.setLevel(logging.NOTSET)


async def test_predict_and_visualize_resolve_defaults_the_same_way(serve_app, reference) -> None:
    a = image(seed=6)
    up = [("files", ("a.png", encode(a), "image/png"))]
    one = [("file", ("a.png", encode(a), "image/png"))]
    async with serve_app(flip_test=False, decode_mode="argmax") as (client, _):
        r = await client.post("/predict", files=up)
        assert r.json()["model"]["flip_test"] is False and r.json()["model"]["decode"] == "argmax"
        (want,) = reference.predict([a], None, flip_test=False, decode_mode="argmax")[0]
        xy = np.array([[k["x"], k["y"]] for k in r.json()["images"][0]["persons"][0]["keypoints"]])
        np.testing.assert_allclose(xy, want.keypoints, atol=PX)
        drawn = {}
        for name, params in {
            "default": {},
            "explicit": {"flip_test": "false", "decode": "argmax"},
            "other": {"flip_test": "true", "decode": "dark"},
        }.items():
            v = await client.post(
                "/visualize", files=one, params={"mode": "skeleton", "kpt_thr": 0, **params}
            )
            assert v.status_code == 200, v.text
            drawn[name] = np.asarray(Image.open(io.BytesIO(v.content)).convert("RGB"))
    np.testing.assert_array_equal(drawn["default"], drawn["explicit"])
    assert not np.array_equal(drawn["default"], drawn["other"])


def test_every_route_dependency_runs_on_the_event_loop() -> None:
    """A plain ``def`` dependency costs a thread-pool hop per request (FastAPI runs it in
    ``run_in_threadpool``); all of ours are cheap and ``async``."""
    import inspect

    from fastapi.routing import APIRoute

    from app.http.routes import ops, predict, stream, visualize

    def calls(dependant) -> list:  # type: ignore[no-untyped-def]
        return [c for d in dependant.dependencies for c in (d.call, *calls(d))]

    routes = [r for m in (predict, visualize, ops, stream) for r in m.router.routes]
    found = {c for r in routes if isinstance(r, APIRoute) for c in calls(r.dependant) if c}
    names = {getattr(c, "__name__", "") for c in found}
    assert {"get_service", "require_api_key"} <= names
    sync = [
        c
        for c in found
        if not (inspect.iscoroutinefunction(c) or inspect.isasyncgenfunction(c))
        and getattr(c, "__module__", "").startswith("app.")
    ]
    assert sync == []
