"""What reduced-scale JPEG decoding saves: server memory and latency of one large-JPEG /predict.

For each ``--max-sides`` value a real server (``python -m app`` on loopback, a small random
ResNet-18 checkpoint, no detector: the whole image is one person) is started with
``HEATPOSE_DECODE_MAX_SIDE`` set to it, and ``--requests`` ``/predict`` requests of one photo-like
JPEG of ``--size`` pixels are posted one after the other. Reported per setting: the factor the
JPEG is decoded at, the server's peak RSS rise over its ready state (``VmHWM`` from /proc), and
the p50 of the request latency and of its ``decode`` Server-Timing.

    .venv/bin/python benchmarks/bench_reduced_decode.py [--size 8192x4800] [--max-sides 4096,0]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_shed import photo_jpeg  # noqa: E402
from loopback_server import random_checkpoint, serve  # noqa: E402

from app.intake.reduction import jpeg_reduction  # noqa: E402


def vm_hwm_mb(pid: int) -> float:
    """The peak resident set size of process ``pid`` so far, MB."""
    m = re.search(r"^VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    assert m
    return int(m.group(1)) / 1024


def measure(checkpoint: Path, max_side: int, data: bytes, requests: int) -> tuple[float, ...]:
    """``(peak RSS rise MB, p50 latency ms, p50 decode ms)`` of one server at ``max_side``."""
    settings = {
        "HEATPOSE_CHECKPOINT": str(checkpoint),
        "HEATPOSE_DETECTOR": "none",
        "HEATPOSE_DECODE_MAX_SIDE": str(max_side),
        "HEATPOSE_REQUEST_TIMEOUT_S": "120",
        "HEATPOSE_MAX_UPLOAD_BYTES": "100000000",
        "HEATPOSE_DRAIN_DELAY_S": "0",
        "HEATPOSE_LOG_LEVEL": "warning",
    }
    with serve(ROOT, settings) as (proc, url):
        before = vm_hwm_mb(proc.pid)
        total, decode = [], []
        with httpx.Client(timeout=120) as client:
            for _ in range(requests):
                t0 = time.perf_counter()
                r = client.post(url + "/predict", files=[("files", ("a.jpg", data, "image/jpeg"))])
                total.append((time.perf_counter() - t0) * 1e3)
                assert r.status_code == 200, r.text
                decode.append(r.json()["timing"]["decode_ms"])
        return vm_hwm_mb(proc.pid) - before, float(np.median(total)), float(np.median(decode))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="8192x4800", help="WxH of the JPEG (default 39.3 MP)")
    p.add_argument("--max-sides", default="4096,0", help="HEATPOSE_DECODE_MAX_SIDE values")
    p.add_argument("--requests", type=int, default=5)
    args = p.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    data = photo_jpeg(0, (w, h))
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = random_checkpoint(Path(tmp) / "res18.safetensors")
        print(f"one {w}x{h} JPEG ({len(data) / 1e6:.1f} MB), {args.requests} requests each")
        for side in (int(v) for v in args.max_sides.split(",")):
            rise, p50, dec = measure(checkpoint, side, data, args.requests)
            f = jpeg_reduction((w, h), side)
            print(
                f"HEATPOSE_DECODE_MAX_SIDE={side}: decoded at 1/{f} ({-(-w // f)}x{-(-h // f)}); "
                f"peak RSS rise {rise:.0f} MB; p50 {p50:.0f} ms, decode p50 {dec:.0f} ms"
            )


if __name__ == "__main__":
    main()
