"""Command-line plumbing shared by the ``training`` entry points.

Bad flags and paths end the program with one line naming the flag or file and exit status 2,
never a traceback or a multi-line usage dump. Help shows every flag's default. This module and
the parsers built on it import neither torch nor OpenCV, so ``--help`` is quick.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to each flag's help unless the help already names its default.

    Required flags and on/off switches (off by default) get nothing; ``None`` reads ``none`` and
    a list its items separated by spaces, as they are typed on the command line.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            "default" in text
            or action.required
            or action.nargs == 0
            or action.default is argparse.SUPPRESS
            or not action.option_strings
        ):
            return text
        value = action.default
        if isinstance(value, (list, tuple)):
            shown = " ".join(str(v) for v in value)
        else:
            shown = "none" if value is None else str(value)
        return f"{text} (default: {shown.replace('%', '%%')})"


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line (``prog: error: message``) and
    whose help shows every flag's default (:class:`DefaultsHelpFormatter`)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

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
