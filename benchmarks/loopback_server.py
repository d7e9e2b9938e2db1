"""``python -m app`` on a free loopback port, for the benchmarks that measure a real server.

Run from ``benchmarks/`` scripts (which put the repository root on ``sys.path``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import torch

from models.pose.codec import HeatmapCodec
from models.weights.checkpoint import build_model, save
from models.weights.model_config import ModelConfig


def random_checkpoint(path: Path) -> Path:
    """A random ResNet-18 checkpoint (input 96x128 w x h, 17 COCO keypoints) saved at ``path``;
    the same weights every time."""
    torch.manual_seed(0)
    codec = HeatmapCodec(input_size=(96, 128), heatmap_size=(24, 32))
    config = ModelConfig(name="bench-res18", depth=18, codec_params=codec.to_dict())
    save(path, build_model(config), config)
    return path


@contextmanager
def serve(root: Path, settings: dict[str, str]) -> Iterator[tuple[subprocess.Popen, str]]:
    """``(process, url)`` of the server of checkout ``root`` with ``settings`` (``HEATPOSE_*``
    variables, the prefix included; none other is inherited), once ``/ready`` says 200;
    terminated on exit."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEATPOSE_")}
    env |= {"PYTHONPATH": str(root), "HEATPOSE_PORT": str(port), **settings}
    proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=root, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < end, "server did not start"
            time.sleep(0.2)
        yield proc, url
    finally:
        proc.terminate()
        proc.wait(30)
