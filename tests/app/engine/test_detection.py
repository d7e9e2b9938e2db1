"""The service detects persons in images without boxes: a stand-in detector behind
``PersonDetector.detect``'s interface (and once the real one, random weights, via the setting)."""

from __future__ import annotations

import asyncio
import io
import re
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from app.render.overlay import PALETTE, blend_heat
from models.detection.detector import PersonDetector, build_torchvision_model
from models.pose.persons import PersonBoxes
from tests.app.http.test_api import PX, image
from tests.helpers.detectors import StandInDetector
from tests.helpers.images import encode
from tests.helpers.stages import until_idle

pytestmark = pytest.mark.anyio

# Three people in a 640x480 image; the detector's scores are not sorted.
BOXES = np.array([[40, 60, 200, 420], [260, 40, 400, 460], [430, 100, 600, 440]], np.float32)
SCORES = np.array([0.55, 0.95, 0.7], np.float32)
ORDER = np.argsort(-SCORES)


class StandIn(StandInDetector):
    """The shared stand-in (known boxes, calls recorded, ``gate``) with these three people by
    default."""

    def __init__(self, boxes: np.ndarray = BOXES, scores: np.ndarray = SCORES) -> None:
        super().__init__(boxes, scores)


def upload(a: np.ndarray, name: str = "a.png", field: str = "files") -> list:
    return [(field, (name, encode(a), "image/png"))]


async def test_three_detected_people_sorted_by_score(serve_app, reference) -> None:
    a = image(480, 640, seed=5)
    det = StandIn()
    async with serve_app(stand_in=det) as (client, _):
        det.calls.clear()  # the start-up warm-up and self-check calls
        r = await client.post("/predict", files=upload(a), params={"flip_test": "false"})
    assert r.status_code == 200, r.text
    persons = r.json()["images"][0]["persons"]
    assert det.calls == [(1, 0.3, 0.3, 20)]  # the service's NMS setting, the request's cap
    assert [p["bbox_source"] for p in persons] == ["detector"] * 3
    assert [p["bbox_score"] for p in persons] == pytest.approx(SCORES[ORDER].tolist())
    # the same boxes through the Predictor: the same keypoints
    boxes = PersonBoxes(BOXES[ORDER].astype(np.float64), SCORES[ORDER], "detector")
    (want,) = reference.predict([a], [boxes], flip_test=False)
    for got, w in zip(persons, want, strict=True):
        np.testing.assert_allclose(got["bbox"], w.box, atol=1e-4)
        xy = np.array([[k["x"], k["y"]] for k in got["keypoints"]])
        np.testing.assert_allclose(xy, w.keypoints, atol=PX)


@pytest.mark.slow
async def test_client_boxes_are_not_detected_and_detect_modes(serve_app) -> None:
    a = image(480, 640, seed=6)
    det = StandIn()
    async with serve_app(stand_in=det) as (client, _):
        det.calls.clear()  # the start-up warm-up and self-check calls
        two = upload(a, "a.png") + upload(a, "b.png")
        r = await client.post("/predict", files=two, data={"boxes": "[[[10, 10, 100, 200]], null]"})
        given, found = (im["persons"] for im in r.json()["images"])
        assert det.calls == [(1, 0.3, 0.3, 20)]  # only the image without boxes
        assert [(p["bbox_source"], p["bbox_score"]) for p in given] == [("client", None)]
        assert len(found) == 3
        r = await client.post("/predict", files=upload(a), params={"detect": "false"})
        (whole,) = r.json()["images"][0]["persons"]
        assert whole["bbox_source"] == "image" and whole["bbox_score"] is None
        r = await client.post(
            "/predict",
            files=upload(a),
            params={"detect": "true"},
            data={"boxes": "[[[1, 1, 9, 9]]]"},
        )
        assert [p["bbox_source"] for p in r.json()["images"][0]["persons"]] == ["detector"] * 3


