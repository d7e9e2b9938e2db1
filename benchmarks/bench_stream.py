"""``WS /v1/stream`` throughput against the raw model (issue 10, section 4).

Side by side in one run, ResNet-50 (``--depth``) at 256x192 with random weights, flip test off:

(a) the raw network: ``model(batch)`` on ready normalised tensors, images/s at each batch size
    (:func:`bench_service.raw_model`); the best is the limit the streams can approach;
(b) the running service (``python -m app`` under uvicorn, loopback), N concurrent streams, each
    a client sending 640x480 JPEG frames of one synthetic walker at 30 frames/s (a camera:
    latest frame wins on the server); per run the answered frames/s per stream and in total,
    p50/p99 of the server's ``latency_ms`` (frame arrival to answer) and the dropped share.

Person detector (``--detector``):

- ``none`` (default): ``HEATPOSE_DETECTOR=none``, each frame is one crop of the whole image and
  ``det_interval`` changes nothing;
- ``frcnn-random``: torchvision's Faster R-CNN MobileNetV3-Large-FPN (``person-frcnn-mbv3``, the
  CPU default) with random weights, written as a state-dict file (``HEATPOSE_DETECTOR=FILE``);
  its person logit gets a +10 bias so every proposal is a confident person (as
  ``bench_detection.py``), and the streams ask ``max_persons=1`` (one walker per frame) and
  ``kpt_thr=0`` (the random pose model's keypoint scores are meaningless; with them every track
  can be followed from its keypoints, as a trained model's confident keypoints allow). The
  detector then runs on every ``det_interval``-th frame of each stream; its compute per image
  is that of the real model (weights do not change FLOPs).

Per run, from the server's ``/metrics`` (warm-up included): detector images and pose crops per
answered frame, so ``det_interval``'s effect is visible (about 1 and 1/N with one walker; the
frame each stream is on when its client leaves is inferred but not answered, which adds up to
one frame per stream to the numerators: noticeable only in short runs).

    .venv/bin/python benchmarks/bench_stream.py [--depth 18] [--duration 10] [--streams 1 4 16]
        [--detector frcnn-random]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import io
import json
import os
import platform
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_service import free_port, raw_model, start_server, stop_server  # noqa: E402

from models.detection.detector import build_torchvision_model  # noqa: E402
from models.pose.network import fold_batchnorm  # noqa: E402
from models.weights.checkpoint import build_model, save  # noqa: E402
from models.weights.model_config import ModelConfig  # noqa: E402
from training.synthetic.synthetic_video import make_video  # noqa: E402


@dataclass
class StreamLoad:
    """What the clients of one run saw: answers, dropped frames, sent frames, latencies (ms)."""

    streams: int
    seconds: float
    sent: int = 0
    answered: int = 0
    dropped: int = 0
    latencies: list[float] = field(default_factory=list)
    # dropped share: frames skipped / (skipped + answered), from the answers' ``dropped``

    def row(self) -> str:
        p50, p99 = np.percentile(self.latencies, [50, 99]) if self.latencies else (np.nan,) * 2
        total = self.answered / self.seconds
        share = self.dropped / max(self.dropped + self.answered, 1)
        return (
            f"{self.streams:7d} {total / self.streams:11.2f} {total:9.2f} {p50:8.0f} "
            f"{p99:8.0f} {share:8.2f}"
        )


def video_jpegs(n: int = 60) -> list[bytes]:
    """``n`` 640x480 JPEG frames of one person walking (training/synthetic/synthetic_video.py)."""
    video = make_video("constant_speed", width=640, height=480, speed=192)
    out = []
    for f in video.frames[:n]:
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


async def one_stream(
    url: str, frames: list[bytes], load: StreamLoad, warmup: float, seconds: float, fps: float
) -> None:
    """Send frames at ``fps``; count answers (and drops) that arrive in the measured window."""
    start = time.perf_counter()
    measure_from, end = start + warmup, start + warmup + seconds
    async with connect(url, max_size=None) as ws:

        async def send() -> None:
            i = 0
            while time.perf_counter() < end:
                await ws.send(frames[i % len(frames)])
                if time.perf_counter() >= measure_from:
                    load.sent += 1
                i += 1
                await asyncio.sleep(max(0.0, start + i / fps - time.perf_counter()))

        sender = asyncio.create_task(send())
        while time.perf_counter() < end:
            try:
                m = json.loads(await asyncio.wait_for(ws.recv(), end - time.perf_counter()))
            except TimeoutError:
                break
            if "error" in m:
                raise RuntimeError(m)
            if time.perf_counter() >= measure_from:
                load.answered += 1
                load.dropped += m["dropped"]
                load.latencies.append(m["latency_ms"])
        await sender


COUNTERS = (
    "heatpose_stream_frames_processed_total",
    "heatpose_detector_batch_size_sum",
    "heatpose_batch_size_sum",
)


def wait_streams_closed(port: int, timeout: float = 120.0) -> dict[str, float]:
    """Until the server's ``heatpose_streams_open`` is 0 (streams of the previous run finish
    the frame they are on after their client left); then its :data:`COUNTERS` (answered
    frames, detector images, pose crops so far; 0 if absent)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        if re.search(r"^heatpose_streams_open 0\.0$", text, re.M):
            found = {k: re.search(rf"^{k} ([0-9.e+-]+)$", text, re.M) for k in COUNTERS}
            return {k: float(m.group(1)) if m else 0.0 for k, m in found.items()}
        time.sleep(0.5)
    raise RuntimeError("streams of the previous run are still open")


