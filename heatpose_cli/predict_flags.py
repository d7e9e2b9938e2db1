"""The flags of ``heatpose predict`` and their checks; imports nothing heavy (``--help`` and
flag mistakes answer at once). A mistake is one line naming the flag, exit status 2
(:mod:`heatpose_cli.args`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from heatpose_cli.args import ArgumentParser, UsageError, number
from models.video.smoothing import OneEuroParams

PROG = "heatpose predict"


# (flag, type, least, most, default, help): the numeric flags, images first, then videos
_ONE_EURO = OneEuroParams()
NUMBERS: dict[str, list[tuple[str, type, float, float | None, float, str]]] = {
    "detection and pose": [
        (
            "--batch-size",
            int,
            1,
            None,
            16,
            "images per detector pass and crops per pose pass (default 16)",
        ),
        ("--bbox-thr", float, 0, 1, 0.3, "detector box score threshold (default 0.3)"),
        (
            "--kpt-thr",
            float,
            0,
            1,
            0.3,
            "keypoints scoring below it are 'visible': false and not drawn (default 0.3)",
        ),
        (
            "--max-persons",
            int,
            1,
            None,
            20,
            "at most this many persons an image or frame (default 20)",
        ),
    ],
    "videos": [
        (
            "--det-interval",
            int,
            1,
            None,
            5,
            "run the detector every N frames; in between, "
            "boxes come from each track's previous keypoints, enlarged 1.25x (default 5)",
        ),
        (
            "--min-cutoff",
            float,
            1e-6,
            None,
            _ONE_EURO.min_cutoff,
            "One Euro cutoff at rest, Hz (default %(default)s)",
        ),
        (
            "--beta",
            float,
            0,
            None,
            _ONE_EURO.beta,
            "One Euro cutoff increase per px/s of speed (default %(default)s)",
        ),
        (
            "--d-cutoff",
            float,
            1e-6,
            None,
            _ONE_EURO.d_cutoff,
            "One Euro cutoff of the speed estimate, Hz (default %(default)s)",
        ),
        ("--savgol-window", int, 1, None, 9, "Savitzky-Golay window, frames (odd; default 9)"),
        (
            "--savgol-order",
            int,
            0,
            None,
            2,
            "Savitzky-Golay polynomial degree (< window; default 2)",
        ),
    ],
}


def parser() -> argparse.ArgumentParser:
    """The flags of ``heatpose predict``."""
    p = ArgumentParser(
        prog=PROG,
        description="Detect persons and their keypoints in images, folders of images and "
        "videos, without a server. Images: one JSON each, /predict's answer for that image: "
        "its `model` and the fields of one `images[]` entry (filename, width, height, persons) "
        "at the top, no `timing` (or one COCO results file); videos: JSON lines, one per frame, "
        "in the stream's schema, with tracking and smoothing.",
    )
    add = p.add_argument
    add("paths", nargs="+", metavar="PATH", help="image files, folders of images, video files")
    add("--out", required=True, type=Path, help="output folder (created)")
    add(
        "--checkpoint",
        help="pose checkpoint: a .safetensors file or a zoo name "
        "(default: the service's default model)",
    )
    add(
        "--detector",
        default="auto",
        help="person detector: a zoo name, a weights file (RTMDet or torchvision), "
        "'none' (each image is one person) or 'auto' (person-rtmdet-m on CUDA, "
        "person-rtmdet-nano on the CPU; default)",
    )
    add("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    add(
        "--flip-test",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average with the mirrored crop (default: on)",
    )
    add(
        "--overlay",
        action="store_true",
        help="also write NAME.overlay.png per image / NAME.overlay.mp4 per video",
    )
    add(
        "--format",
        choices=("json", "coco"),
        default="json",
        help="images: one JSON per "
        "image (default) or one COCO keypoint results file, OUT/coco_results.json",
    )
    add(
        "--coco-gt",
        type=Path,
        help="with --format coco: take image ids from this COCO "
        "annotation file (matched by file name); default: numeric file names, else 1, 2, ...",
    )
    add(
        "--smoothing",
        choices=("one_euro", "savgol", "none"),
        default="one_euro",
        help="videos: keypoint smoothing per track (default one_euro; savgol: non-causal)",
    )
    for title, flags in NUMBERS.items():
        group = p.add_argument_group(title)
        for flag, kind, lo, hi, default, text in flags:
            group.add_argument(flag, type=number(kind, flag, lo, hi), default=default, help=text)
    return p


def check_args(args: argparse.Namespace) -> None:
    """Flag combinations argparse cannot check. Raises :class:`UsageError`."""
    if args.savgol_window % 2 == 0:
        raise UsageError(f"--savgol-window must be odd, got {args.savgol_window}")
    if args.savgol_order >= args.savgol_window:
        raise UsageError(
            f"--savgol-order must be below --savgol-window ({args.savgol_window}), "
            f"got {args.savgol_order}"
        )
    if args.coco_gt is not None and args.format != "coco":
        raise UsageError("--coco-gt needs --format coco")
    if args.coco_gt is not None and not args.coco_gt.is_file():
        raise UsageError(f"--coco-gt {args.coco_gt}: no such file")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} exists and is not a folder")
    if args.device not in ("auto", "cpu", "mps") and not is_cuda(args.device):
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {args.device!r}")


def is_cuda(device: str) -> bool:
    """``cuda`` or ``cuda:N``."""
    return device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())
