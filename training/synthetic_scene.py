"""One synthetic photo with a chosen number of people side by side (demos, docs, page tests).

``python -m training.synthetic_scene --out docs/sample.jpg --people 1 --width 320 --height 400
--seed 1``
writes the repository's sample image. Unlike :mod:`training.synthetic` (random scenes for a data
set), the people here stand in a row, each in its own column, head to feet inside the image
(a hand may reach past the side edges), so a caller knows how many persons it shows and where.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from training.cli_args import ArgumentParser, non_negative_int
from training.synthetic import background
from training.synthetic_people import draw_person, sample_person


def people_scene(
    seed: int, *, width: int = 640, height: int = 480, people: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """``(image (height, width, 3) BGR uint8, keypoints (people, 17, 2) image px (x, y))``.

    Person ``i`` stands in column ``i`` of ``people`` equal columns (its pelvis at the column's
    centre), about 0.8 x ``height`` tall, its pelvis at mid-height. The image depends only on
    the arguments.
    """
    rng = np.random.default_rng(seed)
    img = background(rng, width, height)
    keypoints = []
    for i in range(people):
        ph = 0.8 * height * rng.uniform(0.92, 1.0)
        pelvis = np.array([(i + 0.5) * width / people, 0.52 * height])
        person = sample_person(rng, pelvis, ph)
        draw_person(img, np.zeros((height, width), np.uint8), person, rng)
        keypoints.append(person.keypoints)
    return img, np.asarray(keypoints, dtype=np.float64).reshape(people, -1, 2)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 when the file cannot be written)."""
    parser = ArgumentParser(prog="python -m training.synthetic_scene", description=__doc__)
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


if __name__ == "__main__":
    raise SystemExit(main())
