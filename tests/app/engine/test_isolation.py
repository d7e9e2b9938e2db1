"""One bad input fails only its own request: a failing batch is retried in halves
(:mod:`app.engine.isolation`) in both batchers, and images the detector cannot resize are refused
up front (:mod:`models.detection.detector_input`) on every route."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from app.engine.detector_batcher import DetectorBatcher
from app.engine.failures import BatchFailed
from app.engine.isolation import run_isolated
from models.detection.detector import Detections
from models.detection.detector_input import MAX_ASPECT_RATIO, UndetectableImage, check_detectable
from tests.app.engine.test_batcher import FakeModel, make, submit
from tests.app.engine.test_detection import StandIn
from tests.helpers.images import encode

pytestmark = pytest.mark.anyio

MARK = 13  # the marked input: a crop whose id is 13, an image whose first pixel is 13


def test_run_isolated_finds_each_failing_item_and_keeps_the_others_outputs() -> None:
    calls: list[list[int]] = []

    def run(part: list[int]) -> list[int]:
        calls.append(part)
        if any(x in (3, 6) for x in part):
            raise ValueError(f"bad among {part}")
        return [10 * x for x in part]

    out = run_isolated(run, list(range(8)))
    failed = [k for k, o in enumerate(out) if isinstance(o, Exception)]
    assert failed == [3, 6]
    assert [o for o in out if not isinstance(o, Exception)] == [0, 10, 20, 40, 50, 70]
    assert str(out[3]) == "bad among [3]" and str(out[6]) == "bad among [6]"
    assert calls[0] == list(range(8)) and [3] in calls and [6] in calls
    # levels of halving: 8 -> 4+4 -> 2+2+2+2 -> the two failing pairs split once more
    assert len(calls) == 1 + 2 + 4 + 4
    assert run_isolated(run, []) == [] and len(calls) == 11


def test_run_isolated_refuses_a_wrong_number_of_outputs() -> None:
    out = run_isolated(lambda part: part[:1], [1, 2])
    assert all(isinstance(o, RuntimeError) for o in out)


async def test_pose_batch_failure_fails_only_the_request_with_the_marked_crop() -> None:
    model = FakeModel()
    tried: list[list[int]] = []

    def fail_when(ids: list[int]) -> Exception | None:
        tried.append(ids)
        return RuntimeError("cannot infer crop 13") if MARK in ids else None

    model.fail_when = fail_when
    b = make(model, max_batch_size=8, max_queue_delay_s=0.2)
    requests = [[1, 2], [3, MARK], [4], [5, 6, 7]]
    results = await asyncio.gather(*(submit(b, ids) for ids in requests), return_exceptions=True)
    assert tried[0] and len(tried[0]) == 8  # all four requests shared one batch
    bad = results[1]
    assert isinstance(bad, BatchFailed) and "cannot infer crop 13" in str(bad)
    assert isinstance(bad.__cause__, RuntimeError)
    for ids, res in zip(requests, results, strict=True):
        if MARK not in ids:
            assert not isinstance(res, BaseException), res
            assert [int(r.scores[0]) for r in res] == ids
    assert b.alive and int((await submit(b, [8]))[0].scores[0]) == 8
    await b.drain(1.0)


class MarkedFails(StandIn):
    """The detection tests' stand-in, failing any call whose batch holds an image whose first
    pixel is ``MARK`` (as a real detector fails on an image it cannot resize)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []  # each call's number of images
        self.failed: list[int] = []  # the same, of the calls that raised

    def detect(
        self,
        images: Sequence[np.ndarray],
        score_thr: float = 0.3,
        nms_thr: float = 0.3,
        max_persons: int = 100,
    ) -> list[Detections]:
        self.batches.append(len(images))
        if any(int(np.asarray(im)[0, 0, 0]) == MARK for im in images):
            self.failed.append(len(images))
            raise RuntimeError("Input and output sizes should be greater than 0")
        return super().detect(images, score_thr, nms_thr, max_persons)


