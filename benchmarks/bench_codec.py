"""Heatmap codec benchmark: decode accuracy per mode and resolution, and DARK decode speed.

Run: ``.venv/bin/python benchmarks/bench_codec.py``

1. Mean / max decode error, heatmap px, on clean encoded Gaussians (sigma 2) with random
   sub-pixel centres at least 3 px inside the map, for ``argmax``, ``shift`` and ``dark`` at
   heatmaps 64x48, 32x24 and 16x12 (H x W).
2. Time to decode 64 persons x 17 keypoints (64x48 maps, DARK) in one vectorised
   :meth:`HeatmapCodec.decode` call against a per-keypoint loop in numpy + OpenCV (mmpose's
   recipe, written below as the baseline), torch and OpenCV limited to ``--threads`` (default 1);
   median of several repeats.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial

import cv2
import numpy as np
import torch

from models.pose.codec import DECODE_MODES, HeatmapCodec


def loop_dark(heatmaps: np.ndarray, kernel: int = 11) -> np.ndarray:
    """Baseline DARK: (B, K, H, W) -> (B, K, 2) heatmap px, one keypoint at a time."""
    b_count, k_count, h, w = heatmaps.shape
    out = np.zeros((b_count, k_count, 2), np.float32)
    pad = kernel // 2
    for b in range(b_count):
        for k in range(k_count):
            hm = heatmaps[b, k]
            y, x = np.unravel_index(np.argmax(hm), (h, w))
            out[b, k] = (x, y)
            padded = np.zeros((h + 2 * pad, w + 2 * pad), np.float32)
            padded[pad:-pad, pad:-pad] = hm
            blurred = cv2.GaussianBlur(padded, (kernel, kernel), 0)[pad:-pad, pad:-pad]
            blurred *= hm.max() / blurred.max()
            L = np.log(np.maximum(blurred, 1e-10))
            if not (2 <= x <= w - 3 and 2 <= y <= h - 3):
                continue
            g = np.array([L[y, x + 1] - L[y, x - 1], L[y + 1, x] - L[y - 1, x]]) * 0.5
            dxx = 0.25 * (L[y, x + 2] - 2 * L[y, x] + L[y, x - 2])
            dyy = 0.25 * (L[y + 2, x] - 2 * L[y, x] + L[y - 2, x])
            dxy = 0.25 * (L[y + 1, x + 1] - L[y - 1, x + 1] - L[y + 1, x - 1] + L[y - 1, x - 1])
            hess = np.array([[dxx, dxy], [dxy, dyy]])
            if dxx * dyy - dxy * dxy != 0:
                out[b, k] -= np.linalg.inv(hess) @ g
    return out


def error_table(n: int, seed: int) -> None:
    """Print mean / max decode error (heatmap px) per resolution and mode."""
    rng = np.random.default_rng(seed)
    print(f"Decode error, heatmap px, {n} clean Gaussians (sigma 2), centres >= 3 px inside")
    print(
        f"{'heatmap HxW':<12}" + "".join(f"{m + ' mean':>12}{m + ' max':>12}" for m in DECODE_MODES)
    )
    for h, w in ((64, 48), (32, 24), (16, 12)):
        codec = HeatmapCodec(input_size=(4 * w, 4 * h), heatmap_size=(w, h))
        centres = np.stack([rng.uniform(3, w - 4, n), rng.uniform(3, h - 4, n)], 1)
        hm, _ = codec.encode(centres * 4.0, np.ones(n))
        row = f"{f'{h}x{w}':<12}"
        for mode in DECODE_MODES:
            kp, _ = codec.decode(torch.from_numpy(hm)[None], mode=mode)
            err = np.linalg.norm(kp[0].numpy() / 4.0 - centres, axis=1)
            row += f"{err.mean():>12.4f}{err.max():>12.4f}"
        print(row)


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn()`` in seconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def speed(persons: int, repeats: int, seed: int) -> None:
    """Print the DARK decode times of the vectorised codec and the per-keypoint loop."""
    rng = np.random.default_rng(seed)
    codec = HeatmapCodec()
    centres = np.stack([rng.uniform(0, 47, persons * 17), rng.uniform(0, 63, persons * 17)], 1)
    hm, _ = codec.encode(centres * 4.0, np.ones(len(centres)))
    hm = (hm + rng.normal(0, 0.02, hm.shape)).astype(np.float32).reshape(persons, 17, 64, 48)
    batch = torch.from_numpy(hm)

    t_modes = {m: median_time(partial(codec.decode, batch, mode=m), repeats) for m in DECODE_MODES}
    t_vec = t_modes["dark"]
    t_loop = median_time(lambda: loop_dark(hm), repeats)
    kp, _ = codec.decode(batch, mode="dark")
    diff = np.abs(kp.numpy() / 4.0 - loop_dark(hm)).max()
    print(f"\nDARK decode of {persons} persons x 17 keypoints (64x48), median of {repeats}")
    print(f"  HeatmapCodec.decode (torch, vectorised, CPU): {t_vec * 1e3:8.2f} ms")
    print(f"  per-keypoint numpy + cv2 loop (baseline):     {t_loop * 1e3:8.2f} ms")
    print(f"  speed-up: {t_loop / t_vec:.1f}x   max |difference|: {diff:.2e} heatmap px")
    print(
        "  (context) HeatmapCodec.decode "
        + ", ".join(f"{m} {t * 1e3:.2f} ms" for m, t in t_modes.items())
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=2000, help="Gaussians per resolution")
    parser.add_argument("--persons", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenCV threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    print(
        f"torch {torch.__version__}, numpy {np.__version__}, opencv {cv2.__version__}, "
        f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}\n"
    )
    error_table(args.samples, args.seed)
    speed(args.persons, args.repeats, args.seed)


if __name__ == "__main__":
    main()
