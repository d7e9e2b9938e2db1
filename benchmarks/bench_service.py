"""Service throughput against the raw model (issue 4, section 9).

Side by side in one run, ResNet-50 at 256x192 with random weights:

(a) the raw network: ``model(batch)`` on ready-made normalised tensors, images/s at each batch
    size in NCHW and channels_last (the best of them is the limit the service can approach);
(b) the running service (``python -m app`` under uvicorn, real HTTP on loopback), N concurrent
    clients each posting one-person JPEGs to ``/predict`` in a loop; its max batch size is the
    best batch size of (a) unless ``--max-batch`` says otherwise;
(c) the same service with batching off (``HEATPOSE_MAX_BATCH_SIZE=1``).

Flip test is off in (b) and (c) so that all three run one forward pass per image. The machine
is shared, so (a), (b) and (c) are measured in interleaved rounds (both servers stay up) and
the medians are reported: images/s, p50/p99 latency and the ratios (b)/(a) and (b)/(c).

    .venv/bin/python benchmarks/bench_service.py [--duration 20] [--rounds 3] [--clients 16]
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.pose.network import fold_batchnorm  # noqa: E402
from models.weights.checkpoint import build_model, save  # noqa: E402
from models.weights.model_config import ModelConfig  # noqa: E402


@dataclass
class Load:
    """One load run: completed requests, wall time and per-request latencies (s), and what the
    server's own metrics saw meanwhile (crops per forward pass, worker busy fraction)."""

    images: int
    seconds: float
    latencies: list[float]
    errors: int
    mean_batch: float = float("nan")
    busy: float = float("nan")

    @property
    def rate(self) -> float:
        return self.images / self.seconds

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1e3 if self.latencies else float("nan")


_MODEL_THREAD = ThreadPoolExecutor(1, thread_name_prefix="raw-model")


def raw_model(model: torch.nn.Module, batch: int, seconds: float, channels_last: bool) -> float:
    """(a) images/s of ``model(x)`` on a ready normalised batch, timed for ``seconds``.

    Runs on a dedicated thread after a 2 s warm-up, as the service runs its model (on this
    machine the first seconds of a run on the main thread were repeatedly 2x slower).
    """
    w, h = 192, 256
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.randn(batch, 3, h, w).contiguous(memory_format=fmt)

    def timed() -> float:
        with torch.inference_mode():
            start = time.perf_counter()
            while time.perf_counter() - start < 2.0:
                model(x)  # warm-up
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds or n < 2:
                model(x)
                n += 1
            return n * batch / (time.perf_counter() - start)

    return _MODEL_THREAD.submit(timed).result()


def person_jpeg(seed: int, size: tuple[int, int] = (288, 384)) -> bytes:
    """A ``size`` (w, h) JPEG: a smooth random picture (one 'person' filling the frame)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (12, 9, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize(size, Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def multipart(data: bytes, name: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), boundary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    checkpoint: Path,
    port: int,
    max_batch: int,
    delay_ms: float,
    threads: int,
    **settings: str,
) -> subprocess.Popen:
    """``python -m app`` with these settings (``settings``: more ``HEATPOSE_*`` variables by
    field name, e.g. ``detector="x.pth"``; the person detector is off unless given)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEATPOSE_")}
    env.update(
        HEATPOSE_DETECTOR="none",
        HEATPOSE_CHECKPOINT=str(checkpoint),
        HEATPOSE_PORT=str(port),
        HEATPOSE_MAX_BATCH_SIZE=str(max_batch),
        HEATPOSE_MAX_QUEUE_DELAY_MS=str(delay_ms),
        HEATPOSE_FLIP_TEST="false",
        HEATPOSE_LOG_LEVEL="warning",
        HEATPOSE_REQUEST_TIMEOUT_S="600",
        HEATPOSE_TORCH_THREADS=str(threads),
    )
    env.update({f"HEATPOSE_{k.upper()}": v for k, v in settings.items()})
    proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env)
    return wait_ready(proc, port)


def wait_ready(proc: subprocess.Popen, port: int) -> subprocess.Popen:
    """``proc`` once its ``/ready`` answers 200 (up to 180 s); killed if it never does."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/ready")
            if c.getresponse().status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("the server did not become ready")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def run_load(
    port: int,
    clients: int,
    seconds: float,
    warmup: float,
    jpegs: list[bytes] | None = None,
    path: str = "/predict",
) -> Load:
    """``clients`` threads posting JPEGs (client i: ``jpegs[i % len]``, default one-person
    pictures) to ``path`` over keep-alive connections; completions counted for ``seconds``
    after ``warmup`` seconds of load."""
    jpegs = jpegs or [person_jpeg(i) for i in range(clients)]
    bodies = [multipart(jpegs[i % len(jpegs)], f"{i}.jpg") for i in range(clients)]
    start = time.perf_counter()
    measure_from, end = start + warmup, start + warmup + seconds
    lat: list[float] = []
    done = [0]
    errors = [0]
    lock = threading.Lock()

    def client(i: int) -> None:
        body, boundary = bodies[i]
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        while (t0 := time.perf_counter()) < end:
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            t1 = time.perf_counter()
            # Throughput = completions inside the window (wherever they started): counting only
            # requests that also started inside it would miss about one latency's worth.
            if measure_from <= t1 <= end:
                with lock:
                    if resp.status == 200:
                        lat.append(t1 - t0)
                        done[0] += 1
                    else:
                        errors[0] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return Load(done[0], seconds, lat, errors[0])


def _rate(x: Load) -> float:
    return x.rate


def _p50(x: Load) -> float:
    return x.pct(50)


def _p99(x: Load) -> float:
    return x.pct(99)


def report(label: str, load: Load) -> None:
    print(
        f"  {label}: {load.rate:6.2f} images/s  p50 {load.pct(50):7.1f} ms  "
        f"p99 {load.pct(99):7.1f} ms  ({load.images} ok, {load.errors} errors; "
        f"{load.mean_batch:.1f} crops/forward, worker busy {load.busy:.0%})",
        flush=True,
    )


def server_metrics(port: int) -> dict[str, float]:
    """The service's batch-size and inference-time sums from ``/metrics``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    out = {}
    for name in (
        "heatpose_batch_size_sum",
        "heatpose_batch_size_count",
        "heatpose_inference_seconds_sum",
    ):
        m = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
        out[name] = float(m.group(1)) if m else float("nan")
    return out


