"""``WS /v1/stream`` in process (Starlette's TestClient): protocol, limits, the frame slot, and
the per-stream tracking on synthetic video. The real-server proofs are in test_stream_server.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest
from starlette.websockets import WebSocketDisconnect

from app.streams.stream_session import Frame, FrameSlot, parse_stream_params
from models.detection.detector import Detections
from models.pose.keypoints import COCO_KEYPOINTS
from models.video.similarity import box_iou
from tests.helpers import images
from training.synthetic.synthetic_video import make_video

KEYPOINT_FIELDS = {"name", "x", "y", "score", "visible"}
PERSON_FIELDS = {"track_id", "bbox", "bbox_score", "score", "keypoints"}
MESSAGE_FIELDS = {"seq", "ts_ms", "latency_ms", "dropped", "width", "height", "persons"}


def encode(image: np.ndarray, fmt: str = "JPEG") -> bytes:
    return images.encode(image, fmt)


def noise(seed: int, w: int = 160, h: int = 120) -> bytes:
    return encode(images.noise(h, w, seed))


def check_message(m: dict[str, Any], width: int, height: int) -> None:
    """The answer schema of the protocol, with its fields' types and ranges."""
    assert set(m) == MESSAGE_FIELDS, m
    assert (m["width"], m["height"]) == (width, height)
    assert m["latency_ms"] >= 0 and m["dropped"] >= 0
    for p in m["persons"]:
        assert set(p) == PERSON_FIELDS and isinstance(p["track_id"], int)
        assert len(p["bbox"]) == 4 and len(p["keypoints"]) == len(COCO_KEYPOINTS.names)
        assert p["bbox_score"] is None or isinstance(p["bbox_score"], float)
        assert [k["name"] for k in p["keypoints"]] == list(COCO_KEYPOINTS.names)
        for k in p["keypoints"]:
            assert set(k) == KEYPOINT_FIELDS and isinstance(k["visible"], bool)


def closed_with(ws: Any) -> tuple[int, str]:
    with pytest.raises(WebSocketDisconnect) as e:
        ws.receive_text()
    return e.value.code, e.value.reason


def test_answers_have_the_schema_and_take_seq_and_ts_from_the_client(client: Any) -> None:
    c = client()
    with c.websocket_connect("/v1/stream?smoothing=none&kpt_thr=0.5") as ws:
        ws.send_text(json.dumps({"seq": 41, "ts_ms": 1000.5}))
        ws.send_bytes(noise(0, 160, 120))
        first = ws.receive_json()
        ws.send_bytes(encode(np.zeros((90, 70, 3), np.uint8), "PNG"))  # server numbering
        second = ws.receive_json()
    check_message(first, 160, 120)
    check_message(second, 70, 90)
    assert (first["seq"], first["ts_ms"]) == (41, 1000.5)
    assert second["seq"] == 1 and second["ts_ms"] > 1e12  # arrival time, ms since the epoch
    for k in first["persons"][0]["keypoints"]:  # confident and inside the 160x120 frame
        assert k["visible"] == (k["score"] >= 0.5 and 0 <= k["x"] <= 160 and 0 <= k["y"] <= 120)
    text = c.get("/metrics").text
    assert "heatpose_stream_frames_processed_total 2.0" in text
    assert "heatpose_stream_frame_latency_seconds_count 2.0" in text


