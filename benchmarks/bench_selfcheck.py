"""Start-up self-check (app/engine/selfcheck.py): its time within the service's start-up.

A checkpoint of ``--depth`` at ``--input`` with random weights (nothing downloaded) is started
``--runs`` times as the service starts (``PoseService.start``: load, warm-up, detector none,
self-check); each start's total and the self-check's own time (``heatpose_selfcheck_seconds``)
are printed, for every ``--env`` variant (``;``-separated ``KEY=VALUE,KEY=VALUE`` settings).

    .venv/bin/python benchmarks/bench_selfcheck.py [--depth 50] [--input 256x192] [--runs 3]
        [--device cpu] [--threads 2] [--env ';crop=device,decode=torch']
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.engine.service import PoseService  # noqa: E402
from app.observability.metrics import Metrics  # noqa: E402
from app.settings import Settings  # noqa: E402
from models.pose.codec import HeatmapCodec  # noqa: E402
from models.weights.checkpoint import build_model, save  # noqa: E402
from models.weights.model_config import ModelConfig  # noqa: E402


async def start_once(settings: Settings) -> tuple[float, float]:
    """One start and stop: (start-up seconds, self-check seconds)."""
    service = PoseService(settings, Metrics())
    t = time.perf_counter()
    await service.start()
    total = time.perf_counter() - t
    assert service.selfcheck is not None
    check = service.selfcheck.seconds
    await service.stop()
    return total, check


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depth", type=int, default=50)
    p.add_argument("--input", default="256x192", help="HxW")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--env", default="", help="';'-separated variants of KEY=VALUE,KEY=VALUE")
    args = p.parse_args()
    h, w = (int(v) for v in args.input.split("x"))
    torch.manual_seed(0)
    codec = HeatmapCodec(input_size=(w, h), heatmap_size=(w // 4, h // 4))
    config = ModelConfig(name=f"r{args.depth}", depth=args.depth, codec_params=codec.to_dict())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        save(path, build_model(config), config)
        for variant in args.env.split(";"):
            extra = dict(kv.split("=", 1) for kv in variant.split(",") if kv)
            settings = Settings(
                _env_file=None,
                checkpoint=str(path),
                detector="none",
                device=args.device,
                torch_threads=args.threads,
                **extra,
            )
            runs = [asyncio.run(start_once(settings)) for _ in range(args.runs)]
            starts, checks = zip(*runs, strict=True)
            median = statistics.median(checks)
            print(
                f"R{args.depth} {args.input} {variant or 'defaults'}: start "
                f"{' '.join(f'{s:.2f}' for s in starts)} s; self-check "
                f"{' '.join(f'{c:.2f}' for c in checks)} s (median {median:.2f})",
                flush=True,
            )


if __name__ == "__main__":
    main()
