"""How fast a full queue says 503 (issue 12, section 3).

A real server (``python -m app`` on loopback, a small random ResNet-18 checkpoint) whose queue
holds ``--images`` person crops is filled by one request of as many small images, which waits
10 s for a batch (so the run must fit in those 10 s: few requests where each takes a second).
Then ``--requests`` requests of ``--images`` JPEGs of ``--size`` pixels each are posted one
after the other; each must get 503 ``overloaded``. Reported: the p50 and p90 of their latency.

``--root`` runs the server from another checkout (e.g. the code before the change), so one
script measures before and after:

    .venv/bin/python benchmarks/bench_shed.py [--root DIR] [--requests 20] [--images 16]
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loopback_server import random_checkpoint, serve  # noqa: E402


def photo_jpeg(seed: int, size: tuple[int, int]) -> bytes:
    """A smooth ``size`` (w, h) JPEG (gradients + mild noise: photo-like file sizes)."""
    w, h = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    a = np.stack([x / w * 255, y / h * 255, (x + y) / (w + h) * 255], axis=-1)
    a += rng.normal(0, 4, a.shape).astype(np.float32)
    buf = io.BytesIO()
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def queue_depth(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=5).text
    m = re.search(r"^heatpose_queue_depth ([0-9.]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=ROOT, help="checkout whose app/ is served")
    p.add_argument("--requests", type=int, default=20)
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--size", default="2000x1500", help="WxH of each JPEG")
    args = p.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = random_checkpoint(Path(tmp) / "res18.safetensors")
        settings = {
            "HEATPOSE_CHECKPOINT": str(checkpoint),
            "HEATPOSE_DETECTOR": "none",  # no weights needed; a shed request never reaches it
            "HEATPOSE_MAX_QUEUED_PERSONS": str(args.images),
            "HEATPOSE_MAX_BATCH_SIZE": "64",
            "HEATPOSE_MAX_QUEUE_DELAY_MS": "10000",
            "HEATPOSE_REQUEST_TIMEOUT_S": "120",
            "HEATPOSE_MAX_UPLOAD_BYTES": "100000000",
            "HEATPOSE_DRAIN_DELAY_S": "0",
            "HEATPOSE_LOG_LEVEL": "warning",
        }
        with serve(args.root, settings) as (_, url):
            small = [
                ("files", (f"h{i}.jpg", photo_jpeg(i, (60, 80)), "image/jpeg"))
                for i in range(args.images)
            ]
            files = [
                ("files", (f"{i}.jpg", photo_jpeg(100 + i, (w, h)), "image/jpeg"))
                for i in range(args.images)
            ]
            holder = threading.Thread(
                target=lambda: httpx.post(url + "/predict", files=small, timeout=120), daemon=True
            )
            holder.start()
            while queue_depth(url) < args.images:
                time.sleep(0.05)
            body_mb = sum(len(f[1][1]) for f in files) / 1e6
            latencies = []
            with httpx.Client(timeout=120) as client:
                for _ in range(args.requests):
                    t0 = time.perf_counter()
                    r = client.post(url + "/predict", files=files)
                    if r.status_code != 503:  # the holder's batch went: the queue is not full
                        print(f"stopped at a {r.status_code} after {len(latencies)} 503s")
                        break
                    latencies.append(time.perf_counter() - t0)
            assert latencies, "no 503 measured (the queue emptied before the first request)"
            ms = np.array(latencies) * 1e3
            print(
                f"root {args.root}: {len(latencies)} requests of {args.images} JPEGs {w}x{h} "
                f"({body_mb:.1f} MB body) against a full queue: all 503; "
                f"p50 {np.percentile(ms, 50):.1f} ms, p90 {np.percentile(ms, 90):.1f} ms"
            )


if __name__ == "__main__":
    main()
