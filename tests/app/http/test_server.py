"""The service as a real process: start-up failures, and SIGTERM during requests."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch

from tests.app.live_server import free_port, wait_ready
from tests.helpers.images import encode, noise

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]


def env(**kw: str) -> dict[str, str]:
    """The environment without HEATPOSE_* variables; no person detector unless ``kw`` names
    one (no test downloads detector weights)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("HEATPOSE_")}
    return {**base, "HEATPOSE_DETECTOR": "none", **kw}


def run(args: list[str], **kw: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env(**kw),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_missing_or_invalid_checkpoint_exits_nonzero_saying_how_to_fix(tmp_path: Path) -> None:
    r = run(["-m", "app"], HEATPOSE_CHECKPOINT=str(tmp_path / "nope.safetensors"))
    assert r.returncode == 2
    assert "HEATPOSE_CHECKPOINT" in r.stderr and "nope.safetensors" in r.stderr
    assert ".safetensors file" in r.stderr  # how to fix it
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    r = run(["-m", "app", str(junk)])
    assert r.returncode == 2 and "not a readable safetensors file" in r.stderr


def test_invalid_settings_name_the_variable(app_checkpoint: Path) -> None:
    r = run(
        ["-m", "app"],
        HEATPOSE_CHECKPOINT=str(app_checkpoint),
        HEATPOSE_MAX_BATCH_SIZE="0",
        HEATPOSE_REQUEST_TIMEOUT_S="soon",
    )
    assert r.returncode == 2
    assert "HEATPOSE_MAX_BATCH_SIZE" in r.stderr and "HEATPOSE_REQUEST_TIMEOUT_S" in r.stderr


def test_default_checkpoint_offline_without_cache_says_how_to_provide_one(tmp_path: Path) -> None:
    # No HEATPOSE_CHECKPOINT: the default zoo model, not cached, its host unreachable (a closed
    # loopback port stands in for "offline").
    r = run(["-m", "app"], HEATPOSE_HOME=str(tmp_path), HEATPOSE_WEIGHTS_URL="http://127.0.0.1:9")
    assert r.returncode == 2
    assert "res50-dark-coco-256x192" in r.stderr and "cannot download" in r.stderr
    assert "HEATPOSE_CHECKPOINT" in r.stderr and "heatpose weights import" in r.stderr
    # the no-download routes: train on synthetic data (as the README does), or a mirror
    assert "heatpose synth" in r.stderr and "heatpose train" in r.stderr
    assert "--pretrained-backbone none" in r.stderr  # the recipe runs offline as printed
    assert "HEATPOSE_WEIGHTS_URL" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("*.safetensors"))


def test_named_detector_offline_without_cache_says_how_to_provide_one(
    app_checkpoint: Path, tmp_path: Path
) -> None:
    # A pose checkpoint at hand, a detector named explicitly neither cached nor downloadable
    # (auto would start without it: tests/app/engine/test_detector_auto.py,
    # tests/test_first_run.py).
    r = run(
        ["-m", "app"],
        HEATPOSE_CHECKPOINT=str(app_checkpoint),
        HEATPOSE_DETECTOR="person-rtmdet-nano",
        HEATPOSE_DEVICE="cpu",
        HEATPOSE_HOME=str(tmp_path),
        HEATPOSE_WEIGHTS_URL="http://127.0.0.1:9",
    )
    assert r.returncode == 2, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert "HEATPOSE_DETECTOR='person-rtmdet-nano'" in line and "cannot download" in line
    assert "HEATPOSE_DETECTOR=none" in line and "state dict" in line  # the ways out
    assert not list(tmp_path.rglob("*.pth"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_a_gpu_is_one_line_and_exit_2(app_checkpoint: Path) -> None:
    r = run(["-m", "app"], HEATPOSE_CHECKPOINT=str(app_checkpoint), HEATPOSE_DEVICE="cuda")
    assert r.returncode == 2, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert "HEATPOSE_DEVICE=cuda" in line and "no CUDA device" in line and "cpu" in line


def test_header_naming_another_depth_is_one_line_and_exit_2(
    app_checkpoint: Path, tmp_path: Path
) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(app_checkpoint), framework="pt") as f:
        header = json.loads(f.metadata()["heatpose"])
    header["architecture"]["depth"] = 50  # the tensors are a ResNet-18's
    wrong = tmp_path / "wrong.safetensors"
    save_file(load_file(str(app_checkpoint)), str(wrong), metadata={"heatpose": json.dumps(header)})
    r = run(["-m", "app", str(wrong)])
    assert r.returncode == 2, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert "ResNet-50" in line and "do not fit" in line and str(wrong) in line


def test_unknown_heatpose_variable_is_named_with_the_closest_known_one(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.safetensors")
    r = run(["-m", "app"], HEATPOSE_CHECKPIONT="x.safetensors", HEATPOSE_CHECKPOINT=missing)
    warning, error = r.stderr.strip().splitlines()
    assert "HEATPOSE_CHECKPIONT" in warning and "did you mean HEATPOSE_CHECKPOINT?" in warning
    assert r.returncode == 2 and "nope.safetensors" in error


def test_plain_uvicorn_fails_to_start_on_a_bad_checkpoint(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not weights")
    r = run(["-m", "uvicorn", "app.main:app", "--port", "0"], HEATPOSE_CHECKPOINT=str(bad))
    assert r.returncode != 0 and "not a readable safetensors file" in r.stderr


def jpeg(seed: int) -> bytes:
    return encode(noise(80, 60, seed), "JPEG")


def queue_depth(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=5).text
    m = re.search(r"^heatpose_queue_depth ([0-9.]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_sigterm_finishes_in_flight_requests(app_checkpoint: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # A long batch delay keeps requests in flight (queued) long enough to signal meanwhile.
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "--port", str(port)],
        cwd=ROOT,
        env=env(
            HEATPOSE_CHECKPOINT=str(app_checkpoint),
            HEATPOSE_MAX_QUEUE_DELAY_MS="2000",
            HEATPOSE_MAX_BATCH_SIZE="64",
            HEATPOSE_SHUTDOWN_GRACE_S="20",
            HEATPOSE_DRAIN_DELAY_S="0",  # the drain delay is tested in test_drain.py
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_ready(proc, url)

        def post(i: int) -> httpx.Response:
            files = [("files", (f"{i}.jpg", jpeg(i), "image/jpeg"))]
            return httpx.post(url + "/predict", files=files, timeout=60)

        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(post, i) for i in range(6)]
            deadline = time.monotonic() + 90
            while queue_depth(url) < 6:  # all six are inside the service, waiting for a batch
                assert time.monotonic() < deadline
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            with pytest.raises(httpx.TransportError):  # new connections are refused
                httpx.get(url + "/health", timeout=2)
            responses = [f.result(timeout=60) for f in futures]
        for i, r in enumerate(responses):
            assert r.status_code == 200, r.text
            assert r.json()["images"][0]["filename"] == f"{i}.jpg"
            assert len(r.json()["images"][0]["persons"][0]["keypoints"]) == 17
        code = proc.wait(timeout=30)
        out = proc.stdout.read() if proc.stdout else ""
        assert code in (0, -signal.SIGTERM), out  # uvicorn re-raises the signal once done
        assert "draining" in out and "Finished server process" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
