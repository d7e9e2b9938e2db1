"""Person detection in the service (issue 9, section 6): raw detector vs the service end to end.

Side by side in one run, on 640x480 JPEGs with 3 synthetic people each:

(a) the raw detector: Faster R-CNN MobileNetV3-Large-FPN (``person-frcnn-mbv3``, the CPU
    default), torchvision's model called on a list of ready float tensors, images/s at each
    batch size (the best is the ceiling of the detector stage);
(b) the running service (``python -m app``, real HTTP on loopback) with that detector
    (``HEATPOSE_DETECTOR=FILE``, detector batch size = the best of (a)) and a ResNet-50 256x192
    pose model, N concurrent clients posting one image each to ``/predict`` without boxes:
    images/s, p50/p99 latency, and where the time went per image: detector stage, pose stage
    (worker busy seconds from ``/metrics``) and the rest (1 / throughput minus both).

Both models have random weights (nothing can be downloaded here): the detector's person logit
gets a +10 bias so every proposal is a confident person, and requests ask ``max_persons=3``,
so each image sends 3 crops to the pose stage as a real 3-person photo would. The compute per
image is that of the real models (weights do not change FLOPs). Flip test off.

    .venv/bin/python benchmarks/bench_detection.py [--duration 20] [--clients 16]
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_service import free_port, run_load, start_server, stop_server  # noqa: E402

from models.checkpoint import build_model, save  # noqa: E402
from models.detector import build_torchvision_model  # noqa: E402
from models.model_config import ModelConfig  # noqa: E402
from training.synthetic import background  # noqa: E402
from training.synthetic_people import draw_person, sample_person  # noqa: E402


def three_people_jpeg(seed: int, size: tuple[int, int] = (640, 480)) -> bytes:
    """A ``size`` (w, h) JPEG: a cluttered background with 3 synthetic people side by side."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = background(rng, w, h)
    for i in range(3):
        height = rng.uniform(0.45, 0.7) * h
        pelvis = np.array([(i + 0.5) * w / 3 + rng.uniform(-30, 30), 0.55 * h])
        mask = np.zeros((h, w), np.uint8)
        draw_person(img, mask, sample_person(rng, pelvis, height), rng)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def raw_detector(model: torch.nn.Module, jpegs: list[bytes], batch: int, seconds: float) -> float:
    """(a) images/s of ``model(list of (3, H, W) float tensors)`` (torchvision's resize to
    800 px, backbone, RPN, box head and its post-processing), after one warm-up call."""
    decoded = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR)[..., ::-1] for j in jpegs]
    x = [
        torch.from_numpy(decoded[i % len(decoded)].copy()).permute(2, 0, 1).float() / 255
        for i in range(batch)
    ]
    with torch.inference_mode():
        start = time.perf_counter()
        model(x)  # warm-up
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or n < 2:
            model(x)
            n += 1
        return n * batch / (time.perf_counter() - start)


METRICS = (
    "heatpose_detector_inference_seconds_sum",
    "heatpose_detector_batch_size_sum",
    "heatpose_detector_batch_size_count",
    "heatpose_inference_seconds_sum",
    "heatpose_batch_size_sum",
    "heatpose_batch_size_count",
)


def server_metrics(port: int) -> dict[str, float]:
    """Both stages' busy seconds and batch sizes from ``/metrics``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    out = {}
    for name in METRICS:
        m = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
        out[name] = float(m.group(1)) if m else float("nan")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=20.0, help="seconds of measured load")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds of load before measuring")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--batch-sizes", default="1,2,4,8", help="raw detector sweep for (a)")
    p.add_argument("--raw-seconds", type=float, default=3.0, help="per batch size in (a)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}, load average before "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    jpegs = [three_people_jpeg(i) for i in range(args.clients)]
    torch.manual_seed(0)
    detector = build_torchvision_model("person-frcnn-mbv3")
    with torch.no_grad():
        detector.roi_heads.box_predictor.cls_score.bias[1] += 10.0  # every proposal a person
    print("(a) raw detector (person-frcnn-mbv3, random weights, 640x480 -> 800 px), images/s:")
    sweep = {}
    for b in (int(s) for s in args.batch_sizes.split(",")):
        sweep[b] = raw_detector(detector, jpegs, b, args.raw_seconds)
        print(f"  batch {b}: {sweep[b]:6.2f}", flush=True)
    best = max(sweep, key=lambda k: sweep[k])

    with tempfile.TemporaryDirectory() as tmp:
        det_path = Path(tmp) / "mbv3.pth"
        torch.save(detector.state_dict(), det_path)
        config = ModelConfig(name="res50-random-256x192", depth=50)
        pose_path = Path(tmp) / "res50.safetensors"
        save(pose_path, build_model(config).eval(), config)
        port = free_port()
        proc = start_server(
            pose_path,
            port,
            32,
            5.0,
            args.threads,
            detector=str(det_path),
            detector_batch_size=str(best),
        )
        try:
            path = "/predict?max_persons=3"
            if args.warmup > 0:
                run_load(port, args.clients, 1.0, 0.0, jpegs, path)  # warm
            before = server_metrics(port)
            t0 = time.perf_counter()
            load = run_load(port, args.clients, args.duration, args.warmup, jpegs, path)
            span = time.perf_counter() - t0
            d = {k: v - before[k] for k, v in server_metrics(port).items()}
        finally:
            stop_server(proc)
    # per image, over the whole span (warm-up included: the metrics cover it)
    images = d["heatpose_detector_batch_size_sum"]
    det_ms = d["heatpose_detector_inference_seconds_sum"] / images * 1e3
    pose_ms = d["heatpose_inference_seconds_sum"] / images * 1e3
    per_image_ms = span / images * 1e3
    rest_ms = per_image_ms - det_ms - pose_ms
    det_batch = images / d["heatpose_detector_batch_size_count"]
    crops = d["heatpose_batch_size_sum"] / images
    pose_batch = d["heatpose_batch_size_sum"] / d["heatpose_batch_size_count"]
    print(f"\n(a) raw detector, best batch {best}: {sweep[best]:.2f} images/s")
    print(
        f"(b) service, {args.clients} clients, detector batch <= {best}: {load.rate:.2f} "
        f"images/s, p50 {load.pct(50):.0f} ms, p99 {load.pct(99):.0f} ms "
        f"({load.images} ok, {load.errors} errors); (b)/(a) = {load.rate / sweep[best]:.2f}"
    )
    print(
        f"    {det_batch:.1f} images per detector pass, {crops:.1f} persons per image, "
        f"{pose_batch:.1f} crops per pose pass"
    )
    print(
        f"    per image ({per_image_ms:.0f} ms of wall time): detection {det_ms:.0f} ms "
        f"({det_ms / per_image_ms:.0%}), pose {pose_ms:.0f} ms ({pose_ms / per_image_ms:.0%}), "
        f"rest {rest_ms:.0f} ms ({rest_ms / per_image_ms:.0%})"
    )
    print(f"load average after {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