@pytest.mark.slow
async def test_nobody_many_people_and_the_max_persons_limit(serve_app) -> None:
    a = image(480, 640, seed=7)
    none = StandIn(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    async with serve_app(stand_in=none) as (client, _):
        r = await client.post("/predict", files=upload(a))
        assert r.status_code == 200 and r.json()["images"][0]["persons"] == []
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 400, (30, 2))
    many = np.concatenate([xy, xy + 150], 1).astype(np.float32)
    scores = rng.permutation(np.linspace(0.31, 0.99, 30)).astype(np.float32)
    async with serve_app(stand_in=StandIn(many, scores), max_persons=25) as (client, _):
        r = await client.post("/predict", files=upload(a))
        got = [p["bbox_score"] for p in r.json()["images"][0]["persons"]]
        assert got == pytest.approx(np.sort(scores)[::-1][:20].tolist())  # default 20, best
        r = await client.post("/predict", files=upload(a), params={"max_persons": 4})
        assert len(r.json()["images"][0]["persons"]) == 4
        r = await client.post("/predict", files=upload(a), params={"bbox_thr": 0.9})
        assert all(p["bbox_score"] >= 0.9 for p in r.json()["images"][0]["persons"])
        assert len(r.json()["images"][0]["persons"]) == int((scores >= 0.9).sum())
        r = await client.post("/predict", files=upload(a), params={"max_persons": 26})
        assert r.status_code == 422 and "HEATPOSE_MAX_PERSONS" in r.json()["error"]["message"]


@pytest.mark.slow
async def test_unknown_query_parameters_are_named(serve_app) -> None:
    async with serve_app() as (client, _):
        for route, field in (("/predict", "files"), ("/visualize", "file")):
            r = await client.post(
                route, files=upload(image(), field=field), params={"max_person": 3, "kpt_thr": 0.2}
            )
            assert r.status_code == 422, (route, r.text)
            body = r.json()["error"]
            assert body["code"] == "unknown_query_parameter" and "'max_person'" in body["message"]
            assert "max_persons" in body["message"]  # what the route does take


@pytest.mark.slow
async def test_kpt_thr_sets_visible_flags(serve_app) -> None:
    async with serve_app() as (client, _):
        r = await client.post("/predict", files=upload(image()))
        scores = [k["score"] for k in r.json()["images"][0]["persons"][0]["keypoints"]]
        thr = float(np.median(scores))
        r = await client.post("/predict", files=upload(image()), params={"kpt_thr": thr})
        kps = r.json()["images"][0]["persons"][0]["keypoints"]
    assert [k["visible"] for k in kps] == [k["score"] >= thr for k in kps]
    assert 0 < sum(k["visible"] for k in kps) < len(kps)


