"""Person detection in the service (issues 9 and 21): detectors raw, the service end to end.

Side by side in one run, on 640x480 JPEGs with 3 synthetic people each, random weights
(nothing can be downloaded here; weights do not change the compute):

(a) each detector's ``detect`` on decoded RGB images (pre-processing, forward, NMS), images/s
    at one batch size: ``person-rtmdet-nano`` vs ``person-frcnn-mbv3`` (the CPU choices) and
    ``person-rtmdet-m`` vs ``person-rcnn-r50-fpn`` (the CUDA ones);
(b) the running service (``python -m app``, real HTTP on loopback), ResNet-50 256x192 pose, N
    concurrent clients posting one image each to ``/predict?max_persons=3`` without boxes, with
    the new CPU default (``person-rtmdet-nano``) and the old one (``person-frcnn-mbv3``):
    images/s, p50/p99 latency;
(c) torchvision's ``keypointrcnn_resnet50_fpn``, the whole model (keypoints included, 3
    detections an image), on the same images: images/s, against (b) with the new default;
(d) per service run, the share of wall time the detector and pose stages' workers were busy
    (``/metrics``; the stages overlap, so the shares may add up to more than 100%).

Random detectors are made to find persons: the person logit gets +10 (every prior / proposal a
confident person) and RTMDet's side distances a positive bias (boxes that are not empty), so
each image sends ``max_persons=3`` crops to the pose stage as a real 3-person photo would.
Flip test off.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_detection.py [--duration 20] [--clients 16]
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_service import free_port, run_load, start_server, stop_server  # noqa: E402
from torchvision.models.detection import keypointrcnn_resnet50_fpn  # noqa: E402

from models.detection.detector import PersonDetector, build_torchvision_model  # noqa: E402
from models.detection.rtmdet import ARCH_SPECS, RTMDET_ARCHS, RTMDetector  # noqa: E402
from models.detection.rtmdet_net import RTMDetNet  # noqa: E402
from models.weights.checkpoint import build_model, save  # noqa: E402
from models.weights.model_config import ModelConfig  # noqa: E402
from training.synthetic.dataset import background  # noqa: E402
from training.synthetic.synthetic_people import draw_person, sample_person  # noqa: E402


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


def decode(jpegs: list[bytes]) -> list[np.ndarray]:
    """``(H, W, 3)`` uint8 RGB images."""
    return [
        cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR)[..., ::-1].copy() for j in jpegs
    ]


def timed_rate(step: Callable[[], object], per_call: int, seconds: float) -> float:
    """Images/s of ``step`` (``per_call`` images a call) after one warm-up call, measured for at
    least ``seconds`` and two calls."""
    with torch.inference_mode():
        step()  # warm-up
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or n < 2:
            step()
            n += 1
        return n * per_call / (time.perf_counter() - start)


def random_detector(arch: str, path: Path) -> Any:
    """A random-weight detector of ``arch`` that finds persons (see the module doc), and its
    weights written to ``path`` in the published layout (what the service loads)."""
    torch.manual_seed(0)
    if arch in RTMDET_ARCHS:
        state = RTMDetNet(ARCH_SPECS[arch]).state_dict()
        for i in range(3):
            state[f"bbox_head.rtm_cls.{i}.bias"] += 10.0
            state[f"bbox_head.rtm_reg.{i}.bias"] += 4.0
        torch.save({"state_dict": state}, path)
        return RTMDetector.from_state_dict(state, arch, "cpu")
    model = build_torchvision_model(arch)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[1] += 10.0
    torch.save(model.state_dict(), path)
    return PersonDetector(model, "cpu")


def keypoint_rcnn_rate(images: list[np.ndarray], batch: int, seconds: float) -> float:
    """(c) images/s of torchvision's whole Keypoint R-CNN R50-FPN (3 detections an image)."""
    torch.manual_seed(0)
    model = keypointrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, box_detections_per_img=3, box_score_thresh=0.0
    ).eval()
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[1] += 10.0
    x = [
        torch.from_numpy(images[i % len(images)]).permute(2, 0, 1).float() / 255
        for i in range(batch)
    ]
    return timed_rate(lambda: model(x), batch, seconds)


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


PAIRS = (("person-rtmdet-nano", "person-frcnn-mbv3"), ("person-rtmdet-m", "person-rcnn-r50-fpn"))
NEW_CPU, OLD_CPU = PAIRS[0]


