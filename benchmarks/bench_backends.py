"""Raw forward throughput of each backend (issue 13, section 2), side by side in one run.

ResNet-50 at 256x192 (w 192, h 256) with random weights, batch 8, on this machine's CPU
(``--device cuda``: on the GPU, where ``tensorrt`` is a backend too):
``torch`` (channels_last, as the Predictor runs it), ``onnxruntime`` (CPU execution provider)
and ``compile`` (``torch.compile``), each called through :func:`models.runtime.backends.create` with
the Predictor's own input (normalised float32, channels_last), so the backends' own
conversions are counted. The machine is shared, so the backends are measured in interleaved
rounds and the median images/s is reported; one-off costs (ONNX export, compilation) are
printed separately.

    .venv/bin/python benchmarks/bench_backends.py [--batch 8] [--rounds 3] [--seconds 6]
        [--threads 1] [--backends torch,onnxruntime,compile]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.pose.network import fold_batchnorm  # noqa: E402
from models.runtime.backends import create  # noqa: E402
from models.weights.checkpoint import build_model  # noqa: E402
from models.weights.model_config import ModelConfig  # noqa: E402


def images_per_s(forward, x: torch.Tensor, seconds: float) -> float:
    """Forward passes of ``x`` for at least ``seconds`` (at least 2); images per second (on
    CUDA the time runs until the last pass has finished, not until it was queued)."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync()
    n, t0 = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - t0 < seconds:
        forward(x)
        n += 1
    sync()
    return n * x.shape[0] / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    p.add_argument("--seconds", type=float, default=6.0, help="per backend per round")
    p.add_argument("--threads", type=int, default=1, help="torch and ORT intra-op threads")
    p.add_argument("--backends", default="torch,onnxruntime,compile")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (then also tensorrt)")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = ModelConfig()  # ResNet-50, 17 COCO keypoints, 256x192
    # BatchNorm folded and channels_last: the network as the Predictor hands it to a backend
    model = fold_batchnorm(build_model(config)).to(device, memory_format=torch.channels_last)
    w, h = config.input_size
    x = torch.randn(args.batch, 3, h, w, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    print(
        f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, "
        + (f"{torch.cuda.get_device_name(device)}, " if device.type == "cuda" else "")
        + f"threads {args.threads}, load average before "
        + " ".join(f"{v:.1f}" for v in os.getloadavg())
        + f"\nResNet-50 {h}x{w}, random weights, batch {args.batch}; "
        f"{args.rounds} interleaved rounds of {args.seconds:.0f} s per backend"
    )
    names = args.backends.split(",")
    runners = {}
    with tempfile.TemporaryDirectory() as cache, torch.inference_mode():
        with torch.no_grad():
            ref = model(x)
        for name in names:
            t0 = time.perf_counter()
            try:
                backend = create(name, model, config, device=device, cache_dir=cache)
                built = time.perf_counter() - t0
                t0 = time.perf_counter()
                out = backend(x)  # compile: compiles here (the service's warm-up does the same)
                first = time.perf_counter() - t0
            except Exception as e:  # e.g. tensorrt without its libraries: the others still run
                print(f"  {name:<12} unavailable: {type(e).__name__}: {e}")
                continue
            diff = (out - ref).abs().max().item()
            print(
                f"  {name:<12} build {built:6.1f} s, first call {first:6.1f} s, "
                f"max |diff| vs torch {diff:.1e}"
            )
            runners[name] = backend
        names = [n for n in names if n in runners]
        rates: dict[str, list[float]] = {n: [] for n in names}
        for r in range(args.rounds):
            line = []
            for name in names:
                rates[name].append(images_per_s(runners[name], x, args.seconds))
                line.append(f"{name} {rates[name][-1]:6.2f}")
            print(f"round {r + 1}: " + "   ".join(line) + "  images/s")
    base = float(np.median(rates["torch"])) if "torch" in rates else float("nan")
    print(f"\nmedian of {args.rounds} rounds   images/s   vs torch")
    for name in names:
        med = float(np.median(rates[name]))
        print(f"  {name:<24} {med:8.2f}   {med / base:6.2f}x")
    print("load average after " + " ".join(f"{v:.1f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
