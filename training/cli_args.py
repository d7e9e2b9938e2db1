"""Command-line plumbing shared by the ``training`` entry points.

Bad flags and paths end the program with one line naming the flag or file and exit status 2,
never a traceback or a multi-line usage dump.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line: ``prog: error: message``."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def non_negative_int(flag: str):
    """An argparse ``type`` accepting integers >= 0; the error names ``flag``."""

    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be an integer, got {value!r}") from None
        if n < 0:
            raise argparse.ArgumentTypeError(f"{flag} must be >= 0, got {n}")
        return n

    return parse


def input_size(value: str) -> tuple[int, int]:
    """``"256x192"`` (height x width, as on the command line) -> ``(w, h)`` as in code."""
    try:
        h, w = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--input-size must be HEIGHTxWIDTH like 256x192, got {value!r}"
        ) from None
    if h <= 0 or w <= 0 or h % 32 or w % 32:
        raise argparse.ArgumentTypeError(
            f"--input-size sides must be positive multiples of 32, got {value!r}"
        )
    return w, h
