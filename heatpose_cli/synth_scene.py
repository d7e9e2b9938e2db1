"""``python -m training.synthetic.synthetic_scene``: the command line of
:mod:`training.synthetic.synthetic_scene`."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2

from heatpose_cli.args import ArgumentParser, non_negative_int
from training.synthetic.synthetic_scene import __doc__ as DESCRIPTION
from training.synthetic.synthetic_scene import people_scene


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 when the file cannot be written)."""
    parser = ArgumentParser(
        prog="python -m training.synthetic.synthetic_scene", description=DESCRIPTION
    )
    add = parser.add_argument
    add("--out", required=True, type=Path, help="output image (.jpg or .png)")
    add("--people", type=non_negative_int("--people"), default=3, help="persons in the row")
    add("--seed", type=int, default=0, help="random seed (the image is a function of it)")
    add("--width", type=non_negative_int("--width"), default=640, help="image width, px")
    add("--height", type=non_negative_int("--height"), default=480, help="image height, px")
    add("--quality", type=non_negative_int("--quality"), default=85, help="JPEG quality")
    args = parser.parse_args(argv)
    img, _ = people_scene(args.seed, width=args.width, height=args.height, people=args.people)
    if not cv2.imwrite(str(args.out), img, [cv2.IMWRITE_JPEG_QUALITY, args.quality]):
        print(f"error: cannot write --out {args.out}", file=sys.stderr)
        return 2
    print(f"{args.out}: {args.width}x{args.height}, {args.people} person(s)")
    return 0
