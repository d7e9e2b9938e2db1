"""The request path's own cost: the service with an instant model (issue 13, section 1).

The running service (``python -m app``, uvicorn, real HTTP on loopback) with its forward pass
replaced by an instant one: in the server process(es) only, ``models.runtime.backends.create``
(and the plain ``TorchBackend`` the start-up self-check compares it with) is wrapped so that
the Predictor's forward call returns zero heatmaps of the right shape ``(B, K, H, W)`` at once.
The stand-in is installed through a ``sitecustomize`` module that this script writes into a
temporary directory on the servers' ``PYTHONPATH`` (so uvicorn's spawned workers get it too);
it is not a product setting. Everything else is the product:
multipart parsing, JPEG decode, crops, the batcher, flip test and heatmap decoding, JSON.

Measured per scenario (image size x persons; 3 persons are sent as client boxes, 1 person as
no boxes = the whole image), with N concurrent clients (threads with keep-alive connections in
this process, so their CPU is not the server's):

- server CPU ms per request: utime + stime of the server's process tree (``/proc/PID/stat``,
  the uvicorn parent and its workers) over the measured window, divided by the responses
  completed in it;
- requests/s: responses completed in the window.

``--roots`` serves other checkouts side by side (e.g. ``git worktree add /tmp/base main``), in
interleaved rounds, so a change is compared with its base in one run. ``--workers 1,2`` runs
the service with ``heatpose serve --workers N``. ``--devices 'cpu|cpu,cpu'`` compares
``HEATPOSE_DEVICE`` values (``|``-separated; ``cpu,cpu`` = two batch workers with a model
replica each). ``--env 'HEATPOSE_CROP=cv2|HEATPOSE_CROP=device,HEATPOSE_DECODE=torch'`` compares
sets of other settings the same way (e.g. the on-device request path, app/intake/device_path.py).
``--model r18`` (or ``r50``) serves a real ResNet with random weights instead of
the instant stand-in; ``--model http-only`` answers every image with nobody in it without
decoding, cropping or inferring (what the HTTP layer costs alone); ``--model asgi-floor``
serves a bare ASGI app (reads the body, answers a fixed JSON) under the same uvicorn instead of
the service: the floor of any Python HTTP server here. ``--profile DIR`` runs
one server under ``py-spy record`` instead and writes its collapsed stacks there.
``--threads`` adds each server thread's CPU per request (``/proc/PID/task``; the event loop is
``main``, the others numbered in start order; ``py-spy dump --pid PID`` names them).

    .venv/bin/python benchmarks/bench_overhead.py [--duration 8] [--rounds 3] [--clients 16]
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_service import (  # noqa: E402
    free_port,
    multipart,
    person_jpeg,
    server_metrics,
    wait_ready,
)

from models.weights.checkpoint import build_model, save  # noqa: E402
from models.weights.model_config import ModelConfig  # noqa: E402

SITECUSTOMIZE = '''
"""Benchmark-only: the Predictor's forward call returns zero heatmaps at once."""
import os

import torch
import models

# A checkout from before the sub-packages (--roots base=...) has models/backends.py (decided by
# the root's files: an editable install elsewhere could still answer an import of the other).
if os.path.isdir(os.path.join(models.__path__[0], "runtime")):
    import models.runtime.backends as _backends
else:
    import models.backends as _backends


def _instant_create(name, model, config, *, device, **_options):
    k = config.spec.num_keypoints
    hw, hh = config.codec.heatmap_size

    def forward(x):
        return torch.zeros((x.shape[0], k, int(hh), int(hw)), device=x.device)

    forward.name = "instant"
    return forward


_backends.create = _instant_create


