"""``heatpose synth``: its flags and its entry point.

OpenCV and numpy are imported only once the flags are parsed, so ``--help`` answers at once;
:func:`training.synthetic.dataset.run` draws and writes the images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from heatpose_cli.args import ArgumentParser, non_negative_int

SKELETON_NAMES = ("person", "animal")
"""The figures ``--skeleton`` offers: the keys of :data:`training.synthetic.dataset.SKELETONS`."""


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="heatpose synth",
        description="Write a synthetic COCO-format keypoint data set "
        "(DIR/{train,val}/*.jpg, DIR/annotations/<person|animal>_keypoints_{train,val}.json).",
    )
    add = parser.add_argument
    add("--out", required=True, type=Path, metavar="DIR", help="output directory")
    add("--train", type=non_negative_int("--train"), default=2000, help="train images")
    add("--val", type=non_negative_int("--val"), default=500, help="val images")
    add("--seed", type=int, default=0, help="random seed (the output is a function of it)")
    add("--width", type=non_negative_int("--width"), default=640, help="image width, px")
    add("--height", type=non_negative_int("--height"), default=480, help="image height, px")
    add(
        "-j",
        "--workers",
        type=non_negative_int("--workers"),
        default=0,
        help="worker processes (0: all in this process)",
    )
    add(
        "--skeleton",
        choices=SKELETON_NAMES,
        default="person",
        help="figures to draw: people (17 COCO keypoints) or four-legged animals (12 keypoints)",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the flags; errors are one line naming the flag, exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.width < 64 or args.height < 64:
        parser.error("--width and --height must be at least 64 pixels")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} exists and is not a directory")
    return args


def main(argv: list[str] | None = None) -> int:
    """``heatpose synth``: parse the flags, then draw and write the data set; exit status."""
    args = parse_args(argv)
    from training.synthetic.dataset import run  # after parsing: OpenCV only once the flags are good

    return run(args)
