"""Data-pipeline throughput: training samples per second, per loader worker.

One sample = JPEG decode (cv2) of a synthetic 640x480 image, the full training augmentation of
the published recipe (flip, half-body, shift/scale/rotation, affine warp through
models.pose.geometry) and target encoding through models.pose.codec (17 heatmaps). Run:

    python benchmarks/bench_data.py [--samples 600] [--workers 0 1 2] [--input-size 256x192]

``workers 0`` is the bare pipeline in this process; ``N > 0`` goes through a DataLoader
(batch 32, the trainer's collate) with N worker processes, and the per-worker rate is the total
divided by N. The synthetic set is written once under ``--data`` (default
``data/bench_synth``).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from heatpose_cli.args import input_size
from models.pose.codec import HeatmapCodec
from models.pose.keypoints import COCO_KEYPOINTS
from training.data.coco import CocoKeypoints, worker_init
from training.data.transforms import AugmentParams, TopDownTransform
from training.synthetic.dataset import write_split


def dataset(data: Path, size: tuple[int, int], images: int) -> CocoKeypoints:
    if not (data / "annotations" / "person_keypoints_train.json").is_file():
        write_split(data, "train", images, seed=0, width=640, height=480)
    codec = HeatmapCodec(input_size=size, heatmap_size=(size[0] // 4, size[1] // 4))
    return CocoKeypoints(data, "train", TopDownTransform(codec, COCO_KEYPOINTS, AugmentParams()))


def rate(ds: CocoKeypoints, workers: int, samples: int) -> float:
    """Samples per second over ``samples`` samples (after a short warm-up)."""
    if workers == 0:
        cv2.setNumThreads(1)
        for i in range(8):
            ds[i]
        t = time.perf_counter()
        for i in range(samples):
            ds[i % len(ds)]
        return samples / (time.perf_counter() - t)
    loader = DataLoader(
        ds,
        batch_size=32,
        shuffle=True,
        num_workers=workers,
        worker_init_fn=worker_init,
        persistent_workers=True,
        drop_last=True,
    )
    it = iter(loader)
    next(it)  # start-up and first batches excluded
    n, t = 0, time.perf_counter()
    while n < samples:
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        n += len(batch["image"])
    return n / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("data/bench_synth"))
    p.add_argument("--images", type=int, default=300, help="synthetic images to write once")
    p.add_argument("--samples", type=int, default=600, help="samples timed per setting")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--input-size", type=input_size, default="256x192", metavar="HxW")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    ds = dataset(args.data, args.input_size, args.images)
    w, h = args.input_size
    print(
        f"data pipeline: {len(ds)} persons in {args.images} synthetic 640x480 JPEGs, "
        f"input {h}x{w}, heatmaps {h // 4}x{w // 4}, full recipe augmentation"
    )
    print(
        f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}, torch {torch.__version__}, "
        f"opencv {cv2.__version__}"
    )
    print(f"{'workers':>8} | {'samples/s':>10} | {'per worker':>10}")
    for workers in args.workers:
        r = rate(ds, workers, args.samples)
        print(f"{workers:>8} | {r:>10.1f} | {r / max(workers, 1):>10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
