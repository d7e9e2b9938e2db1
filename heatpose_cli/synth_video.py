"""``python -m training.synthetic.synthetic_video``: the command line of
:mod:`training.synthetic.synthetic_video`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from heatpose_cli.args import ArgumentParser
from training.synthetic.synthetic_video import SCENES, WRITERS, make_video, truth_to_json
from training.synthetic.synthetic_video import __doc__ as DESCRIPTION


def main(argv: list[str] | None = None) -> int:
    """CLI: write one scene as a video file and its truth JSON; returns the exit status."""
    parser = ArgumentParser(
        prog="python -m training.synthetic.synthetic_video", description=DESCRIPTION.splitlines()[0]
    )
    add = parser.add_argument
    add("--scene", required=True, choices=SCENES, help="what happens in the video")
    add("--out", required=True, type=Path, help="video file: .y4m, .mp4 or .avi")
    add("--width", type=int, default=320, help="frame width, px (even)")
    add("--height", type=int, default=240, help="frame height, px (even)")
    add("--fps", type=float, default=30.0, help="frames per second")
    add("--speed", type=float, default=96.0, help="walking speed, px/s")
    add("--seed", type=int, default=0, help="random seed")
    a = parser.parse_args(argv)
    if a.out.suffix.lower() not in WRITERS:
        parser.error(f"--out {a.out}: the suffix must be one of {', '.join(WRITERS)}")
    if a.width < 64 or a.height < 64 or a.width % 2 or a.height % 2:
        parser.error("--width and --height must be even and at least 64 pixels")
    if a.fps <= 0 or a.speed <= 0:
        parser.error("--fps and --speed must be positive")
    video = make_video(
        a.scene, width=a.width, height=a.height, fps=a.fps, speed=a.speed, seed=a.seed
    )
    try:
        n = WRITERS[a.out.suffix.lower()](a.out, video.frames, a.fps)
        a.out.with_suffix(".json").write_text(json.dumps(truth_to_json(video)))
    except OSError as e:
        print(f"error: cannot write --out {a.out}: {e}", file=sys.stderr)
        return 2
    print(f"{a.scene}: {n} frames {a.width}x{a.height} at {a.fps:g} fps -> {a.out}")
    return 0
