"""``heatpose predict``: the detector + pose pipeline over image files, folders and videos.

No server: :class:`models.inference.pipeline.PosePipeline` runs in this process. Images (files, or
folders searched recursively) give one JSON per image in the ``/predict`` schema (or one COCO
results file with ``--format coco``) and, with ``--overlay``, the PNG ``/visualize`` draws
(:mod:`heatpose_cli.predict_images`). Each video gives JSON lines, one per frame, in the
stream's message schema, with tracking and smoothing, and with ``--overlay`` an annotated MP4
(:mod:`heatpose_cli.predict_video`).

Arguments are parsed before anything heavy is imported, so ``--help`` and flag mistakes
answer at once; every mistake (a flag value, a missing or unreadable file) ends in one line
naming the flag or file and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from heatpose_cli.args import UsageError, report
from heatpose_cli.predict_flags import PROG, check_args, is_cuda, parser

if TYPE_CHECKING:
    from models.inference.pipeline import Detector, PosePipeline

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".y4m"})


@dataclass(frozen=True)
class Inputs:
    """What to run on: ``images`` (path, output stem relative to ``--out``) and ``videos``."""

    images: list[tuple[Path, Path]]
    videos: list[Path]


def find_inputs(paths: list[str]) -> Inputs:
    """Image and video files from the command line; folders give their images (recursive,
    sorted), whose outputs keep their sub-folders.

    Raises:
        UsageError: a missing path, a file that is neither an image nor a video, a folder
            without images, or two inputs that would write the same output.
    """
    images: list[tuple[Path, Path]] = []
    videos: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            found = sorted(
                f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                raise UsageError(
                    f"{text}: the folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
                )
            images += [(f, f.relative_to(path).with_suffix("")) for f in found]
        elif not path.exists():
            raise UsageError(f"{text}: no such file or folder")
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            images.append((path, Path(path.stem)))
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            videos.append(path)
        else:
            known = ", ".join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))
            raise UsageError(f"{text}: not an image or video file name (known: {known})")
    seen: dict[Path, Path] = {}
    for source, stem in [*images, *((v, Path(v.stem)) for v in videos)]:
        if stem in seen and seen[stem] != source:
            raise UsageError(
                f"{seen[stem]} and {source} would write the same output {stem}.*; "
                "rename one or run them separately"
            )
        seen[stem] = source
    return Inputs(images, videos)


def pick_device(device: str) -> str:
    """``--device`` -> a torch device string (``auto``: cuda when available).

    Raises:
        UsageError: CUDA asked for but not there (or not that many devices).
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if is_cuda(device):
        index = int(device[5:]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            have = torch.cuda.device_count()
            raise UsageError(f"--device {device}: only {have} CUDA device(s) are available")
    return device


def load_detector(name: str, device: str) -> Detector | None:
    """``--detector`` -> a person detector, or ``None`` for ``none`` (``auto`` as the service:
    :func:`app.engine.startup.detector_name`; when its weights cannot be had, ``None`` and one line
    on stderr saying so, :mod:`models.detection.detector_choice`).

    Raises:
        UsageError: a detector named explicitly with an unknown name, weights that cannot be
            fetched, or a file that is not a detector's state dict.
    """
    from app.engine.startup import detector_name
    from models.detection.detector import load_detector as load
    from models.detection.detector_choice import load_or_reason
    from models.weights.checkpoint import CheckpointError
    from models.weights.zoo import ZooError

    chosen = detector_name(name, device)
    if chosen is None:
        return None
    try:
        detector, off = load_or_reason(name, chosen, lambda: load(chosen, device))
    except (ZooError, CheckpointError, OSError) as e:
        raise UsageError(
            f"--detector {chosen}: {e}; or --detector none (each image is one person)"
        ) from e
    if off is not None:
        print(f"{PROG}: {off}; --detector FILE gives one, --detector none", file=sys.stderr)
    return detector


def build_pipeline(args: argparse.Namespace, detector: Detector | None = None) -> PosePipeline:
    """The pose model of ``--checkpoint`` on ``--device``, with ``detector`` (a test double)
    or the one ``--detector`` names.

    Raises:
        UsageError: a checkpoint or detector that cannot be had, a missing CUDA device.
    """
    from models.inference.pipeline import PosePipeline
    from models.inference.predictor import Predictor
    from models.weights.checkpoint import CheckpointError, load
    from models.weights.zoo import DEFAULT_MODEL, ZooError, resolve

    device = pick_device(args.device)
    name = args.checkpoint or DEFAULT_MODEL
    try:
        bundle = load(resolve(name, kind="pose"), device)
    except (ZooError, CheckpointError, OSError) as e:
        flag = f"--checkpoint {args.checkpoint}" if args.checkpoint else f"--checkpoint ({name})"
        raise UsageError(f"{flag}: {e}") from e
    predictor = Predictor(
        bundle, device, flip_test=True if args.flip_test is None else args.flip_test
    )
    if detector is None:
        detector = load_detector(args.detector, device)
    return PosePipeline(
        predictor, detector, max_batch_size=args.batch_size, detector_batch_size=args.batch_size
    )


def main(argv: list[str] | None = None, *, detector: Detector | None = None) -> int:
    """Run ``heatpose predict``; returns the exit status (2: a bad flag, file or input).

    ``detector``: a stand-in for ``--detector`` (tests: anything with ``detect``).
    """
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        check_args(args)
        inputs = find_inputs(args.paths)
        if inputs.videos:
            from heatpose_cli.predict_video import probe  # OpenCV: after the flags

            for video in inputs.videos:
                probe(video)
        pipeline = build_pipeline(args, detector)
        args.out.mkdir(parents=True, exist_ok=True)
        failed = 0
        if inputs.images:
            from heatpose_cli.predict_images import run_images  # torch: after the flags

            failed += run_images(pipeline, inputs.images, args)
        for video in inputs.videos:
            from heatpose_cli.predict_video import run_video

            run_video(pipeline, video, args)
    except UsageError as e:
        return report(PROG, e)
    return 2 if failed else 0
