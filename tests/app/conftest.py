"""Fixtures for the service tests: a tiny checkpoint written here and the app with its lifespan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.app.live_server import free_port, wait_ready


@pytest.fixture
def anyio_backend() -> str:
    """The event loop of every ``pytest.mark.anyio`` test of the service: asyncio (what uvicorn
    runs), not trio."""
    return "asyncio"


@pytest.fixture(scope="session")
def app_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small ResNet-18 checkpoint (input 96x128 w x h, 17 COCO keypoints) written here.

    The head is re-initialised with a larger std than SimpleBaselines' 0.001 so its heatmaps
    have clear maxima: results are then stable across batch compositions (no near-ties).
    """
    import torch

    from models.pose.codec import HeatmapCodec
    from models.weights.checkpoint import build_model, save
    from models.weights.model_config import ModelConfig

    torch.manual_seed(0)
    codec = HeatmapCodec(input_size=(96, 128), heatmap_size=(24, 32))
    config = ModelConfig(name="tiny-res18", depth=18, codec_params=codec.to_dict())
    model = build_model(config)
    with torch.no_grad():
        for m in [*model.deconv_layers, model.final_layer]:
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                m.weight.normal_(0.0, 0.05)
    path = tmp_path_factory.mktemp("app") / "tiny.safetensors"
    save(path, model, config)
    return path


@pytest.fixture(scope="module")
def reference(app_checkpoint: Path):
    """The tiny checkpoint in a :class:`~models.inference.predictor.Predictor` on CPU, as the
    service runs it: what ``/predict`` must agree with."""
    import torch

    from models.inference.predictor import Predictor
    from models.weights.checkpoint import load

    ref = Predictor(load(app_checkpoint), device="cpu")
    ref.model.to(memory_format=torch.channels_last)  # as the service runs it on CPU
    return ref


def make_app(default_checkpoint: Path, stand_in: Any = None, /, **overrides: Any) -> Any:
    """The service's app (``app.main.create_app``) with the settings ``overrides`` (``Settings``
    field names, ``checkpoint`` among them) over the defaults (``default_checkpoint``, no
    person detector), no ``.env`` file read. No person detector unless ``stand_in`` is one (an
    object with ``PersonDetector.detect``'s interface) or ``overrides`` name one."""
    from app.main import create_app
    from app.settings import Settings

    defaults = {"checkpoint": str(default_checkpoint), "detector": "none"}
    return create_app(Settings(_env_file=None, **{**defaults, **overrides}), detector=stand_in)


@pytest.fixture
def serve_app(app_checkpoint: Path):
    """``async with serve_app(**settings) as (client, app)``: the real app, lifespan running.

    ``client`` is an ``httpx.AsyncClient`` over the ASGI transport (requests stream their body).
    No person detector unless a test asks: ``serve_app(detector="FILE")`` (a setting) or
    ``serve_app(stand_in=obj)`` (an object with ``PersonDetector.detect``'s interface).
    """
    from contextlib import asynccontextmanager

    import httpx

    @asynccontextmanager
    async def serve(stand_in=None, **overrides):
        app = make_app(app_checkpoint, stand_in, **overrides)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
                yield client, app

    return serve


@pytest.fixture
def server_process(app_checkpoint: Path):
    """``with server_process(args=(), **env) as (proc, url)``: ``python -m app`` (or ``args``,
    e.g. ``["-m", "uvicorn", "app.main:app"]``) on a free loopback port, ready to serve.

    ``env`` are ``HEATPOSE_*`` settings (without the prefix, e.g. ``DRAIN_DELAY_S="0"``); the
    tiny checkpoint is the default. stdout+stderr go to ``proc.stdout``; the process is killed
    on exit if it is still running.
    """
    import os
    import subprocess
    import sys
    from contextlib import contextmanager

    root = Path(__file__).resolve().parents[2]

    @contextmanager
    def start(args: tuple[str, ...] = ("-m", "app"), **settings: str):
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEATPOSE_")}
        env |= {"HEATPOSE_CHECKPOINT": str(app_checkpoint), "HEATPOSE_PORT": str(port)}
        env |= {"OMP_NUM_THREADS": "1", "HEATPOSE_TORCH_THREADS": "1"}
        env |= {"HEATPOSE_DETECTOR": "none"}  # no detector weights here; tests may set one
        env |= {f"HEATPOSE_{k}": v for k, v in settings.items()}
        cmd = [sys.executable, *args]
        if "uvicorn" in args:
            cmd += ["--port", str(port)]
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(proc, url)
            yield proc, url
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    return start


@pytest.fixture
def client(app_checkpoint: Path):
    """``client(stand_in=None, **settings)``: a TestClient over a fresh app, lifespan running
    (no person detector unless ``stand_in`` is one)."""
    from fastapi.testclient import TestClient

    opened: list[Any] = []

    def make(stand_in: Any = None, **overrides: Any) -> Any:
        c = TestClient(make_app(app_checkpoint, stand_in, **{"warmup": False, **overrides}))
        opened.append(c.__enter__())
        return opened[-1]

    yield make
    for c in opened:
        c.__exit__(None, None, None)