def _instant_call(self, x):
    k = self.model.final_layer.out_channels
    return torch.zeros((x.shape[0], k, x.shape[2] // 4, x.shape[3] // 4), device=x.device)


# The start-up self-check compares the served forward with the plain torch module: that one is
# instant too, so the check agrees and the service keeps the instant forward.
_backends.TorchBackend.__call__ = _instant_call
'''

HTTP_ONLY = """
# Benchmark-only (--model http-only): /predict reads its uploads and answers, but nothing is
# decoded, cropped or inferred; every image has nobody in it. What is left is the HTTP layer.
import time as _time

import numpy as _np

from app.intake.uploads import DecodedImage as _Decoded

_PIXELS = _np.zeros((480, 640, 3), _np.uint8)


async def _no_inference(self, predictor, decode, boxes, options, **_kwargs):
    images = [_Decoded(_PIXELS, f"{i}.jpg", "JPEG") for i in range(len(boxes))]
    return images, [[] for _ in images], _time.perf_counter()


try:  # the request stages' own module since issue 20; the service's method before
    from app.engine.stages import PoseStages as _Stages

    _Stages.decode_and_poses = _no_inference
except ImportError:
    import app.engine.service as _service

    _service.PoseService._decode_and_infer = _no_inference
"""

ASGI_FLOOR = """
# Benchmark-only (--model asgi-floor): the same uvicorn (httptools, uvloop, the service's
# connection options) serving a bare ASGI app that reads each request's body and answers a
# fixed JSON. No FastAPI, no middleware, no multipart parsing: what answering an upload costs
# in Python here before a byte of it is looked at.
import app.main as _main


def _floor_app(_settings, **_kwargs):
    async def asgi(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        body = b'{"images":[]}'
        headers = [(b"content-type", b"application/json"), (b"content-length", b"13")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return asgi


_main.create_app = _floor_app
"""


# py-spy stacks -> request-path stages: a sample goes to the stage of its innermost frame that
# matches one (checked in this order); start-up and idle (waiting) samples are left out.
STAGES = [
    ("JPEG decode (Pillow, app/intake/uploads.py)", ["decode_image", "PIL/"]),
    ("crop (cv2.warpAffine)", ["Predictor.crop", "geometry.py"]),
    ("heatmap decode (DARK, models/pose/codec.py)", ["codec.py", "Predictor.decode"]),
    ("normalise + instant forward + flip merge", ["Predictor.heatmaps", "normalize_crops"]),
    ("batcher (queue, stack, results)", ["batcher.py", "batch_worker.py"]),
    ("multipart parsing", ["multipart", "formparsers", "UploadFile", "datastructures.py"]),
    (
        "JSON response (models, validation, encoding)",
        ["routes/predict.py", "serialize_response", "jsonable_encoder", "pydantic", "json/"],
    ),
    ("metrics", ["metrics.py", "prometheus_client"]),
    ("thread hops (anyio.to_thread, executor)", ["anyio/", "futures/", "threading.py"]),
    (
        "HTTP, routing, middleware, dependencies",
        [
            "uvicorn/",
            "starlette/",
            "fastapi/",
            "app/http/limits.py",
            "app/http/deps.py",
            "app/http/auth.py",
        ],
    ),
]
_IDLE = ("Condition.wait", "_worker (concurrent/futures/thread.py:81)", "WorkerThread.run (anyio")
_START_UP = ("_find_and_load", "PoseService.start", "_warmup", "execsitecustomize", "create_app")


def breakdown(stacks: Path) -> list[tuple[str, float]]:
    """Share of the busy samples of a ``py-spy record -f raw`` file per request-path stage.

    ``Runner.run`` as the innermost frame is the event loop's own C code (uvloop: socket I/O
    and epoll, busy or idle alike), reported as its own line.
    """
    counts: dict[str, int] = {}
    for line in stacks.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if any(s in f for f in frames for s in _START_UP) or frames[-1].startswith(_IDLE):
            continue
        name = "event loop C code (uvloop I/O, and idle)" if "Runner.run" in frames[-1] else ""
        for f in reversed(frames):
            if name:
                break
            name = next((st for st, subs in STAGES if any(x in f for x in subs)), "")
        name = name or "other"
        counts[name] = counts.get(name, 0) + int(n)
    total = sum(counts.values())
    return sorted(((k, v / total) for k, v in counts.items()), key=lambda kv: -kv[1])


@dataclass(frozen=True)
class Scenario:
    """One kind of request: a ``size`` (w, h) JPEG with ``persons`` persons."""

    size: tuple[int, int]
    persons: int

    @property
    def label(self) -> str:
        return f"{self.size[0]}x{self.size[1]}, {self.persons} person{'s' * (self.persons > 1)}"

    def request(self, seed: int) -> tuple[bytes, str]:
        """A multipart body (JPEG, plus ``boxes`` for several persons) and its content type."""
        body, boundary = multipart(person_jpeg(seed, self.size), f"{seed}.jpg")
        if self.persons > 1:
            w, h = self.size
            step = w / self.persons
            boxes = [
                [round(i * step + 0.1 * step), 0.1 * h, round((i + 0.9) * step), 0.95 * h]
                for i in range(self.persons)
            ]
            field = (
                f'--{boundary}\r\nContent-Disposition: form-data; name="boxes"\r\n\r\n'
                f"{json.dumps([boxes])}\r\n"
            ).encode()
            body = field + body
        return body, f"multipart/form-data; boundary={boundary}"


def stat_cpu_s(stat: Path) -> float:
    """utime + stime (s) from a ``/proc/.../stat`` file (a process's or one thread's)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid: int) -> float:
    """utime + stime (s) of ``pid`` and all its live descendants."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += stat_cpu_s(Path(f"/proc/{p}/stat"))
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


def thread_cpu_s(pid: int) -> dict[int, float]:
    """utime + stime (s) of each thread of ``pid`` (its own, not its children's), by thread id."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(task.name)] = stat_cpu_s(task / "stat")
        except (OSError, ValueError):
            continue
    return out


def start_server(
    root: Path,
    checkpoint: Path,
    port: int,
    site: Path | None,
    workers: int,
    profile: Path | None,
    device: str = "auto",
    extra: dict[str, str] | None = None,
) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEATPOSE_")}
    env.update(
        PYTHONPATH=str(root) if site is None else f"{site}{os.pathsep}{root}",
        HEATPOSE_DEVICE=device,
        HEATPOSE_CHECKPOINT=str(checkpoint),
        HEATPOSE_PORT=str(port),
        HEATPOSE_LOG_LEVEL="warning",
        HEATPOSE_DETECTOR="none",  # the whole image is the person: no detector weights here
        HEATPOSE_TORCH_THREADS="1",
        OMP_NUM_THREADS="1",
    )
    env.update(extra or {})
    cmd = [sys.executable, "-m", "app"]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    if profile is not None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        cmd = [spy, "record", "-r", "250", "-f", "raw", "-o", str(profile), "--", *cmd]
    return wait_ready(subprocess.Popen(cmd, cwd=root, env=env), port)


def parse_env(text: str) -> dict[str, str]:
    """``--env``'s ``NAME=VALUE,NAME=VALUE`` -> a dict; only ``HEATPOSE_*`` names."""
    out = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        name, eq, value = item.partition("=")
        if not eq or not name.startswith("HEATPOSE_"):
            raise SystemExit(f"--env: {item!r} is not HEATPOSE_NAME=VALUE")
        out[name] = value
    return out


def short(env: str) -> str:
    """An ``--env`` set as a table label: the values only (``device/torch``), ``-`` for none."""
    return "/".join(v for v in parse_env(env).values()) or "-"


def stop_server(proc: subprocess.Popen, profiled: bool = False) -> None:
    proc.send_signal(signal.SIGINT if profiled else signal.SIGTERM)  # py-spy writes on SIGINT
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


@dataclass
class Result:
    requests: int
    errors: int
    seconds: float
    cpu_s: float
    crops_per_forward: float = float("nan")
    threads: dict[int, float] = field(default_factory=dict)  # thread id -> CPU s in the window

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_ms(self) -> float:
        return self.cpu_s * 1e3 / max(1, self.requests)


def run_load(
    proc: subprocess.Popen,
    port: int,
    scenario: Scenario,
    clients: int,
    warmup: float,
    seconds: float,
) -> Result:
    """``clients`` threads posting for ``warmup + seconds``; the last ``seconds`` are measured."""
    bodies = [scenario.request(i) for i in range(clients)]
    start = time.perf_counter()
    measure_from, end = start + warmup, start + warmup + seconds
    counts = [0, 0]
    lock = threading.Lock()

    def client(i: int) -> None:
        body, ctype = bodies[i]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        while time.perf_counter() < end:
            conn.request("POST", "/predict", body=body, headers={"Content-Type": ctype})
            resp = conn.getresponse()
            resp.read()
            t1 = time.perf_counter()
            if measure_from <= t1 <= end:
                with lock:
                    counts[resp.status != 200] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    time.sleep(max(0.0, measure_from - time.perf_counter()))
    cpu0, per0 = tree_cpu_s(proc.pid), thread_cpu_s(proc.pid)
    time.sleep(max(0.0, end - time.perf_counter()))
    cpu1, per1 = tree_cpu_s(proc.pid), thread_cpu_s(proc.pid)
    for t in threads:
        t.join()
    per = {tid: cpu - per0.get(tid, 0.0) for tid, cpu in per1.items()}
    return Result(counts[0], counts[1], seconds, cpu1 - cpu0, threads=per)


def thread_line(pid: int, res: Result) -> str:
    """The server process's busy threads as CPU ms per request: ``main`` (the event loop) and
    the others numbered in the order they were started (thread ids ascending)."""
    busy = sorted((tid, s) for tid, s in res.threads.items() if s > 0)
    parts = [
        f"{'main' if tid == pid else f't{i}'} {s * 1e3 / max(1, res.requests):.2f}"
        for i, (tid, s) in enumerate(busy)
    ]
    return "    threads (ms CPU/req): " + ", ".join(parts)


def with_batches(port: int, measure: Callable[[], Result]) -> Result:
    """``measure()`` plus the mean crops per forward pass the server saw meanwhile."""
    before = server_metrics(port)
    res = measure()
    after = server_metrics(port)
    n = after["heatpose_batch_size_count"] - before["heatpose_batch_size_count"]
    res.crops_per_forward = (
        after["heatpose_batch_size_sum"] - before["heatpose_batch_size_sum"]
    ) / max(1.0, n)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument(
        "--scenarios",
        default="640x480:1,640x480:3,1920x1080:1,1920x1080:3",
        help="comma-separated WxH:persons",
    )
    p.add_argument("--workers", default="1", help="comma-separated worker counts to compare")
    p.add_argument("--devices", default="auto", help="HEATPOSE_DEVICE values, |-separated")
    p.add_argument(
        "--env",
        default="",
        help="extra HEATPOSE_* settings of the servers: comma-separated NAME=VALUE, sets to "
        "compare |-separated (e.g. 'HEATPOSE_CROP=cv2|HEATPOSE_CROP=device,HEATPOSE_DECODE=torch')",
    )
    p.add_argument(
        "--model",
        default="instant",
        choices=["instant", "http-only", "asgi-floor", "r18", "r50"],
        help="the forward pass (http-only: no decoding, cropping or inference at all; "
        "asgi-floor: not even the app, a bare ASGI app under the same uvicorn)",
    )
    p.add_argument(
        "--roots",
        default=str(ROOT),
        help="comma-separated checkouts to serve side by side (label=path or path)",
    )
    p.add_argument("--profile", type=Path, help="run one server under py-spy; stacks to DIR")
    p.add_argument(
        "--threads",
        action="store_true",
        help="also print the CPU per request of each thread of the server process",
    )
    args = p.parse_args()

    scenarios = []
    for s in args.scenarios.split(","):
        size, persons = s.split(":")
        w, h = (int(v) for v in size.split("x"))
        scenarios.append(Scenario((w, h), int(persons)))
    roots = {}
    for r in args.roots.split(","):
        label, _, path = r.rpartition("=")
        roots[label or Path(path).name] = Path(path).resolve()
    workers = [int(w) for w in args.workers.split(",")]
    devices = args.devices.split("|")
    envs = {e: parse_env(e) for e in args.env.split("|")}

    print(
        f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average before {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    model = {
        "instant": "instant model (zero heatmaps)",
        "http-only": "no inference at all",
        "asgi-floor": "a bare ASGI app, not the service",
    }.get(args.model, "random weights")
    print(
        f"{model}, ResNet-{50 if args.model != 'r18' else 18} 256x192 config, service defaults "
        f"(flip test on, DARK decode); {args.clients} clients; {args.rounds} rounds x "
        f"{args.duration:.0f} s\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        site: Path | None = None
        if args.model in ("instant", "http-only", "asgi-floor"):
            site = Path(tmp) / "site"
            site.mkdir()
            extra = {"http-only": HTTP_ONLY, "asgi-floor": ASGI_FLOOR}.get(args.model, "")
            (site / "sitecustomize.py").write_text(SITECUSTOMIZE + extra)
        config = ModelConfig(name=f"{args.model}-256x192", depth=18 if args.model == "r18" else 50)
        checkpoint = Path(tmp) / "model.safetensors"
        save(checkpoint, build_model(config).eval(), config)

        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
            (label, root), n = next(iter(roots.items())), workers[0]
            for sc in scenarios:
                out = args.profile / f"{label}-{sc.size[0]}x{sc.size[1]}-{sc.persons}.txt"
                port = free_port()
                first = next(iter(envs.values()))
                proc = start_server(root, checkpoint, port, site, n, out, "auto", first)
                try:
                    res = run_load(proc, port, sc, args.clients, args.warmup, args.duration)
                finally:
                    stop_server(proc, profiled=True)
                print(f"profiled {sc.label} (py-spy's own CPU counts too): {res.rate:.1f} req/s")
                for stage, share in breakdown(out):
                    print(f"  {share:6.1%}  {stage}")
            return

        servers = {}
        try:
            for label, root in roots.items():
                for n in workers:
                    for dev in devices:
                        for env in envs:
                            port = free_port()
                            extra = envs[env]
                            proc = start_server(root, checkpoint, port, site, n, None, dev, extra)
                            servers[(label, n, dev, env)] = (proc, port)
            table: dict[tuple[str, int, str, str, Scenario], list[Result]] = {}
            for r in range(args.rounds):
                print(f"round {r + 1}:")
                for sc in scenarios:
                    for (label, n, dev, env), (proc, port) in servers.items():
                        load = functools.partial(
                            run_load, proc, port, sc, args.clients, args.warmup, args.duration
                        )
                        res = with_batches(port, load)
                        table.setdefault((label, n, dev, env, sc), []).append(res)
                        print(
                            f"  {label:<10} workers {n} {dev:<9} {short(env):<14} {sc.label:<20} "
                            f"{res.rate:7.1f} req/s"
                            f"  {res.cpu_ms:6.2f} ms CPU/req {res.crops_per_forward:5.1f} crops/fwd"
                            f"  ({res.errors} errors)",
                            flush=True,
                        )
                        if args.threads:
                            print(thread_line(proc.pid, res), flush=True)
        finally:
            for proc, _ in servers.values():
                stop_server(proc)

    med = lambda xs: float(np.median(xs))  # noqa: E731
    print(f"\nmedian of {args.rounds} rounds")
    print(
        f"{'server':<10} {'workers':>7} {'device':<9} {'env':<14} {'request':<20} {'req/s':>7}"
        f" {'CPU ms/req':>11} {'crops/forward':>14}"
    )
    for (label, n, dev, env, sc), rs in table.items():
        rate, cpu = med([x.rate for x in rs]), med([x.cpu_ms for x in rs])
        batch = med([x.crops_per_forward for x in rs])
        print(
            f"{label:<10} {n:>7} {dev:<9} {short(env):<14} {sc.label:<20} {rate:7.1f} {cpu:11.2f}"
            f" {batch:14.1f}"
        )
    print(f"load average after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
