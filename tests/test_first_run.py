"""The README's no-download route, end to end, as a new user runs it on a machine that cannot
reach any weight server: ``heatpose synth`` -> ``heatpose train`` -> ``heatpose serve`` (with
HEATPOSE_DETECTOR unset: ``auto`` falls back to no detector) -> ``POST /predict`` 200.

The command lines are README.md's (tests/test_readme.py reads them), run in a fresh folder so
that their relative paths stay as printed; only the sizes shrink (fewer, smaller images, one
short epoch). The weight host is a closed loopback port and HEATPOSE_HOME an empty folder.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.app.live_server import free_port, wait_ready
from tests.test_readme import readme_no_download_route

ROOT = Path(__file__).resolve().parents[1]

# flag -> the value the test uses instead of the README's (the sizes only)
TINY = {
    "--train": "6",
    "--val": "2",
    "--input-size": "64x64",
    "-b": "3",
    "--epochs": "1",
    "--lr-steps": "1",
    "--warmup-iters": "1",
}
SYNTH_SIZE = ["--width", "128", "--height", "96"]


def shrink(words: list[str]) -> list[str]:
    """``words`` with the values of :data:`TINY`'s flags replaced."""
    out = list(words)
    for i, w in enumerate(out[:-1]):
        if w in TINY:
            out[i + 1] = TINY[w]
    return out


def offline_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEATPOSE_")}
    env |= {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HEATPOSE_TORCH_THREADS": "1"}
    # nothing can be downloaded: an empty cache, the weight host a closed loopback port
    env |= {"HEATPOSE_HOME": str(home), "HEATPOSE_WEIGHTS_URL": "http://127.0.0.1:9"}
    return env


def heatpose(words: list[str]) -> list[str]:
    assert words[0] == "heatpose", words
    return [sys.executable, "-m", "heatpose_cli", *words[1:]]


@pytest.mark.slow
def test_readme_no_download_route_serves_predictions(tmp_path: Path) -> None:
    synth, train, serve = readme_no_download_route()
    env = offline_env(tmp_path / "home")
    run = {"cwd": tmp_path, "env": env, "capture_output": True, "text": True, "timeout": 300}
    made = subprocess.run(heatpose([*shrink(synth), *SYNTH_SIZE]), **run)  # type: ignore[call-overload]
    assert made.returncode == 0, made.stderr
    trained = subprocess.run(heatpose(shrink(train)), **run)  # type: ignore[call-overload]
    assert trained.returncode == 0, trained.stderr
    # the trainer's closing line is the README's serve command
    settings = [w for w in serve if "=" in w and w.startswith("HEATPOSE_")]
    printed = f"serve the best model: {' '.join(settings)} heatpose serve"
    assert printed in trained.stdout + trained.stderr
    port = free_port()
    env |= dict(w.split("=", 1) for w in settings) | {"HEATPOSE_PORT": str(port)}
    assert "HEATPOSE_DETECTOR" not in env
    proc = subprocess.Popen(
        heatpose(serve[len(settings) :]),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url, timeout_s=120)
        photo = io.BytesIO()
        Image.new("RGB", (96, 128), (120, 90, 60)).save(photo, "JPEG")
        r = httpx.post(url + "/predict", files={"files": ("a.jpg", photo.getvalue())}, timeout=30)
        health = httpx.get(url + "/health", timeout=5).json()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert r.status_code == 200, r.text
    assert "person detection is off" in r.json()["model"]["detection_off"]
    assert "person detection is off" in health["details"]["detector"]
    assert out.count("person detection is off") == 1, out  # said once in the log
    assert not list((tmp_path / "home").rglob("*.safetensors"))  # nothing was downloaded
