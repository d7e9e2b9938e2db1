"""Start-up warm-up of the ``compile`` backend (models/inference/warmup.py): graphs and seconds.

A Predictor with ``backend="compile"`` (and optional batch buckets) is warmed for forward
batches up to ``--max-forward`` (the service: 2 x HEATPOSE_MAX_BATCH_SIZE); the time of each
warm-up size and the number of compiled graphs are printed. Then every forward batch size
1 .. max-forward is run (half flip-tested crops; and plain crops up to half of it) and the
graphs compiled after the warm-up are counted (the goal: none). ``--ladder 1,2`` warms only
those sizes (the warm-up before round 4), to compare.

    .venv/bin/python benchmarks/bench_warmup.py [--depth 18] [--input 96x64] [--max-forward 32]
        [--buckets 8,16,32] [--device cpu] [--ladder 1,2] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.inference.predictor import Predictor  # noqa: E402
from models.inference.warmup import warm_up  # noqa: E402
from models.pose.codec import HeatmapCodec  # noqa: E402
from models.weights.checkpoint import ModelBundle, build_model  # noqa: E402
from models.weights.model_config import ModelConfig  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depth", type=int, default=18)
    p.add_argument("--input", default="96x64", help="HxW")
    p.add_argument("--max-forward", type=int, default=32)
    p.add_argument("--buckets", default="", help="e.g. 8,16,32; empty = none")
    p.add_argument("--device", default="cpu")
    p.add_argument("--ladder", default="", help="warm only these sizes, e.g. 1,2")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    from torch._dynamo.utils import counters

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    h, w = (int(v) for v in args.input.split("x"))
    codec = HeatmapCodec.for_input((w, h))
    config = ModelConfig(name="bench", depth=args.depth, codec_params=codec.to_dict())
    buckets = tuple(int(b) for b in args.buckets.split(",") if b)
    bundle = ModelBundle(build_model(config).eval(), config)
    predictor = Predictor(bundle, args.device, backend="compile", batch_buckets=buckets)
    sizes = tuple(int(s) for s in args.ladder.split(",") if s) or None
    counters.clear()
    t0 = time.perf_counter()
    times = warm_up(predictor, max_forward=args.max_forward, sizes=sizes)
    total = time.perf_counter() - t0
    graphs = counters["stats"]["unique_graphs"]
    where = f"R{args.depth} {args.input}, {args.device}, buckets {buckets or None}"
    print(f"torch {torch.__version__}, {where}")
    print("warm-up:", ", ".join(f"batch {s} {t:.2f} s" for s, t in times))
    print(f"warm-up total {total:.1f} s, {graphs} graphs")
    rng = np.random.default_rng(0)
    late = []
    for s in range(1, args.max_forward + 1):
        n = (s + 1) // 2
        crops = rng.integers(0, 256, (s, h, w, 3), dtype=np.uint8)
        calls = [("flip-tested", crops[:n], np.arange(n) < s - n)]
        if s <= args.max_forward // 2:
            calls.append(("plain", crops, np.zeros(s, bool)))
        for kind, batch, flip in calls:
            before = counters["stats"]["unique_graphs"]
            t = time.perf_counter()
            predictor.heatmaps(batch, flip)
            if counters["stats"]["unique_graphs"] > before:
                late.append(f"batch {s} {kind} ({time.perf_counter() - t:.1f} s)")
    print(f"compiled after warm-up: {', '.join(late) or 'nothing'}")


if __name__ == "__main__":
    main()
