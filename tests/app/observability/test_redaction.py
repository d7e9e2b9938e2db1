"""No credential in a log line: URLs with a key in their query string are redacted (issue 23
§3), in uvicorn's access log for HTTP and WebSocket alike, and the stream takes its key as a
subprotocol so that no client needs to put it in a URL."""

from __future__ import annotations

import logging
import signal
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from app.http.auth import key_from_subprotocols, key_subprotocol
from app.observability.redaction import RedactingFilter, redact
from tests.app.streams.test_stream import check_message, closed_with, noise

SECRET = "s3cret-key-123"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            '127.0.0.1:5 - "WebSocket /v1/stream?api_key=s3cret-key-123" [accepted]',
            '127.0.0.1:5 - "WebSocket /v1/stream?api_key=[redacted]" [accepted]',
        ),
        (
            '"GET /predict?flip_test=true&token=s3cret-key-123&kpt_thr=0.3 HTTP/1.1" 200',
            '"GET /predict?flip_test=true&token=[redacted]&kpt_thr=0.3 HTTP/1.1" 200',
        ),
        ("/x?ACCESS_TOKEN=s3cret-key-123#frag", "/x?ACCESS_TOKEN=[redacted]#frag"),
        ("/x?X-Amz-Signature=s3cret-key-123", "/x?X-Amz-Signature=[redacted]"),
        ("/x?key=s3cret-key-123;password=hunter2", "/x?key=[redacted];password=[redacted]"),
        ("/x?apikey=", "/x?apikey="),  # nothing to hide
        # not credentials: a /visualize parameter, a value that merely contains "key"
        ("/visualize?keypoint=nose&mode=key", "/visualize?keypoint=nose&mode=key"),
        ("no query at all", "no query at all"),
    ],
)
def test_redact_hides_credential_values_only(line: str, expected: str) -> None:
    assert redact(line) == expected


def test_the_filter_rewrites_the_formatted_record() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", f"/health?api_key={SECRET}", "1.1", 200),
        None,
    )
    assert RedactingFilter().filter(record) is True  # rewritten, never dropped
    assert record.getMessage() == '127.0.0.1:5 - "GET /health?api_key=[redacted] HTTP/1.1" 200'


@pytest.mark.parametrize("key", ["sesame", "ключ with spaces+/=", " padded "])
def test_key_subprotocol_round_trip(key: str) -> None:
    protocol = key_subprotocol(key)
    token_chars = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
    assert set(protocol) <= token_chars  # an RFC 7230 token, as Sec-WebSocket-Protocol needs
    assert key not in protocol
    assert key_from_subprotocols(["heatpose", protocol]) == key.strip()
    assert key_from_subprotocols(["heatpose", "heatpose.key.!!"]) is None
    assert key_from_subprotocols(["heatpose"]) is None


def test_the_stream_takes_its_key_as_a_subprotocol_and_selects_heatpose(client: Any) -> None:
    c = client(api_key="sesame")
    offered = ["heatpose", key_subprotocol("sesame")]
    with c.websocket_connect("/v1/stream", subprotocols=offered) as ws:
        assert ws.accepted_subprotocol == "heatpose"  # the key is never echoed
        ws.send_bytes(noise(2, 32, 32))
        check_message(ws.receive_json(), 32, 32)
    wrong = ["heatpose", key_subprotocol("nope")]
    with c.websocket_connect("/v1/stream", subprotocols=wrong) as ws:
        code, reason = closed_with(ws)
    assert code == 1008 and "API key" in reason


def test_create_app_redacts_uvicorn_lines(client: Any, caplog: pytest.LogCaptureFixture) -> None:
    client()  # create_app installs the filter on uvicorn's loggers and ours
    uvicorn_log, our_log = logging.getLogger("uvicorn.error"), logging.getLogger("heatpose.app")
    # caplog's handler on the loggers themselves, at INFO: an earlier configure_logging (an
    # in-process start) leaves them not propagating to the root, where caplog listens
    saved = [(lg, lg.propagate, lg.level) for lg in (uvicorn_log, our_log)]
    try:
        for lg, _, _ in saved:
            lg.addHandler(caplog.handler)
            lg.propagate = False
            lg.setLevel(logging.INFO)
        with caplog.at_level(logging.INFO):
            uvicorn_log.info(
                '%s - "WebSocket %s" [accepted]', "127.0.0.1:5", f"/v1/stream?api_key={SECRET}"
            )
            our_log.warning("odd request /predict?token=%s", SECRET)
    finally:
        for lg, propagate, level in saved:
            lg.removeHandler(caplog.handler)
            lg.propagate = propagate
            lg.setLevel(level)
    assert SECRET not in caplog.text and caplog.text.count("[redacted]") == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    "args", [("-m", "app"), ("-m", "uvicorn", "app.main:app")], ids=["serve", "uvicorn"]
)
def test_a_key_in_the_query_never_reaches_the_log(server_process, args: tuple[str, ...]) -> None:
    """A real server's output (uvicorn's access log on, info level) after HTTP requests and
    streams that carry the key in their URL (old clients) and as a subprotocol."""
    with server_process(args, API_KEY=SECRET, LOG_LEVEL="info") as (proc, url):
        assert httpx.get(f"{url}/health?api_key={SECRET}", timeout=10).status_code == 200
        r = httpx.get(f"{url}/v1/model?token={SECRET}", headers={"X-API-Key": SECRET})
        assert r.status_code == 200
        ws_url = url.replace("http://", "ws://") + "/v1/stream"
        with connect(f"{ws_url}?api_key={SECRET}&det_interval=2") as ws:  # still accepted
            ws.send(noise(1, 32, 32))
            assert "persons" in ws.recv(timeout=30)
        offered = ["heatpose", key_subprotocol(SECRET)]
        with connect(ws_url, subprotocols=offered) as ws:  # type: ignore[arg-type]
            assert ws.subprotocol == "heatpose"
            ws.send(noise(2, 32, 32))
            assert "persons" in ws.recv(timeout=30)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        out = proc.stdout.read() if proc.stdout else ""
    assert SECRET not in out, out
    assert "GET /health?api_key=[redacted]" in out and "/v1/model?token=[redacted]" in out
    assert '"WebSocket /v1/stream?api_key=[redacted]&det_interval=2" [accepted]' in out, out


@pytest.mark.parametrize("json_logs", [False, True])
def test_the_configured_handler_redacts_every_logger(
    capsys: pytest.CaptureFixture[str], json_logs: bool
) -> None:
    """The handler of ``configure_logging`` (plain and JSON lines) redacts records of any
    logger that reaches it, not only those the filter was put on."""
    from app.observability.logs import configure_logging

    configure_logging("info", json_logs=json_logs)
    try:
        logging.getLogger("heatpose.somewhere.new").info("fetched /x?access_token=%s", SECRET)
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", f"/health?key={SECRET}", "1.1", 200
        )
        err = capsys.readouterr().err
        assert SECRET not in err and err.count("[redacted]") == 2, err
    finally:
        for name in ("heatpose", "uvicorn", "uvicorn.error", "uvicorn.access"):
            logger = logging.getLogger(name)
            logger.handlers.clear()
            logger.propagate = True
            logger.setLevel(logging.NOTSET)