def per_frame(before: dict[str, float], after: dict[str, float]) -> str:
    """Detector images and pose crops per answered frame between two counter readings."""
    d = {k: after[k] - before[k] for k in COUNTERS}
    frames = max(d["heatpose_stream_frames_processed_total"], 1.0)
    det = d["heatpose_detector_batch_size_sum"] / frames
    crops = d["heatpose_batch_size_sum"] / frames
    return f"{det:9.2f} {crops:11.2f}"


def random_detector(path: Path) -> None:
    """``person-frcnn-mbv3`` with random weights, person logit +10, as a state dict at ``path``."""
    torch.manual_seed(0)
    model = build_torchvision_model("person-frcnn-mbv3")
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[1] += 10.0  # every proposal a person
    torch.save(model.state_dict(), path)


async def run_streams(
    port: int,
    streams: int,
    det_interval: int,
    frames: list[bytes],
    *,
    warmup: float,
    seconds: float,
    fps: float,
    query: str = "",
) -> StreamLoad:
    load = StreamLoad(streams, seconds)
    url = f"ws://127.0.0.1:{port}/v1/stream?det_interval={det_interval}&flip_test=false{query}"
    await asyncio.gather(
        *(one_stream(url, frames, load, warmup, seconds, fps) for _ in range(streams))
    )
    return load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--det-intervals", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds per run")
    ap.add_argument("--fps", type=float, default=30.0, help="frames/s each client sends")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (both)")
    ap.add_argument("--depth", type=int, default=50, choices=[18, 34, 50, 101, 152])
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    ap.add_argument(
        "--detector",
        choices=("none", "frcnn-random"),
        default="none",
        help="person detector of the server (see the module docstring)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, torch threads "
        f"{args.threads}, load average before {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    config = ModelConfig(name=f"bench-res{args.depth}", depth=args.depth)
    model = build_model(config).eval()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "bench.safetensors"
        save(ckpt, model, config)
        print(f"\n(a) raw model(batch), ResNet-{args.depth} 256x192, images/s:")
        folded = fold_batchnorm(model)  # what the service's Predictor runs
        raw = {b: raw_model(folded, b, 3.0, channels_last=False) for b in args.batch_sizes}
        for b, r in raw.items():
            print(f"  batch {b:3d}: {r:6.2f}")
        best = max(raw.values())
        frames = video_jpegs()
        port = free_port()
        settings, query, detector = {}, "", "HEATPOSE_DETECTOR=none"
        if args.detector == "frcnn-random":
            det_path = Path(tmp) / "frcnn-mbv3-random.pth"
            random_detector(det_path)
            settings, query = {"detector": str(det_path)}, "&max_persons=1&kpt_thr=0"
            detector = "HEATPOSE_DETECTOR=person-frcnn-mbv3 random weights, person logit +10"
        proc = start_server(ckpt, port, args.max_batch, 5.0, args.threads, **settings)
        try:
            print(
                f"\n(b) WS /v1/stream, 640x480 JPEG at {args.fps:g} frames/s per stream, "
                f"{args.duration:g} s measured after {args.warmup:g} s; "
                f"HEATPOSE_MAX_BATCH_SIZE={args.max_batch}, {detector}; "
                f"stream query flip_test=false{query}"
            )
            print("det/frame, crops/frame: detector images and pose crops per answered frame")
            for det in args.det_intervals:
                print(f"\ndet_interval {det}")
                print(
                    "streams  fps/stream fps total  p50 ms   p99 ms  dropped det/frame crops/frame"
                )
                for n in args.streams:
                    before = wait_streams_closed(port)
                    load = asyncio.run(
                        run_streams(
                            port,
                            n,
                            det,
                            frames,
                            warmup=args.warmup,
                            seconds=args.duration,
                            fps=args.fps,
                            query=query,
                        )
                    )
                    counts = per_frame(before, wait_streams_closed(port))
                    ratio = load.answered / load.seconds / best
                    print(f"{load.row()} {counts}   ({ratio:.2f}x raw best)", flush=True)
        finally:
            stop_server(proc)
    print(
        f"\nraw best {best:.2f} images/s; load average after "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )


if __name__ == "__main__":
    main()
