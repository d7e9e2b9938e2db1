"""``heatpose serve --workers N``: several server processes, one set of metrics."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict

from tests.app.live_server import free_port
from tests.helpers.images import encode, noise

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]


def _workers(pid: int) -> list[int]:
    """The uvicorn worker processes under ``pid`` (not multiprocessing's resource tracker)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(OSError):
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    out.append(int(child))
    return sorted(out)


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def _jpeg() -> bytes:
    return encode(noise(64, 48), "JPEG")


def _predict_requests_in_files(path: Path) -> dict[int, float]:
    """Per worker pid, its own count of 200 answers to POST /predict (its counter file)."""
    out = {}
    for f in path.glob("counter_*.db"):
        pid = int(f.stem.split("_")[1])
        total = 0.0
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(f)):
            if '"heatpose_requests_total"' in key and '"/predict"' in key and '"200"' in key:
                total += value
        out[pid] = total
    return out


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_two_workers_answer_and_metrics_sum_both(app_checkpoint: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEATPOSE_", "PROMETHEUS"))}
    env.update(
        HEATPOSE_CHECKPOINT=str(app_checkpoint),
        HEATPOSE_LOG_LEVEL="warning",
        HEATPOSE_TORCH_THREADS="1",
        HEATPOSE_WARMUP="false",
        HEATPOSE_DETECTOR="none",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "--workers", "2", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        workers: list[int] = []
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            workers = _workers(proc.pid)
            try:
                ready = httpx.get(f"{url}/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                ready = False
            if ready and len(workers) >= 2:
                break
            time.sleep(0.3)
        metrics_dir = Path(_environ(workers[0])["PROMETHEUS_MULTIPROC_DIR"])
        # Wait until both workers are ready (each loads its own model).
        while time.monotonic() < deadline:
            statuses = {httpx.get(f"{url}/ready", timeout=5).status_code for _ in range(8)}
            if statuses == {200}:
                break
            time.sleep(0.3)

        sent, per_worker = 0, {}
        while time.monotonic() < deadline:
            for _ in range(6):  # a new connection each: the kernel spreads them over the workers
                r = httpx.post(
                    f"{url}/predict",
                    files={"files": ("a.jpg", _jpeg(), "image/jpeg")},
                    timeout=60,
                )
                assert r.status_code == 200, r.text
                sent += 1
            per_worker = _predict_requests_in_files(metrics_dir)
            if len([n for pid, n in per_worker.items() if pid in workers and n > 0]) == 2:
                break
        assert sorted(p for p, n in per_worker.items() if n > 0) == workers
        assert sum(per_worker.values()) == sent

        # Whichever worker answers /metrics reports the total of both.
        for _ in range(4):
            text = httpx.get(f"{url}/metrics", timeout=10).text
            m = re.search(
                r'^heatpose_requests_total\{method="POST",route="/predict",status="200"\} (\S+)$',
                text,
                re.M,
            )
            assert m is not None, text[:2000]
            assert float(m.group(1)) == sent
            persons = re.search(r"^heatpose_persons_total (\S+)$", text, re.M)
            assert persons is not None and float(persons.group(1)) == sent
            # live gauges are summed over both workers; nothing is queued between requests
            depth = re.search(r"^heatpose_queue_depth (\S+)$", text, re.M)
            assert depth is not None and float(depth.group(1)) == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert proc.returncode == 0
    assert not metrics_dir.exists()  # the CLI's temporary directory is removed
