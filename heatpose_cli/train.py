"""``heatpose train``: its flags (torchvision references style) and its entry point.

Defaults are the published SimpleBaselines / mmpose COCO recipe (docs/training.md): ResNet-50
at 256x192, Adam lr 5e-4, 500-iteration linear warm-up from 0.001, x0.1 at epochs 170 and 200
of 210, batch 64 a process (x 8 GPUs = 512), ImageNet-pretrained backbone, evaluation every 10
epochs.

Neither torch nor the trainer is imported here until the flags are parsed: ``--help`` and flag
errors answer at once; :func:`training.train.run` does the work. ``python -m training.train``
(and torchrun) reach the same :func:`main`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from heatpose_cli.args import ArgumentParser, input_size, non_negative_int
from models.runtime.choices import DECODE_MODES, DEPTHS


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="heatpose train",
        description="Train a SimpleBaselines PoseResNet on a COCO-format keypoint data set. "
        "Several processes (DDP, NCCL on CUDA, gloo on CPU): "
        "torchrun --nproc_per_node=N -m training.train FLAGS.",
    )
    add = parser.add_argument
    add(
        "--data-path",
        type=Path,
        required=True,
        metavar="DATA",
        help="data set root: DATA/annotations/person_keypoints_<split>.json (or "
        "<name>_keypoints_<split>.json), DATA/<split>/",
    )
    add("--train-split", default="train2017", help="training split")
    add("--val-split", default="val2017", help="evaluation split")
    add("--depth", type=int, default=50, choices=DEPTHS, help="ResNet depth")
    add(
        "--input-size",
        type=input_size,
        default="256x192",
        metavar="HxW",
        help="network input height x width, e.g. 256x192 (heatmaps are 1/4 of it)",
    )
    add("--sigma", type=float, default=2.0, help="target Gaussian sigma, heatmap px")
    add(
        "-b",
        "--batch-size",
        type=non_negative_int("--batch-size"),
        default=64,
        help="images per process (the total batch is this x the number of processes)",
    )
    add(
        "-j",
        "--workers",
        type=non_negative_int("--workers"),
        default=4,
        help="data loading workers per process",
    )
    add(
        "--repeat-dataset",
        type=non_negative_int("--repeat-dataset"),
        default=1,
        help="go over the training set N times an epoch (small sets)",
    )
    add("--epochs", type=non_negative_int("--epochs"), default=210, help="epochs in all")
    add("--lr", type=float, default=5e-4, help="Adam learning rate")
    add("--weight-decay", type=float, default=0.0, help="Adam weight decay")
    add(
        "--lr-steps",
        type=int,
        nargs="*",
        default=[170, 200],
        help="epochs after which the LR is multiplied by --lr-gamma",
    )
    add("--lr-gamma", type=float, default=0.1, help="LR decay factor at each of --lr-steps")
    add(
        "--warmup-iters",
        type=non_negative_int("--warmup-iters"),
        default=500,
        help="linear warm-up iterations",
    )
    add("--warmup-factor", type=float, default=0.001, help="LR factor at the first iteration")
    add("--amp", action="store_true", help="mixed precision on CUDA (bf16, else fp16+GradScaler)")
    add("--sync-bn", action="store_true", help="synchronise BatchNorm statistics across processes")
    add(
        "--pretrained-backbone",
        default="imagenet",
        help="'imagenet' (torchvision weights), a local ResNet state-dict file, or 'none'",
    )
    add(
        "--weights",
        type=Path,
        default=None,
        metavar="FILE",
        help="start from a heatpose .safetensors model (fine-tuning)",
    )
    add(
        "--resume",
        type=Path,
        default=None,
        metavar="PATH",
        help="resume file (OUTPUT/resume.pt) or its directory: continue where it stopped",
    )
    add(
        "--keep-resume",
        action="store_true",
        help="also keep OUTPUT/resume_epoch<E>.pt for every epoch (resume.pt is the latest)",
    )
    add_keypoint_flags(parser)
    add(
        "--output-dir",
        type=Path,
        default=Path("outputs/train"),
        metavar="OUTPUT",
        help="where files are written",
    )
    add(
        "--eval-every",
        type=non_negative_int("--eval-every"),
        default=10,
        help="evaluate every N epochs and after the last (0: never)",
    )
    add("--test-only", action="store_true", help="only evaluate (--resume or --weights)")
    add("--no-flip-test", action="store_true", help="evaluate without the flip test")
    add("--photometric", action="store_true", help="add brightness/contrast/saturation jitter")
    add("--flip-prob", type=float, default=0.5, help="augmentation: horizontal flip probability")
    add("--half-body-prob", type=float, default=0.3, help="augmentation: half-body probability")
    add(
        "--rotate-factor",
        type=float,
        default=80.0,
        help="augmentation: rotation, degrees (times a normal truncated to +-1), p 0.6",
    )
    add(
        "--scale-range",
        type=float,
        nargs=2,
        default=[0.5, 1.5],
        metavar=("LO", "HI"),
        help="augmentation: box scale factor range (truncated normal over it)",
    )
    add(
        "--shift-factor",
        type=float,
        default=0.16,
        help="augmentation: box shift, fraction of its size (truncated normal), p 0.3",
    )
    add(
        "--decode-mode",
        choices=DECODE_MODES,
        default="dark",
        help="heatmap decoding stored in the exported model",
    )
    add("--name", default=None, help="model name stored in the export (default: res<D>-<HxW>)")
    add("--seed", type=int, default=0, help="seed of init, shuffling and augmentation")
    add("--device", default=None, help="cpu or cuda (default: cuda where available)")
    add("--print-freq", type=int, default=20, help="log every N steps")
    add("--no-progress", action="store_true", help="no progress bar")
    add(
        "--trace-steps",
        type=Path,
        default=None,
        metavar="DIR",
        help="debug: every rank writes DIR/rank<R>.jsonl with each step's loss, LR and a "
        "digest of its weights (to check that DDP ranks stay identical)",
    )
    return parser


DEFAULT_OKS_SIGMA = 0.07
"""OKS sigma of a keypoint COCO does not name: about the mean of COCO's 17 person sigmas (0.067)."""


