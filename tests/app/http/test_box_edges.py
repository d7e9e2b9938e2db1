"""Box edge cases on every route and the stream: a 422 naming the box and the rule, or an
answer whose every number is finite (never a 500, never ``null`` keypoints)."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from PIL import Image

from models.detection.detector import Detections
from models.pose.persons import BOX_MARGIN, MIN_BOX_SIZE
from tests.helpers.images import encode, noise

W, H = 320, 240

REFUSED = [
    ([0, 0, 5e-324, 5e-324], f"at least {MIN_BOX_SIZE:g} px"),
    ([0, 0, 3e9, 240], "too far past the 320x240 image"),
    ([-1e100, -1e100, 1e100, 1e100], "too far past the 320x240 image"),
    ([10, 10, 10.5, 10.5], f"at least {MIN_BOX_SIZE:g} px"),
]
ACCEPTED = [
    [0, 0, MIN_BOX_SIZE, MIN_BOX_SIZE],
    [-BOX_MARGIN * W, -BOX_MARGIN * H, (1 + BOX_MARGIN) * W, (1 + BOX_MARGIN) * H],
    [W - 1, 0, W, (1 + BOX_MARGIN) * H],
]


IMAGE = encode(noise(H, W))


def non_finite(value: Any, path: str = "") -> list[str]:
    """Paths of the numbers in ``value`` that are not finite, and of ``null`` where a number
    belongs (``bbox_score``, ``heatmaps`` and ``detection_off`` may be null)."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in non_finite(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for v in value for p in non_finite(v, path)]
    if value is None:
        return [] if path.endswith(("bbox_score", "heatmaps", "detection_off")) else [path]
    if isinstance(value, float) and not math.isfinite(value):
        return [path]
    return []


@pytest.mark.parametrize(("box", "why"), REFUSED)
def test_refused_boxes_get_422_naming_the_box_on_every_route(
    client: Any, box: list, why: str
) -> None:
    c = client()
    for route, field in (("/predict", "files"), ("/visualize", "file")):
        boxes = json.dumps([[[5, 5, 60, 90], box]])
        r = c.post(route, files=[(field, ("a.png", IMAGE, "image/png"))], data={"boxes": boxes})
        assert r.status_code == 422, (route, r.status_code, r.text)
        err = r.json()["error"]
        assert err["code"] == "invalid_boxes" and err["message"].startswith("boxes[0][1] = ")
        assert why in err["message"], err["message"]


def test_boxes_at_the_rules_edges_give_finite_answers_on_every_route(client: Any) -> None:
    c = client()
    r = c.post(
        "/predict",
        files=[("files", ("a.png", IMAGE, "image/png"))],
        data={"boxes": json.dumps([ACCEPTED])},
    )
    assert r.status_code == 200, r.text
    persons = r.json()["images"][0]["persons"]
    assert len(persons) == len(ACCEPTED)
    assert non_finite(r.json()) == []
    for box in ACCEPTED:
        r = c.post(
            "/visualize",
            files=[("file", ("a.png", IMAGE, "image/png"))],
            data={"boxes": json.dumps([[box]])},
        )
        assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
        assert Image.open(io.BytesIO(r.content)).size == (W, H)


class EdgeDetector:
    """A detector stand-in finding the edge-case boxes (plus one ordinary person) in every
    image: what a detector returns is held to the clients' rules."""

    def detect(
        self,
        images: Sequence[np.ndarray],
        score_thr: float = 0.3,
        nms_thr: float = 0.3,
        max_persons: int = 100,
    ) -> list[Detections]:
        boxes = np.array([[40, 30, 140, 220]] + [b for b, _ in REFUSED], np.float64)
        with np.errstate(over="ignore"):  # 1e100 -> inf in float32, as a detector may give
            boxes = np.concatenate([boxes, [[np.nan, 0, 5, 5]]]).astype(np.float32)
        scores = np.linspace(0.9, 0.5, len(boxes)).astype(np.float32)
        return [Detections(boxes[:max_persons], scores[:max_persons]) for _ in images]


def test_detector_edge_boxes_on_the_routes_and_the_stream_give_finite_answers(
    client: Any,
) -> None:
    c = client(stand_in=EdgeDetector())
    r = c.post("/predict", files=[("files", ("a.png", IMAGE, "image/png"))])
    assert r.status_code == 200, r.text
    (person,) = r.json()["images"][0]["persons"]  # only the ordinary one
    assert person["bbox"] == [40, 30, 140, 220] and non_finite(r.json()) == []
    r = c.post("/visualize", files=[("file", ("a.png", IMAGE, "image/png"))])
    assert r.status_code == 200, r.text
    with c.websocket_connect("/v1/stream?det_interval=1&smoothing=none") as ws:
        for _ in range(2):
            ws.send_bytes(IMAGE)
            m = ws.receive_json()
            assert "error" not in m, m
            assert len(m["persons"]) == 1 and non_finite(m) == [], m
