"""``heatpose weights``: list the zoo, fetch a zoo model, import a published ``.pth``.

    heatpose weights list
    heatpose weights fetch NAME [NAME...] [--home DIR] [--force]
    heatpose weights import FILE --out X.safetensors [--layout mmpose|simplebaselines]
                            [--name N] [--decode dark|shift|argmax]

Errors print one line naming the flag or file and exit with status 2. torch is imported only
after the arguments are parsed, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from heatpose_cli.args import ArgumentParser, parse_or_status
from models.runtime.choices import DECODE_MODES, LAYOUTS


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="heatpose weights",
        description="List the weight zoo, fetch a zoo model, or import a published .pth.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the weight zoo and what is cached")
    fetch_p = sub.add_parser("fetch", help="download, verify and convert zoo models")
    fetch_p.add_argument(
        "names", nargs="+", metavar="NAME", help="zoo names (see `heatpose weights list`)"
    )
    fetch_p.add_argument("--home", help="cache directory (default: $HEATPOSE_HOME)")
    fetch_p.add_argument("--force", action="store_true", help="download again even if cached")
    imp = sub.add_parser("import", help="convert a published .pth into a .safetensors model")
    imp.add_argument("file", help="the .pth file (mmpose 1.x or original SimpleBaselines)")
    imp.add_argument("--out", required=True, help="the .safetensors file to write")
    imp.add_argument("--layout", choices=LAYOUTS, help="default: detected from the keys")
    imp.add_argument("--name", help="model name stored in the file (default: FILE's stem)")
    imp.add_argument(
        "--decode", choices=DECODE_MODES, default="shift", help="default decode (default: shift)"
    )
    return parser


def _list() -> None:
    from models.weights.zoo import heatpose_home, list_entries

    home = heatpose_home()
    entries = list_entries()
    width = max(len(e.filename) for e in entries)
    print(
        f"{'name':<26} {'COCO AP':>7}  {'decode':<6}  {'cached':<6}  {'kind':<8}  "
        f"{'source':<{width}}  {'input':<7}  GFLOPs"
    )
    for e in entries:
        cached = "yes" if (home / f"{e.name}.safetensors").is_file() else "no"
        decode = e.decode_mode or "-"
        size = f"{e.input_size}x{e.input_size}" if e.input_size else "-"
        gflops = f"{e.gflops:g}" if e.gflops is not None else "-"
        print(
            f"{e.name:<26} {e.coco_val_ap:>7.3f}  {decode:<6}  {cached:<6}  {e.kind:<8}  "
            f"{e.filename:<{width}}  {size:<7}  {gflops}"
        )
    print(
        f"COCO AP: keypoint AP of pose models, box AP of detectors (person AP for RTMDet); "
        f"input: a fixed-size detector's input, px. cache: {home}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``heatpose weights`` with ``argv`` (the arguments after ``weights``); exit status."""
    args = parse_or_status(_parser(), None if argv is None else list(argv))
    if isinstance(args, int):
        return args
    if args.command == "list":  # the table and the cache: no torch, answers at once
        _list()
        return 0
    # after parsing: torch (through the checkpoint code) only for real work, not for --help
    from models.weights.checkpoint import CheckpointError, import_published
    from models.weights.zoo import ZooError, fetch

    try:
        if args.command == "fetch":
            for name in args.names:  # e.g. the pose model and the person detector
                print(fetch(name, home=args.home, force=args.force))
        else:
            config = import_published(
                args.file, args.out, layout=args.layout, name=args.name, decode_mode=args.decode
            )
            print(f"wrote {args.out}: {config.name}, ResNet-{config.depth}, {config.color_order}")
    except (CheckpointError, ZooError, OSError) as e:  # OSError: e.g. --out not writable
        print(f"heatpose weights {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0
