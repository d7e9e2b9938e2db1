"""A burst of concurrent clients against a real server: what they get, how fast, and the
server's peak memory (issue 23, section 2).

A real server (``python -m app`` on loopback, a random ResNet-18 checkpoint; with
``--detector`` a random-weight torchvision person detector written here) takes ``--clients``
concurrent clients posting ``--rounds`` images each (``--size`` WxH JPEGs). Reported: the count
of each answer (status and error code, connection errors), the median and longest latency of
each kind, and the server's peak resident memory (``VmHWM`` of ``/proc/PID/status``).

``--root`` serves another checkout (e.g. the code before the change, from ``git archive``), so
one script measures before and after:

    .venv/bin/python benchmarks/bench_burst.py [--root DIR] [--detector] [--clients 32]
        [--rounds 2] [--size 640x480] [--timeout 30] [-e HEATPOSE_X=Y ...]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_shed import photo_jpeg  # noqa: E402
from loopback_server import random_checkpoint, serve  # noqa: E402


def random_detector(path: Path) -> Path:
    """A random-weight ``person-frcnn-mbv3`` state dict (torchvision's layout) at ``path``."""
    import torch

    from models.detection.detector import build_torchvision_model

    torch.manual_seed(0)
    torch.save(build_torchvision_model("person-frcnn-mbv3").state_dict(), path)
    return path


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (``VmHWM``), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def burst(url: str, data: bytes, clients: int, rounds: int) -> dict[str, list[float]]:
    """Each client posts ``rounds`` times on its own connection: latencies by answer kind."""
    seen: dict[str, list[float]] = defaultdict(list)

    async def one(client: httpx.AsyncClient) -> None:
        for _ in range(rounds):
            t0 = time.perf_counter()
            try:
                r = await client.post(
                    url + "/predict", files=[("files", ("a.jpg", data, "image/jpeg"))]
                )
                kind = str(r.status_code)
                if r.status_code != 200:
                    kind += " " + r.json()["error"]["code"]
            except httpx.TransportError as e:
                kind = f"error {type(e).__name__}"
            seen[kind].append(time.perf_counter() - t0)

    pool = [
        httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=1))
        for _ in range(clients)
    ]
    try:
        await asyncio.gather(*(one(c) for c in pool))
    finally:
        await asyncio.gather(*(c.aclose() for c in pool))
    return seen


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=ROOT, help="checkout whose app/ is served")
    p.add_argument("--detector", action="store_true", help="a random-weight person detector")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--size", default="640x480", help="WxH of each JPEG")
    p.add_argument("--timeout", default="30", help="HEATPOSE_REQUEST_TIMEOUT_S")
    p.add_argument("-e", action="append", default=[], help="more HEATPOSE_X=Y settings")
    args = p.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        settings = {
            "HEATPOSE_CHECKPOINT": str(random_checkpoint(Path(tmp) / "res18.safetensors")),
            "HEATPOSE_DETECTOR": "none",
            "HEATPOSE_REQUEST_TIMEOUT_S": args.timeout,
            "HEATPOSE_MAX_UPLOAD_BYTES": "100000000",
            "HEATPOSE_DRAIN_DELAY_S": "0",
            "HEATPOSE_SHUTDOWN_GRACE_S": "1",
            "HEATPOSE_LOG_LEVEL": "warning",
        }
        if args.detector:
            settings["HEATPOSE_DETECTOR"] = str(random_detector(Path(tmp) / "mbv3.pth"))
            settings["HEATPOSE_DEVICE"] = "cpu"
        settings |= dict(kv.split("=", 1) for kv in args.e)
        data = photo_jpeg(0, (w, h))
        with serve(args.root, settings) as (proc, url):
            idle = peak_rss_mb(proc.pid)
            t0 = time.perf_counter()
            seen = asyncio.run(burst(url, data, args.clients, args.rounds))
            wall = time.perf_counter() - t0
            peak = peak_rss_mb(proc.pid)
            report(args, seen, wall, (idle, peak), (w, h), len(data))


def report(
    args: argparse.Namespace,
    seen: dict[str, list[float]],
    wall: float,
    rss: tuple[float, float],
    size: tuple[int, int],
    nbytes: int,
) -> None:
    """Print the answers by kind, their latencies and the peak memory."""
    (w, h), (idle, peak) = size, rss
    print(
        f"root {args.root}, detector {'on' if args.detector else 'off'}: {args.clients} clients "
        f"x {args.rounds} JPEGs {w}x{h} ({nbytes / 1e6:.2f} MB) in {wall:.1f} s; "
        f"peak RSS {idle:.0f} MB ready -> {peak:.0f} MB",
        flush=True,
    )
    for kind, lat in sorted(seen.items()):
        ms = np.array(lat) * 1e3
        print(
            f"  {kind}: {len(lat)}  median {np.median(ms):.0f} ms, longest {ms.max():.0f} ms",
            flush=True,
        )


if __name__ == "__main__":
    main()
