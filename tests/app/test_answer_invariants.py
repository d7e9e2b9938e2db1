"""The service's answers (``/predict``, stream messages, ``heatpose predict`` files through the
same functions) hold no box without area and no ``visible`` keypoint outside the image."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.streams.stream_session import frame_message
from models.pose.persons import PersonResult
from models.video.video_tracking import FramePerson
from tests.app.engine.test_detection import StandIn, upload
from tests.app.http.test_api import image

pytestmark = pytest.mark.anyio


def outside(k: dict, w: int, h: int) -> bool:
    return not (0 <= k["x"] <= w and 0 <= k["y"] <= h)


async def test_predict_drops_detections_without_area(serve_app) -> None:
    boxes = np.array([[50, 0, 77, 0], [10, 20, 60, 140], [30, 30, 30, 90]], np.float32)
    detector = StandIn(boxes, np.array([0.9, 0.6, 0.8], np.float32))
    async with serve_app(stand_in=detector) as (client, _):
        r = await client.post("/predict", files=upload(image()))
    persons = r.json()["images"][0]["persons"]
    assert [p["bbox"] for p in persons] == [[10, 20, 60, 140]]


async def test_predict_never_marks_a_keypoint_outside_the_image_visible(serve_app) -> None:
    # A box mostly beyond the top-left corner: most of its crop lies outside the image, and so
    # do most keypoints of the random-weight model; the rest are inside.
    a = image(64, 64)
    boxes = json.dumps([[[-40, -40, 24, 24]]])
    async with serve_app() as (client, _):
        r = await client.post(
            "/predict", files=upload(a), data={"boxes": boxes}, params={"kpt_thr": 0}
        )
    (p,) = r.json()["images"][0]["persons"]
    out = [k for k in p["keypoints"] if outside(k, 64, 64)]
    assert out and not any(k["visible"] for k in out)
    assert all(k["visible"] for k in p["keypoints"] if not outside(k, 64, 64))


def test_stream_message_never_marks_a_keypoint_outside_the_frame_visible() -> None:
    kps = np.array([[5, 5], [-3, 5], [5, 50], [39, 29]], np.float32)
    r = PersonResult(
        np.array([0, 0, 40, 30.0]), kps, np.full(4, 0.9, np.float32), np.zeros(2), np.ones(2)
    )
    msg = frame_message(0, 0.0, (40, 30), [FramePerson(1, r)], names=list("abcd"), kpt_thr=0.3)
    visible = [k["visible"] for k in msg["persons"][0]["keypoints"]]
    assert visible == [True, False, False, True]