def add_keypoint_flags(parser: ArgumentParser) -> None:
    """Flags for data sets of other keypoints than COCO's person (training.data.keypoint_spec)."""
    group = parser.add_argument_group("your own keypoints")
    add = group.add_argument
    add(
        "--category",
        default=None,
        metavar="NAME_OR_ID",
        help="the annotation file's keypoint category to train on; without it 'person' when "
        "present, else the only one",
    )
    add(
        "--flip-pairs",
        type=Path,
        default=None,
        metavar="FILE",
        help="JSON list of [left, right] name pairs; without it they are inferred from the names",
    )
    add(
        "--oks-sigmas",
        type=Path,
        default=None,
        metavar="FILE",
        help="JSON object keypoint name -> OKS sigma; without it COCO's for COCO's names",
    )
    add(
        "--default-sigma",
        type=float,
        default=DEFAULT_OKS_SIGMA,
        help="OKS sigma of keypoints neither COCO nor --oks-sigmas names",
    )
    add(
        "--upper-body",
        type=Path,
        default=None,
        metavar="FILE",
        help="JSON list of the upper-body names for half-body augmentation; without it they are "
        "inferred from the names",
    )
    add(
        "--init-from",
        default=None,
        metavar="CHECKPOINT_OR_ZOO_NAME",
        help="start from this model's backbone and deconv layers; final-layer channels of "
        "shared keypoint names copied, the others fresh (fine-tuning onto other keypoints)",
    )


def check_keypoint_flags(parser: ArgumentParser, args: argparse.Namespace) -> None:
    """One-line errors for the keypoint flags' files and values."""
    for flag in ("flip_pairs", "oks_sigmas", "upper_body"):
        path = getattr(args, flag)
        if path is not None and not path.is_file():
            parser.error(f"--{flag.replace('_', '-')} file not found: {path}")
    if not args.default_sigma > 0:
        parser.error(f"--default-sigma must be > 0, got {args.default_sigma}")
    if args.init_from is not None and args.weights is not None:
        parser.error("--init-from and --weights exclude each other (--weights: same keypoints)")
    if args.init_from is not None:
        args.pretrained_backbone = None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the flags; errors are one line naming the flag, exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.data_path.is_dir():
        parser.error(f"--data-path is not a directory: {args.data_path}")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.lr <= 0:
        parser.error(f"--lr must be > 0, got {args.lr}")
    if args.resume is not None and not args.resume.exists():
        parser.error(f"--resume file not found: {args.resume}")
    if args.weights is not None and not args.weights.is_file():
        parser.error(f"--weights file not found: {args.weights}")
    if args.test_only and args.resume is None and args.weights is None:
        parser.error("--test-only needs --resume or --weights")
    if args.pretrained_backbone.lower() == "none" or args.weights is not None:
        args.pretrained_backbone = None
    check_keypoint_flags(parser, args)
    return args


def main(argv: list[str] | None = None) -> int:
    """``heatpose train``: parse the flags, then import the trainer and run it; exit status."""
    args = parse_args(argv)
    from training.train import run  # after parsing: torch only once the flags are good

    return run(args)
