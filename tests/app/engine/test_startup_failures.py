"""Every start-up failure is one line naming the variable and exit status 2, never a traceback
(issue 23 §3): settings that pass validation but cannot serve, and files that cannot be read."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import anyio
import pytest
import torch

from app.main import create_app
from app.settings import Settings
from tests.app.http.test_server import run


async def lifespan_messages(app: Any) -> list[dict[str, Any]]:
    """Drive the ASGI lifespan protocol as a server does: start-up, then shut-down if it
    started; returns what the app sent."""
    sent: list[dict[str, Any]] = []
    events = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> dict[str, Any]:
        return next(events)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    with contextlib.suppress(Exception):  # re-raised after the failure is reported (Starlette)
        await app(scope, receive, send)
    return sent


def test_a_failed_start_up_reports_one_line_not_a_traceback(
    app_checkpoint: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a detector" * 10)
    app = create_app(Settings(_env_file=None, checkpoint=str(app_checkpoint), detector=str(bad)))
    sent = anyio.run(lifespan_messages, app)
    (failed,) = [m for m in sent if m["type"] == "lifespan.startup.failed"]
    message = failed["message"]
    assert message.startswith("cannot start: HEATPOSE_DETECTOR=") and str(bad) in message
    assert "\n" not in message and "Traceback" not in message
    assert app.state.startup_error in message


def bad_onnx(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"\x08\x07garbage" * 10)
    return {"HEATPOSE_BACKEND": "onnxruntime", "HEATPOSE_ONNX": str(path)}


def bad_detector(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "bad.pth"
    path.write_bytes(b"not a detector" * 10)
    return {"HEATPOSE_DETECTOR": str(path)}


CASES = {
    "grace-inf": (lambda _: {"HEATPOSE_SHUTDOWN_GRACE_S": "inf"}, "HEATPOSE_SHUTDOWN_GRACE_S"),
    "grace-nan": (lambda _: {"HEATPOSE_SHUTDOWN_GRACE_S": "nan"}, "HEATPOSE_SHUTDOWN_GRACE_S"),
    "drain-1e400": (lambda _: {"HEATPOSE_DRAIN_DELAY_S": "1e400"}, "HEATPOSE_DRAIN_DELAY_S"),
    "mps": (lambda _: {"HEATPOSE_DEVICE": "mps"}, "HEATPOSE_DEVICE"),
    "detector-file": (bad_detector, "HEATPOSE_DETECTOR"),
    "tensorrt-on-cpu": (lambda _: {"HEATPOSE_BACKEND": "tensorrt"}, "HEATPOSE_BACKEND"),
    "corrupt-onnx": (bad_onnx, "HEATPOSE_ONNX"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_start_up_failures_are_one_line_naming_the_variable_and_exit_2(
    app_checkpoint: Path, tmp_path: Path, case: str
) -> None:
    make, variable = CASES[case]
    if case == "mps" and torch.backends.mps.is_available():
        pytest.skip("this host has an MPS device")
    if case == "tensorrt-on-cpu" and torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    r = run(
        ["-m", "app", "--port", "0"],
        HEATPOSE_CHECKPOINT=str(app_checkpoint),
        HEATPOSE_WARMUP="false",
        **make(tmp_path),
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "Error:" not in r.stderr, r.stderr
    # Settings and devices are checked before the server starts: the only line. Files are read
    # when the service starts: one "cannot start" line among the server's progress lines.
    failures = [
        line for line in r.stderr.splitlines() if "cannot start" in line or "invalid" in line
    ]
    assert len(failures) == 1, r.stderr
    assert variable in failures[0], r.stderr
    if case in ("grace-inf", "grace-nan", "drain-1e400", "mps"):
        assert r.stderr.strip() == failures[0]


@pytest.mark.slow
def test_plain_uvicorn_says_the_same_in_one_line(app_checkpoint: Path, tmp_path: Path) -> None:
    """Under ``uvicorn app.main:app`` the exit status is uvicorn's (3), the message the same."""
    r = run(
        ["-m", "uvicorn", "app.main:app", "--port", "0"],
        HEATPOSE_CHECKPOINT=str(app_checkpoint),
        **bad_detector(tmp_path),
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    (line,) = [x for x in r.stderr.splitlines() if "cannot start" in x]
    assert "HEATPOSE_DETECTOR=" in line and "not a PyTorch checkpoint" in line