async def test_without_a_detector_whole_images_and_detect_true_is_422(serve_app) -> None:
    async with serve_app() as (client, _):  # detector "none"
        r = await client.post("/predict", files=upload(image()))
        (p,) = r.json()["images"][0]["persons"]
        assert (p["bbox_source"], p["bbox_score"]) == ("image", None)
        r = await client.post("/predict", files=upload(image()), params={"detect": "true"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "no_detector"
        assert (await client.get("/v1/model")).json()["detector"] is None


def histogram_counts(text: str, name: str) -> tuple[float, float]:
    """(count of observations <= 1, total count) of a Prometheus histogram."""
    one = re.search(rf'^{name}_bucket{{le="1.0"}} ([0-9.]+)$', text, re.M)
    total = re.search(rf"^{name}_count ([0-9.]+)$", text, re.M)
    assert one and total, text
    return float(one.group(1)), float(total.group(1))


@pytest.mark.slow
async def test_concurrent_requests_share_detector_passes(serve_app) -> None:
    det = StandIn()
    det.gate = threading.Event()
    async with serve_app(stand_in=det, max_queue_delay_ms=20) as (client, _):
        det.calls.clear()  # the start-up warm-up and self-check calls
        a = image(480, 640, seed=8)
        first = asyncio.ensure_future(client.post("/predict", files=upload(a)))
        await asyncio.sleep(0.3)  # the detector is busy with the first image
        rest = [asyncio.ensure_future(client.post("/predict", files=upload(a))) for _ in range(5)]
        await asyncio.sleep(0.5)  # the five queue up meanwhile
        det.gate.set()
        answers = await asyncio.gather(first, *rest)
        assert all(len(r.json()["images"][0]["persons"]) == 3 for r in answers)
        text = (await client.get("/metrics")).text
    assert max(n for n, *_ in det.calls) > 1
    ones, total = histogram_counts(text, "heatpose_detector_batch_size")
    assert total == len(det.calls) and ones < total  # a batch of more than one image
    assert re.search(r"^heatpose_detector_inference_seconds_count [1-9]", text, re.M)


@pytest.mark.slow
async def test_detector_stage_queue_full_and_deadline(serve_app) -> None:
    det = StandIn()
    det.gate = threading.Event()
    settings = {"detector_max_queued_images": 2, "request_timeout_s": 1.5}
    async with serve_app(stand_in=det, **settings) as (client, app):
        det.calls.clear()  # the start-up warm-up and self-check calls
        a = image(480, 640, seed=9)
        busy = asyncio.ensure_future(client.post("/predict", files=upload(a)))
        await asyncio.sleep(0.3)  # on the worker; the queue is empty
        queued = asyncio.ensure_future(client.post("/predict", files=upload(a) + upload(a, "b")))
        await asyncio.sleep(0.2)
        r = await client.post("/predict", files=upload(a))  # a third image: no room
        assert r.status_code == 503 and r.json()["error"]["code"] == "overloaded"
        assert "person detector" in r.json()["error"]["message"] and "Retry-After" in r.headers
        timed_out = await busy  # the gate holds past the 1.5 s deadline
        assert timed_out.status_code == 504
        # the stuck batch is evidence it cannot finish in time: refused at once, or timed out
        assert (await queued).status_code in (503, 504)
        det.gate.set()
        await until_idle(app.state.service.detector_batcher)
        assert (await client.post("/predict", files=upload(a))).status_code == 200
        await app.state.service.detector_batcher.drain(1.0)  # the detector stage is gone
        r = await client.post("/predict", files=upload(a))
        assert r.status_code == 503


def test_heat_layer_is_transparent_where_the_heat_is_low() -> None:
    grey = np.full((40, 60, 3), 128, np.uint8)
    heat = np.zeros((40, 60), np.float32)
    heat[:, 30:] = np.linspace(0, 1, 30)[None]
    out = blend_heat(grey, heat, np.ones_like(heat), alpha=0.6)
    assert (out[:, :31] == 128).all()  # no heat: the image unchanged (no tint over the crop)
    change = np.abs(out.astype(int) - 128).sum(-1)[0, 30:]
    row = heat[0, 30:]
    # opacity alpha * heat: at most 0.6 * h * 255 per channel away from the image
    assert (change <= 0.6 * row * 3 * 255 + 3).all() and change[-1] > 100


def png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


async def test_visualize_colours_each_person_and_bounds_the_size(serve_app) -> None:
    grey = np.full((480, 640, 3), 128, np.uint8)
    async with serve_app(stand_in=StandIn()) as (client, _):
        r = await client.post(
            "/visualize", files=upload(grey, field="file"), params={"mode": "skeleton"}
        )
        drawn = png(r.content)
        # each person's box outline in its own colour (index = rank by score)
        for rank, i in enumerate(ORDER):
            x1, y1, _, y2 = BOXES[i].astype(int)
            edge = drawn[(y1 + y2) // 2, x1 - 1 : x1 + 2]
            assert (np.abs(edge.astype(int) - PALETTE[rank]).sum(1) < 30).any(), (rank, edge)
        big = np.full((1000, 3000, 3), 90, np.uint8)
        r = await client.post(
            "/visualize", files=upload(big, field="file"), params={"max_side": 1000}
        )
        assert png(r.content).shape == (333, 1000, 3)


@pytest.mark.slow
async def test_real_person_detector_from_the_setting(serve_app, tmp_path) -> None:
    """HEATPOSE_DETECTOR=FILE: torchvision's layout, random weights: the service's boxes are
    the detector's own (called directly)."""
    torch.manual_seed(0)
    model = build_torchvision_model("person-frcnn-mbv3")
    path = tmp_path / "mbv3.pth"
    torch.save(model.state_dict(), path)
    a = image(240, 320, seed=10)
    direct = PersonDetector.from_file(path, device="cpu").detect([a], 0.0, 0.3, 3)[0]
    async with serve_app(detector=str(path), device="cpu") as (client, _):
        info = (await client.get("/v1/model")).json()
        assert str(path) in info["detector"]
        r = await client.post(
            "/predict", files=upload(a), params={"bbox_thr": 0.0, "max_persons": 3}
        )
    persons = r.json()["images"][0]["persons"]
    assert len(persons) == len(direct.boxes) > 0
    np.testing.assert_allclose([p["bbox"] for p in persons], direct.boxes, atol=1e-3)
    np.testing.assert_allclose([p["bbox_score"] for p in persons], direct.scores, atol=1e-5)
