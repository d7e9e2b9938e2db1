"""HEATPOSE_DEVICE lists and HEATPOSE_BATCH_BUCKETS: parsing, and the service on two CPU
workers (standing in for two GPUs) answering as the single-device service does."""

from __future__ import annotations

import asyncio
import re
import time

import numpy as np
import pytest
import torch
from PIL import Image

from app.devices import DeviceError, buckets_for, resolve_devices, worker_labels
from app.settings import SettingsError, load_settings
from tests.helpers.images import encode, noise


@pytest.mark.parametrize(
    ("value", "normalised"),
    [
        ("auto", "auto"),
        ("ALL", "all"),
        ("cpu", "cpu"),
        (" cuda:0, cuda:1 ", "cuda:0,cuda:1"),
        ("cpu,cpu", "cpu,cpu"),
        ("cuda", "cuda"),
    ],
)
def test_device_lists_are_accepted(monkeypatch, value: str, normalised: str) -> None:
    monkeypatch.setenv("HEATPOSE_DEVICE", value)
    assert load_settings(_env_file=None).device == normalised


@pytest.mark.parametrize(
    ("value", "normalised"), [("auto", "auto"), ("NONE", "none"), ("8, 16,32", "8,16,32")]
)
def test_bucket_lists_are_accepted(monkeypatch, value: str, normalised: str) -> None:
    monkeypatch.setenv("HEATPOSE_BATCH_BUCKETS", value)
    assert load_settings(_env_file=None).batch_buckets == normalised


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("HEATPOSE_DEVICE", "gpu"),
        ("HEATPOSE_DEVICE", "cuda:0,"),
        ("HEATPOSE_DEVICE", "cpu;cpu"),
        ("HEATPOSE_DEVICE", "all,cpu"),
        ("HEATPOSE_DEVICE", "cuda:x"),
        ("HEATPOSE_BATCH_BUCKETS", "8,4"),
        ("HEATPOSE_BATCH_BUCKETS", "0,8"),
        ("HEATPOSE_BATCH_BUCKETS", "eight"),
    ],
)
def test_bad_values_are_one_line_naming_the_variable(monkeypatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as e:
        load_settings(_env_file=None)
    (line,) = str(e.value).splitlines()  # one line (issue 23)
    assert line.startswith(f"invalid settings: {var}: ") and repr(value) in line


def test_serve_refuses_a_bad_device_list_in_one_line(monkeypatch, tmp_path, capsys) -> None:
    from heatpose_cli.serve import main

    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("HEATPOSE_DEVICE", "cuda:0;cuda:1")
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "HEATPOSE_DEVICE: " in err and "cuda:0,cuda:1" in err
    assert [ln for ln in err.splitlines() if "HEATPOSE_DEVICE" in ln] == [
        ln for ln in err.splitlines() if "cuda:0;cuda:1" in ln
    ]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a CPU-only host")
def test_all_is_the_cpu_without_cuda_and_cuda_devices_must_exist() -> None:
    assert resolve_devices("all") == ["cpu"]
    assert resolve_devices("cpu,cpu") == ["cpu", "cpu"]
    assert resolve_devices("auto") is None
    with pytest.raises(DeviceError, match=r"HEATPOSE_DEVICE=cpu,cuda:1 but no CUDA device"):
        resolve_devices("cpu,cuda:1")


def test_workers_are_labelled_by_device_and_repeats_numbered() -> None:
    assert worker_labels(["cpu"]) == ["cpu"]
    assert worker_labels(["cuda:0", "cuda:1"]) == ["cuda:0", "cuda:1"]
    assert worker_labels(["cpu", "cuda:0", "cpu"]) == ["cpu/0", "cuda:0", "cpu/1"]


def test_buckets_are_on_for_cuda_only_by_default() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda:0")
    assert buckets_for("auto", cpu, max_batch_size=32) == ()
    assert buckets_for("auto", cuda, max_batch_size=32) == (8, 16, 32, 64)  # flip: 2 x 32
    assert buckets_for("auto", cuda, max_batch_size=5) == (8, 16)
    assert buckets_for("none", cuda, max_batch_size=32) == ()
    assert buckets_for("4,8", cpu, max_batch_size=32) == (4, 8)


# ---------------------------------------------------------------- the service on two workers


def png(seed: int) -> bytes:
    small = noise(12, 9, seed)
    return encode(Image.fromarray(small).resize((90, 120)))


async def predict_all(client, n: int) -> list[dict]:
    async def one(i: int) -> dict:
        r = await client.post("/predict", files=[("files", (f"{i}.png", png(i), "image/png"))])
        return {"status": r.status_code, "body": r.json()}

    return list(await asyncio.gather(*(one(i) for i in range(n))))


def keypoints(answer: dict) -> np.ndarray:
    (person,) = answer["body"]["images"][0]["persons"]
    return np.array([[k["x"], k["y"], k["score"]] for k in person["keypoints"]])


def device_batches(text: str) -> dict[str, float]:
    found = re.findall(r'^heatpose_device_batch_size_count\{device="([^"]+)"\} (\S+)$', text, re.M)
    return {d: float(v) for d, v in found}


@pytest.mark.slow
@pytest.mark.anyio
async def test_two_cpu_workers_spread_batches_and_answer_as_one_device(serve_app) -> None:
    # Batch size 1: every forward is the same size on both sides, so results must be equal.
    settings = {"max_batch_size": 1, "torch_threads": 1}
    async with serve_app(device="cpu", **settings) as (client, _):
        single = await predict_all(client, 12)
    async with serve_app(device="cpu,cpu", **settings) as (client, app):
        service = app.state.service
        assert [str(p.device) for p in service.predictors] == ["cpu", "cpu"]
        assert service.predictors[0].model is not service.predictors[1].model  # own replicas
        double = await predict_all(client, 12)
        metrics = (await client.get("/metrics")).text
        info = (await client.get("/v1/model")).json()
    assert info["device"] == "cpu,cpu"
    counts = device_batches(metrics)
    assert set(counts) == {"cpu/0", "cpu/1"} and min(counts.values()) >= 1
    assert sum(counts.values()) == 12  # one crop per request, batch size 1
    for a, b in zip(single, double, strict=True):
        assert a["status"] == b["status"] == 200
        np.testing.assert_allclose(keypoints(b), keypoints(a), atol=1e-5, rtol=0)


@pytest.mark.anyio
async def test_a_failing_worker_fails_only_its_requests(serve_app) -> None:
    async with serve_app(device="cpu,cpu", max_batch_size=1, torch_threads=1) as (client, app):
        service = app.state.service
        broken = service.predictors[1]
        sent: list[int] = []

        def lost(x: torch.Tensor) -> torch.Tensor:
            sent.append(x.shape[0])
            raise RuntimeError("device 1 lost")

        broken.forward = lost  # the backend interface: the forward call of device 1 only
        answers = await predict_all(client, 12)
        ok = [a for a in answers if a["status"] == 200]
        failed = [a for a in answers if a["status"] != 200]
        assert ok and failed and len(failed) == len(sent)  # one request per failed batch
        for a in failed:
            assert a["status"] == 500 and a["body"]["error"]["code"] == "inference_failed"
        # later requests go to the healthy worker while it is free
        for i in range(3):
            r = await client.post("/predict", files=[("files", ("x.png", png(i), "image/png"))])
            assert r.status_code == 200
        assert (await client.get("/ready")).status_code == 200


@pytest.mark.slow
@pytest.mark.anyio
async def test_batch_buckets_give_the_same_answers(serve_app) -> None:
    async with serve_app(device="cpu", torch_threads=1) as (client, _):
        plain = await predict_all(client, 6)
    async with serve_app(device="cpu", batch_buckets="8,16", torch_threads=1) as (client, app):
        assert app.state.service.predictor.forward.buckets == (8, 16)
        padded = await predict_all(client, 6)
    for a, b in zip(plain, padded, strict=True):
        assert a["status"] == b["status"] == 200
        # other batch sizes run other kernels: float32 rounding (heatmaps within 1e-5, see
        # tests/models/runtime/test_buckets.py), keypoints of tens of pixels within 1e-4
        np.testing.assert_allclose(keypoints(b), keypoints(a), atol=1e-4, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.anyio
@pytest.mark.parametrize("device", ["cuda:0,cuda:0", "all"])
async def test_cuda_workers_serve(serve_app, device: str) -> None:
    async with serve_app(device=device, max_batch_size=1) as (client, app):
        service = app.state.service
        assert all(p.device.type == "cuda" for p in service.predictors)
        # auto on CUDA: 8 holds 2 x max_batch_size crops
        assert all(p.forward.buckets == (8,) for p in service.predictors)
        answers = await predict_all(client, 8)
        metrics = (await client.get("/metrics")).text
    assert all(a["status"] == 200 for a in answers)
    assert len(device_batches(metrics)) == len(service.predictors)


@pytest.mark.slow
@pytest.mark.anyio
async def test_the_detector_stage_has_a_worker_per_device_too(serve_app) -> None:
    from tests.app.engine.test_detection import SCORES, StandIn

    class Slow(StandIn):
        def detect(self, images, *args, **kw):  # type: ignore[no-untyped-def]
            time.sleep(0.02)  # long enough for the requests to pile up behind one worker
            return super().detect(images, *args, **kw)

    # three people inside png()'s 90x120 images (boxes beyond the image are dropped)
    det = Slow(np.array([[5, 5, 40, 60], [30, 10, 80, 110], [10, 50, 85, 115]], np.float32), SCORES)
    settings = {"device": "cpu,cpu", "detector_batch_size": 1, "torch_threads": 1}
    async with serve_app(stand_in=det, **settings) as (client, _):
        answers = await predict_all(client, 8)
        metrics = (await client.get("/metrics")).text
    assert all(a["status"] == 200 for a in answers)
    assert all(len(a["body"]["images"][0]["persons"]) == 3 for a in answers)
    found = re.findall(
        r'^heatpose_detector_device_batch_size_count\{device="([^"]+)"\} (\S+)$', metrics, re.M
    )
    counts = {d: float(v) for d, v in found}
    assert set(counts) == {"cpu/0", "cpu/1"} and min(counts.values()) >= 1
    assert sum(counts.values()) == 8 and len(det.calls) == 2 + 8  # warm-up, self-check: once each
