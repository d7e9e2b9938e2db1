"""``python -m training.loop.learning_curve``: the command line of
:mod:`training.loop.learning_curve`."""

from __future__ import annotations

import json
from pathlib import Path

from heatpose_cli.args import ArgumentParser
from training.loop.learning_curve import __doc__ as DESCRIPTION
from training.loop.learning_curve import plot, read_metrics


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 for a missing or unreadable file)."""
    parser = ArgumentParser(prog="python -m training.loop.learning_curve", description=DESCRIPTION)
    parser.add_argument("metrics", type=Path, help="a run's metrics.jsonl")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--title", default="", help="figure title")
    args = parser.parse_args(argv)
    if not args.metrics.is_file():
        parser.error(f"metrics file not found: {args.metrics}")
    try:
        groups = read_metrics(args.metrics)
    except (json.JSONDecodeError, OSError) as e:
        parser.error(f"cannot read {args.metrics}: {e}")
    plot(groups, args.out, args.title)
    print(f"wrote {args.out}")
    return 0