async def test_detector_batch_failure_fails_only_the_request_with_the_marked_image() -> None:
    det = MarkedFails()
    b = DetectorBatcher(det, nms_thr=0.3, max_batch_size=8, max_queue_delay_s=0.2, max_queued=64)
    b.start()
    images = [np.full((8, 8, 3), v, np.uint8) for v in (1, 2, MARK, 4, 5)]

    async def one(im: np.ndarray) -> Any:
        got = await b.submit([im], bbox_thr=0.3, max_persons=20, deadline=time.monotonic() + 10)
        return got[0]

    results = await asyncio.gather(*(one(im) for im in images), return_exceptions=True)
    assert det.batches[0] == 5  # one shared batch first
    assert isinstance(results[2], BatchFailed)
    assert "greater than 0" in str(results[2])
    for k in (0, 1, 3, 4):
        assert not isinstance(results[k], BaseException), results[k]
        assert len(results[k].boxes) == 3  # the stand-in's three people
    await b.drain(1.0)


@pytest.mark.slow
async def test_through_the_service_only_the_marked_upload_fails(serve_app) -> None:
    det = MarkedFails()
    async with serve_app(stand_in=det, max_queue_delay_ms=300) as (client, _):
        ims = [np.full((480, 640, 3), v, np.uint8) for v in (1, MARK, 3, 4)]
        files = [[("files", ("a.png", encode(a), "image/png"))] for a in ims]
        rs = await asyncio.gather(*(client.post("/predict", files=f) for f in files))
    assert max(det.failed) > 1, det.batches  # the marked image shared a batch with others
    assert [r.status_code for r in rs] == [200, 500, 200, 200], [r.text for r in rs]
    assert rs[1].json()["error"]["code"] == "inference_failed"
    assert all(len(rs[k].json()["images"][0]["persons"]) == 3 for k in (0, 2, 3))


def test_check_detectable_limit() -> None:
    check_detectable(MAX_ASPECT_RATIO, 1, name="x")
    check_detectable(1, MAX_ASPECT_RATIO, name="x")
    check_detectable(640, 480, name="x")
    for w, h in ((MAX_ASPECT_RATIO + 1, 1), (1, 10000), (65535, 1), (0, 5)):
        with pytest.raises(UndetectableImage, match=f"at most {MAX_ASPECT_RATIO} times"):
            check_detectable(w, h, name="image 0")


THIN = [(10000, 1), (1, 10000), (65535, 1)]


@pytest.mark.parametrize(("w", "h"), THIN)
async def test_thin_images_are_refused_before_the_detector_on_each_route(
    serve_app, w: int, h: int
) -> None:
    det = StandIn()
    data = encode(np.full((h, w, 3), 100, np.uint8))
    ok = encode(np.full((480, 640, 3), 100, np.uint8))
    async with serve_app(stand_in=det) as (client, _):
        det.calls.clear()
        for route, field in (("/predict", "files"), ("/visualize", "file")):
            r = await client.post(route, files=[(field, ("thin.png", data, "image/png"))])
            assert r.status_code == 422, r.text
            err = r.json()["error"]
            assert err["code"] == "undetectable_image", (route, err)
            assert f"{w}x{h}" in err["message"] and f"at most {MAX_ASPECT_RATIO}" in err["message"]
        assert det.calls == []  # never reached the detector
        # with its box given it is served; the detector still takes ordinary images
        r = await client.post(
            "/predict",
            files=[("files", ("thin.png", data, "image/png"))],
            data={"boxes": json.dumps([[[0, 0, w, h]]])},
        )
        assert r.status_code == 200, r.text
        r = await client.post("/predict", files=[("files", ("ok.png", ok, "image/png"))])
        assert r.status_code == 200 and len(r.json()["images"][0]["persons"]) == 3


def test_thin_frame_on_the_stream_gets_an_error_and_the_stream_goes_on(client: Any) -> None:
    c = client(stand_in=StandIn())
    with c.websocket_connect("/v1/stream?det_interval=1") as ws:
        ws.send_bytes(encode(np.full((1, 10000, 3), 100, np.uint8)))
        err = ws.receive_json()["error"]
        assert err["code"] == "undetectable_image" and "10000x1" in err["message"]
        ws.send_bytes(encode(np.full((480, 640, 3), 100, np.uint8)))
        m = ws.receive_json()
        assert (m["width"], m["height"]) == (640, 480) and len(m["persons"]) == 3
