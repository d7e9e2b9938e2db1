"""An RTMDet file served by the real process (``python -m app``, uvicorn): ``/predict``'s boxes
are the detector's own and ``/v1/model`` names it."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from models.detection.rtmdet import RTMDetector
from tests.app.http.test_server import ROOT, env
from tests.app.live_server import free_port, wait_ready
from tests.models.lively_rtmdet import photos, write_rtmdet


@pytest.mark.slow
def test_a_real_server_answers_with_the_rtmdet_files_boxes(
    app_checkpoint: Path, tmp_path: Path
) -> None:
    weights = write_rtmdet(tmp_path / "rtmdet_nano_person.pth")  # mmdet's checkpoint dict
    image = photos()[0]  # 640x480, textured: the random weights find persons in it
    want = RTMDetector.from_file(weights, device="cpu").detect([image], 0.3, 0.3, 3)[0]
    assert len(want.boxes) == 3
    png = io.BytesIO()
    Image.fromarray(image).save(png, "PNG")  # lossless: the server sees these very pixels
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "--port", str(port)],
        cwd=ROOT,
        env=env(
            HEATPOSE_CHECKPOINT=str(app_checkpoint),
            HEATPOSE_DETECTOR=str(weights),
            HEATPOSE_DEVICE="cpu",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_ready(proc, url)
        info = httpx.get(url + "/v1/model", timeout=10).json()
        assert str(weights) in info["detector"]
        r = httpx.post(
            url + "/predict",
            files=[("files", ("people.png", png.getvalue(), "image/png"))],
            params={"max_persons": 3},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        persons = r.json()["images"][0]["persons"]
        assert [p["bbox_source"] for p in persons] == ["detector"] * 3
        np.testing.assert_allclose([p["bbox"] for p in persons], want.boxes, atol=0.05)
        np.testing.assert_allclose([p["bbox_score"] for p in persons], want.scores, atol=1e-4)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
