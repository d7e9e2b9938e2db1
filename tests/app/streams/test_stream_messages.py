"""Any text message on ``WS /v1/stream`` gets ``invalid_message`` or is taken as the next
frame's ``{seq, ts_ms}``: the stream goes on (1,500 nested brackets once dropped it)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from app.http.routes.stream import parse_control
from tests.helpers.images import encode

ODD = [
    "[" * 1500,
    "[" * 1500 + "]" * 1500,
    '{"seq": ' * 3000,
    "[" * 200_000,
    '{"seq": ' + "9" * 5000 + "}",
    '{"ts_ms": 1e400}',
    '{"seq": [[[[1]]]]}',
    "\x00",
    "",
    "null",
]


@pytest.mark.parametrize("text", ODD, ids=range(len(ODD)))
def test_parse_control_refuses_odd_text_with_a_value_error_only(text: str) -> None:
    with pytest.raises(ValueError, match=r"seq|ts_ms"):
        parse_control(text)


def frame() -> bytes:
    return encode(np.full((48, 64, 3), 128, np.uint8))


def test_deeply_nested_text_gets_invalid_message_and_the_stream_goes_on(client: Any) -> None:
    c = client()
    with c.websocket_connect("/v1/stream") as ws:
        for text in ODD:
            ws.send_text(text)
            err = ws.receive_json()["error"]
            assert err["code"] == "invalid_message" and err["seq"] is None, err
        ws.send_text(json.dumps({"seq": 5}))
        ws.send_bytes(frame())
        m = ws.receive_json()
        assert m["seq"] == 5 and (m["width"], m["height"]) == (64, 48)
