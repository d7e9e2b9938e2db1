"""The pose network with and without its BatchNorms folded (``models.pose.network.fold_batchnorm``).

Side by side in interleaved rounds on this machine's CPU: ms per crop of the forward pass of a
random-weight PoseResNet (BatchNorm statistics randomised so the folding is not an identity),
channels_last as the Predictor runs it, one batch size; and the largest difference between the
two outputs relative to the largest output.

    .venv/bin/python benchmarks/bench_batchnorm_fold.py [--depth 50] [--batch 12] [--rounds 4]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.pose.network import PoseResNet, fold_batchnorm  # noqa: E402


def randomise_batchnorm(model: torch.nn.Module) -> None:
    """Statistics and affine terms away from their defaults (a trained network's are)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)


def ms_per_crop(model: torch.nn.Module, x: torch.Tensor, calls: int) -> float:
    """Best of ``calls`` timed forward passes, ms per crop."""
    best = float("inf")
    for _ in range(calls):
        t0 = time.perf_counter()
        model(x)
        best = min(best, time.perf_counter() - t0)
    return best / x.shape[0] * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depth", type=int, default=50)
    p.add_argument("--batch", type=int, default=12, help="crops a forward pass")
    p.add_argument("--size", default="256x192", help="input h x w")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--calls", type=int, default=3, help="timed passes a round (best kept)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.split("x"))
    print(
        f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    plain = PoseResNet(args.depth, 17).eval()
    randomise_batchnorm(plain)
    folded = fold_batchnorm(plain)
    nets = {"plain": plain, "folded": folded}
    for net in nets.values():
        net.to(memory_format=torch.channels_last)
    x = torch.randn(args.batch, 3, h, w).contiguous(memory_format=torch.channels_last)
    times: dict[str, list[float]] = {k: [] for k in nets}
    with torch.inference_mode():
        ref, out = plain(x), folded(x)  # also the warm-up
        folded(x)
        diff = float((out - ref).abs().max() / ref.abs().max())
        for _ in range(args.rounds):
            for name, net in nets.items():
                times[name].append(ms_per_crop(net, x, args.calls))
    print(f"ResNet-{args.depth} {h}x{w}, batch {args.batch}, ms per crop (rounds):")
    for name, ts in times.items():
        rounds = " ".join(f"{t:.1f}" for t in ts)
        print(f"  {name:7s} median {sorted(ts)[len(ts) // 2]:6.1f}   {rounds}")
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    ratio = med["folded"] / med["plain"]
    print(f"  folded / plain: {ratio:.2f}x time; max |diff| {diff:.1e} of max |out|")
    print(f"load average after {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