def serve(pose: Path, detector: Path, args: argparse.Namespace, jpegs: list[bytes]) -> dict:
    """(b) and (d) for one detector: the service under load, its stages' busy shares."""
    port = free_port()
    proc = start_server(
        pose,
        port,
        32,
        5.0,
        args.threads,
        detector=str(detector),
        detector_batch_size=str(args.batch),
    )
    try:
        path = "/predict?max_persons=3"
        run_load(port, args.clients, args.warmup, 0.0, jpegs, path)  # warm
        before = server_metrics(port)
        t0 = time.perf_counter()
        load = run_load(port, args.clients, args.duration, 0.0, jpegs, path)
        span = time.perf_counter() - t0
        d = {k: v - before[k] for k, v in server_metrics(port).items()}
    finally:
        stop_server(proc)
    images = d["heatpose_detector_batch_size_sum"]
    return {
        "load": load,
        "det": d["heatpose_detector_inference_seconds_sum"] / span,
        "pose": d["heatpose_inference_seconds_sum"] / span,
        "persons": d["heatpose_batch_size_sum"] / max(images, 1),
        "det_batch": images / max(d["heatpose_detector_batch_size_count"], 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=20.0, help="seconds of measured load, each")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds of load before measuring")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--batch", type=int, default=4, help="images a detector pass in (b)")
    p.add_argument("--raw-batch", type=int, default=1, help="images a call in (a) and (c)")
    p.add_argument("--raw-seconds", type=float, default=3.0, help="per detector in (a), (c)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--rounds", type=int, default=1, help="(b): new, old, new, old, ... runs")
    p.add_argument("--no-raw", action="store_true", help="skip (a) and (c)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    load_avg = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}, load average before {load_avg}"
    )
    jpegs = [three_people_jpeg(i) for i in range(args.clients)]
    images = decode(jpegs)
    batch = [images[i % len(images)] for i in range(args.raw_batch)]
    with tempfile.TemporaryDirectory() as tmp:
        files, raw = {}, {}
        print(f"(a) raw detector detect(), batch {args.raw_batch}, images/s:")
        for arch in (a for pair in PAIRS for a in pair):
            files[arch] = Path(tmp) / f"{arch}.pth"
            det = random_detector(arch, files[arch])
            if args.no_raw:
                continue
            raw[arch] = timed_rate(
                lambda det=det: det.detect(batch), args.raw_batch, args.raw_seconds
            )
            print(f"  {arch:22s} {raw[arch]:7.2f}", flush=True)
        for new, old in PAIRS if raw else ():
            print(f"  {new} / {old}: {raw[new] / raw[old]:.1f}x")
        kp = 0.0 if args.no_raw else keypoint_rcnn_rate(images, args.raw_batch, args.raw_seconds)
        if kp:
            print(f"(c) torchvision keypointrcnn_resnet50_fpn (whole model): {kp:.3f} images/s")
        config = ModelConfig(name="res50-random-256x192", depth=50)
        pose = Path(tmp) / "res50.safetensors"
        save(pose, build_model(config).eval(), config)
        runs = [
            (arch, serve(pose, files[arch], args, jpegs))
            for _ in range(args.rounds)
            for arch in (NEW_CPU, OLD_CPU)
        ]
    print(
        f"(b) service, {args.clients} clients, ResNet-50 pose, max_persons=3, detector batch "
        f"<= {args.batch}, runs in this order:"
    )
    for arch, r in runs:
        load = r["load"]
        print(
            f"  {arch:22s} {load.rate:6.2f} images/s, p50 {load.pct(50):.0f} ms, p99 "
            f"{load.pct(99):.0f} ms ({load.images} ok, {load.errors} errors); (d) busy: "
            f"detector {r['det']:.0%}, pose {r['pose']:.0%}; {r['persons']:.1f} persons an "
            f"image, {r['det_batch']:.1f} images a detector pass"
        )
    new, old = (np.mean([r["load"].rate for a, r in runs if a == arch]) for arch in PAIRS[0])
    print(f"  new / old default (mean of the runs): {new / old:.1f}x images/s (goal >= 4x)")
    if kp:
        print(f"(c) heatpose end to end ({NEW_CPU}) / keypointrcnn: {new / kp:.1f}x (goal >= 10x)")
    print(f"load average after {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