def test_a_bad_frame_or_message_gets_an_error_and_the_stream_goes_on(client: Any) -> None:
    big = {"max_request_pixels": 10**6, "max_inflight_pixels": 10**6}  # the frame's own limit
    c = client(max_upload_bytes=2048, max_image_pixels=200 * 200, **big)
    with c.websocket_connect("/v1/stream") as ws:
        ws.send_text(json.dumps({"seq": 7}))
        ws.send_bytes(b"not an image")
        assert ws.receive_json()["error"] == {
            "code": "invalid_image",
            "message": "file 'frame 7' is not an image Pillow can read",
            "seq": 7,
        }
        ws.send_bytes(encode(np.zeros((300, 300, 3), np.uint8), "PNG"))  # 90,000 px > 40,000
        assert ws.receive_json()["error"]["code"] == "image_too_large"
        ws.send_bytes(encode(np.zeros((40, 40, 3), np.uint8), "BMP"))  # 4.9 kB > 2 kB
        assert ws.receive_json()["error"]["code"] == "payload_too_large"
        ws.send_text('{"seq": "x"}')
        assert ws.receive_json()["error"]["code"] == "invalid_message"
        ws.send_bytes(encode(np.full((48, 64, 3), 128, np.uint8)))  # a flat JPEG: < 1 kB
        check_message(ws.receive_json(), 64, 48)


@pytest.mark.parametrize(
    "query",
    ["det_interval=0", "smoothing=kalman", "beta=-1", "kpt_thr=2", "colour=red", "flip_test=maybe"],
)
def test_invalid_parameters_close_1008_naming_the_parameter(client: Any, query: str) -> None:
    with client().websocket_connect(f"/v1/stream?{query}") as ws:
        error = ws.receive_json()["error"]
        code, reason = closed_with(ws)
    name = query.split("=")[0]
    assert error["code"] == "invalid_parameter" and error["message"].startswith(name)
    assert code == 1008 and name in reason


def test_the_api_key_is_required_in_a_header_or_the_query(client: Any) -> None:
    c = client(api_key="sesame")
    for path, headers in [("/v1/stream", {}), ("/v1/stream?api_key=nope", {})]:
        with c.websocket_connect(path, headers=headers) as ws:
            code, reason = closed_with(ws)
        assert code == 1008 and "API key" in reason
    for path, headers in [
        ("/v1/stream?api_key=sesame", {}),
        ("/v1/stream", {"X-API-Key": "sesame"}),
        ("/v1/stream", {"Authorization": "Bearer sesame"}),
    ]:
        with c.websocket_connect(path, headers=headers) as ws:
            ws.send_bytes(noise(2, 32, 32))
            check_message(ws.receive_json(), 32, 32)


def test_streams_beyond_the_limit_close_1013_and_idle_ones_1000(client: Any) -> None:
    c = client(max_streams=1, stream_idle_timeout_s=0.5)
    with c.websocket_connect("/v1/stream") as first:
        with c.websocket_connect("/v1/stream") as second:
            code, reason = closed_with(second)
        assert code == 1013 and "try again later" in reason
        assert "heatpose_streams_open 1.0" in c.get("/metrics").text
        code, reason = closed_with(first)  # sends nothing for 0.5 s
    assert code == 1000 and "idle" in reason
    with c.websocket_connect("/v1/stream") as third:  # the slot is free again
        third.send_bytes(noise(3, 32, 32))
        check_message(third.receive_json(), 32, 32)


def test_frame_slot_keeps_only_the_latest_frame_and_counts_the_rest() -> None:
    async def run() -> list[Any]:
        slot = FrameSlot()
        got = []
        for seq in range(5):
            slot.put(Frame(b"", seq, 0.0, 0.0))
        got.append(await slot.take())
        slot.put(Frame(b"", 5, 0.0, 0.0))
        got.append(await slot.take())
        waiter = asyncio.create_task(slot.take())
        await asyncio.sleep(0.01)
        slot.close("drain")
        got.append(await waiter)
        return got

    first, second, after_close = asyncio.run(run())
    assert (first[0].seq, first[1]) == (4, 4)  # frames 0-3 were replaced
    assert (second[0].seq, second[1]) == (5, 0)
    assert after_close is None


def test_parameters_default_to_the_documented_one_euro_values() -> None:
    p = parse_stream_params(
        {"det_interval": "3", "flip_test": "false", "api_key": "x"}, ignore=("api_key",)
    )
    assert (p.det_interval, p.flip_test, p.smoothing) == (3, False, "one_euro")
    assert p.one_euro is not None and (p.one_euro.min_cutoff, p.one_euro.beta) == (0.5, 0.03)
    assert parse_stream_params({"smoothing": "none"}).one_euro is None