def measured_load(port: int, args: argparse.Namespace, warmup: float) -> Load:
    """:func:`run_load` plus the server's view of the same span (approximately: the metrics
    are read just before and after, so they include the warm-up seconds)."""
    before = server_metrics(port)
    t0 = time.perf_counter()
    load = run_load(port, args.clients, args.duration, warmup)
    span = time.perf_counter() - t0
    after = server_metrics(port)
    d = {k: after[k] - before[k] for k in after}
    load.mean_batch = d["heatpose_batch_size_sum"] / max(1.0, d["heatpose_batch_size_count"])
    load.busy = d["heatpose_inference_seconds_sum"] / span
    return load


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=20.0, help="seconds per measurement")
    p.add_argument("--rounds", type=int, default=3, help="interleaved (a) (b) (c) rounds")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds of load before measuring")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--batch-sizes", default="1,2,4,8,16", help="raw sweep for (a)")
    p.add_argument(
        "--max-batch",
        type=int,
        default=0,
        help="HEATPOSE_MAX_BATCH_SIZE for (b); 0 = the best batch size of (a)",
    )
    p.add_argument("--delay-ms", type=float, default=5.0, help="HEATPOSE_MAX_QUEUE_DELAY_MS")
    p.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="torch intra-op threads, raw model and servers (HEATPOSE_TORCH_THREADS)",
    )
    p.add_argument(
        "--backend",
        default="torch",
        choices=("torch", "onnxruntime", "compile"),
        help="HEATPOSE_BACKEND of service (b); (a) and (c) stay on torch",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    config = ModelConfig(name="res50-random-256x192", depth=50)
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    print(
        f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch threads {torch.get_num_threads()}, load average before "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print(
        f"ResNet-50 256x192, random weights, flip test off; {args.clients} clients; "
        f"{args.rounds} interleaved rounds of {args.duration:.0f} s per measurement\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "res50.safetensors"
        torch.manual_seed(0)
        model = build_model(config).eval()
        save(checkpoint, model, config)
        folded = fold_batchnorm(model)  # what the service's Predictor runs
        print("(a) raw model(batch) sweep (BatchNorm folded, as served), images/s:")
        sweep = {}
        for cl in (False, True):
            for b in sizes:
                sweep[(cl, b)] = raw_model(folded, b, max(3.0, args.duration / 4), cl)
                fmt = "channels_last" if cl else "NCHW         "
                print(f"  {fmt} batch {b:3d}: {sweep[(cl, b)]:6.2f}", flush=True)
        best_cl, best_b = max(sweep, key=lambda k: sweep[k])
        best = f"batch {best_b}, {'channels_last' if best_cl else 'NCHW'}"
        args.max_batch = args.max_batch or best_b
        ports = {"b": free_port(), "c": free_port()}
        servers = {
            "b": start_server(
                checkpoint,
                ports["b"],
                args.max_batch,
                args.delay_ms,
                args.threads,
                backend=args.backend,
                home=tmp,
            ),
            "c": start_server(checkpoint, ports["c"], 1, args.delay_ms, args.threads),
        }
        rows: list[tuple[float, Load, Load]] = []
        try:
            for r in range(args.rounds):
                print(f"round {r + 1}:")
                a = raw_model(folded, best_b, args.duration, best_cl)
                print(f"  (a) raw model, {best}: {a:6.2f} images/s", flush=True)
                warm = args.warmup if r == 0 else 1.0
                b = measured_load(ports["b"], args, warm)
                report(f"(b) service, {args.backend}, max batch {args.max_batch}", b)
                c = measured_load(ports["c"], args, warm)
                report("(c) service, max batch 1 ", c)
                rows.append((a, b, c))
        finally:
            for proc in servers.values():
                stop_server(proc)

    med = lambda xs: float(np.median(xs))  # noqa: E731
    a_m = med([a for a, _, _ in rows])
    print(f"\nmedian of {len(rows)} rounds        images/s    p50 ms    p99 ms")
    print(f"(a) raw model, {best:<20}{a_m:>9.2f}")
    services = {
        f"(b) service, {args.backend}, max batch {args.max_batch}": [b for _, b, _ in rows],
        "(c) service, max batch 1": [c for _, _, c in rows],
    }
    for label, loads in services.items():
        rate, p50, p99 = (med([f(x) for x in loads]) for f in (_rate, _p50, _p99))
        print(f"{label:<34}{rate:>9.2f}{p50:>10.1f}{p99:>10.1f}")
    ba = [b.rate / a for a, b, _ in rows]
    bc = [b.rate / c.rate for _, b, c in rows]
    print(
        f"\n(b)/(a) per round {' '.join(f'{x:.3f}' for x in ba)}  median {med(ba):.3f}"
        "  (goal >= 0.85)"
    )
    print(f"(b)/(c) per round {' '.join(f'{x:.3f}' for x in bc)}  median {med(bc):.3f}")
    print(f"load average after {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
