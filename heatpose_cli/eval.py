"""``heatpose eval``: its flags and its entry point.

Neither torch nor OpenCV is imported here until the flags are parsed, so ``--help`` and flag
errors answer at once; :func:`training.evaluate.run` does the work.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from heatpose_cli.args import ArgumentParser, non_negative_int
from models.runtime.choices import DECODE_MODES


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="heatpose eval",
        description="COCO keypoint AP of a heatpose .safetensors model on a split of a "
        "COCO-format data set (DATA/annotations/person_keypoints_<split>.json, DATA/<split>/).",
    )
    add = parser.add_argument
    add("--checkpoint", required=True, type=Path, metavar="FILE", help="model (.safetensors)")
    add("--data-path", required=True, type=Path, metavar="DATA", help="data set root")
    add(
        "--split",
        default=None,
        help="split to evaluate (default: the data set's only split; needed when it has several)",
    )
    add(
        "--boxes",
        default="gt",
        metavar="gt|detector|FILE",
        help="person boxes: gt (the ground-truth boxes), detector (run --detector over the "
        "split, COCO protocol), or a COCO detection results JSON",
    )
    add(
        "--detector",
        default="auto",
        metavar="NAME_OR_FILE",
        help="with --boxes detector: a zoo name (person-rtmdet-m, person-rcnn-r50-fpn, ...), "
        "a weights file, or auto (default: person-rtmdet-m on CUDA, person-rtmdet-nano on the "
        "CPU, or the ground-truth boxes when its weights cannot be had)",
    )
    add(
        "--det-score-thr",
        type=float,
        default=0.0,
        help="with --boxes detector: keep boxes scoring at least this (COCO's protocol: 0)",
    )
    add(
        "--det-batch-size",
        type=non_negative_int("--det-batch-size"),
        default=4,
        help="with --boxes detector: images a detector pass",
    )
    add("--no-flip", action="store_true", help="disable the flip test")
    add(
        "--decode-mode",
        choices=DECODE_MODES,
        default=None,
        help="heatmap decoding (default: the checkpoint's)",
    )
    add("--nms-thr", type=float, default=0.9, help="OKS-NMS threshold")
    add(
        "-b",
        "--batch-size",
        type=non_negative_int("--batch-size"),
        default=64,
        help="crops per forward pass",
    )
    add("-j", "--workers", type=non_negative_int("--workers"), default=2, help="image loaders")
    add("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda where available)")
    add(
        "--output",
        type=Path,
        default=None,
        metavar="FILE",
        help="results JSON (default: <checkpoint stem>_<split>_keypoints.json next to it)",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the flags; errors are one line naming the flag, exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.checkpoint.is_file():
        parser.error(f"--checkpoint file not found: {args.checkpoint}")
    if args.boxes not in ("gt", "detector") and not Path(args.boxes).is_file():
        parser.error(f"--boxes file not found: {args.boxes} (or give gt or detector)")
    if not args.data_path.is_dir():
        parser.error(f"--data-path is not a directory: {args.data_path}")
    return args


def main(argv: list[str] | None = None) -> int:
    """``heatpose eval``: parse the flags, then import the evaluation and run it; exit status."""
    args = parse_args(argv)
    from training.evaluate import run  # after parsing: torch only once the flags are good

    return run(args)