class TruthDetector:
    """A stand-in person detector (``PersonDetector.detect``'s interface) that knows the video:
    for each frame (recognised by its pixels; frames travel as PNG, lossless) the true boxes of
    the people at least partly visible, score 0.9."""

    def __init__(self, frames: list[np.ndarray], truth: list[list[Any]]) -> None:
        self.boxes = {
            f.tobytes(): np.array([t.box for t in ts if (t.flags > 0).sum() >= 4], np.float32)
            for f, ts in zip(frames, truth, strict=True)
        }
        self.calls = 0

    def detect(
        self,
        images: Any,
        score_thr: float = 0.3,
        nms_thr: float = 0.3,
        max_persons: int = 100,
    ) -> list[Detections]:
        out = []
        for im in images:
            boxes = self.boxes.get(np.ascontiguousarray(im).tobytes(), np.zeros((0, 4), np.float32))
            self.calls += im.shape[:2] == (240, 320)
            out.append(Detections(boxes[:max_persons], np.full(len(boxes[:max_persons]), 0.9)))
        return out


@pytest.mark.slow
def test_through_the_service_two_crossing_people_keep_their_ids(client: Any) -> None:
    """The detector of the service (a stand-in that knows the true boxes), the random-weight
    test model for the poses: with ``kpt_thr=1`` its (noise) keypoints hardly count, so tracks
    are matched on their boxes and motion; ``det_interval=1``: every frame is a detector frame
    (following tracks by their keypoints is shown with true poses above)."""
    video = make_video("crossing")
    det = TruthDetector(video.frames, video.truth)
    c = client(stand_in=det)
    det.calls = 0  # the warm-up's call, if any
    pairs = set()
    with c.websocket_connect("/v1/stream?det_interval=1&kpt_thr=1&flip_test=false") as ws:
        for i, (frame, truth) in enumerate(zip(video.frames, video.truth, strict=True)):
            ws.send_text(json.dumps({"seq": i, "ts_ms": i * 1000.0 / video.fps}))
            ws.send_bytes(encode(frame, "PNG"))
            m = ws.receive_json()
            check_message(m, 320, 240)
            for p in m["persons"]:
                iou = box_iou(np.array([p["bbox"]]), np.stack([t.box for t in truth]))[0]
                assert iou.max() > 0.99 and p["bbox_score"] == pytest.approx(0.9)
                pairs.add((truth[int(iou.argmax())].person_id, p["track_id"]))
    assert det.calls == len(video.frames)
    assert pairs == {(1, 1), (2, 2)} or pairs == {(1, 2), (2, 1)}, pairs


def test_a_connection_cancelled_while_it_stops_raises_the_cancellers_own_error() -> None:
    """The host task of a stream, cancelled during its wait and again right after it cancels
    its tasks (a cancel scope repeats its cancel), ends with the canceller's ``CancelledError``:
    with ``gather`` a child's escaped instead, which the test client's cancel scope did not
    recognise (its teardown failed about once in 700 streams that way)."""
    from app.http.routes.stream import cancel_and_wait

    async def scenario() -> BaseException | None:
        loop = asyncio.get_running_loop()
        blocker: asyncio.Future[None] = loop.create_future()
        # runs after the host cancels its child and before the child wakes: the repeated cancel
        blocker.add_done_callback(lambda _: host_task.cancel("the canceller's"))

        async def host() -> None:
            child = asyncio.create_task(asyncio.wait_for(blocker, None))
            try:
                await asyncio.Event().wait()
            finally:
                await cancel_and_wait([child])

        host_task = asyncio.create_task(host())
        for _ in range(3):
            await asyncio.sleep(0)  # the host waits, its child awaits the blocker
        host_task.cancel("the canceller's")
        try:
            await host_task
        except asyncio.CancelledError as e:
            return e
        return None

    error = asyncio.run(scenario())
    assert error is not None and error.args == ("the canceller's",)
