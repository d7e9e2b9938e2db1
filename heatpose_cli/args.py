"""The one argument parser of every command line: a mistake is one line naming the flag.

Bad flags end the program with ``PROG: error: MESSAGE`` on stderr and exit status 2, never a
traceback or a multi-line usage dump; help shows every flag's default. Checks made after
parsing (a file that cannot be read, a flag combination) raise :class:`UsageError`, which the
command's ``main`` prints the same way. Imports nothing but argparse, so ``--help`` is quick.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, NoReturn


class UsageError(Exception):
    """A bad flag value, flag combination or input found after parsing; the message names it
    (the command prints ``PROG: error: MESSAGE`` and exits with status 2)."""


class UsageExit(SystemExit):
    """A refused command line, already printed in one line: exit status 2. A
    :class:`SystemExit` as argparse's own, so ``python -m ...`` ends without a traceback;
    :func:`heatpose_cli.main` and :func:`parse_or_status` turn it into the returned status."""

    def __init__(self) -> None:
        super().__init__(2)


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
    """``argparse.ArgumentParser`` whose errors are one line (``prog: error: message``, then
    :class:`UsageExit`) and whose help shows every flag's default (:class:`DefaultsHelpFormatter`).
    Sub-parsers (``add_subparsers``) are of this class too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def add_subparsers(self, **kwargs: Any) -> Any:
        kwargs.setdefault("parser_class", ArgumentParser)
        return super().add_subparsers(**kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise UsageExit


def parse_or_status(parser: argparse.ArgumentParser, argv: list[str] | None) -> Any:
    """``parser``'s namespace for ``argv`` (``None``: ``sys.argv[1:]``), or the exit status 2
    (an ``int``) once the one-line error is printed: for a ``main`` that returns its status."""
    try:
        return parser.parse_args(argv)
    except UsageExit:
        return 2


def report(prog: str, error: UsageError) -> int:
    """Print ``error`` as ``prog: error: MESSAGE`` on stderr; returns the exit status 2."""
    print(f"{prog}: error: {error}", file=sys.stderr)
    return 2


def number(kind: type, flag: str, lo: float, hi: float | None = None) -> Callable[[str], Any]:
    """An argparse ``type``: ``kind`` (``int`` or ``float``) in ``[lo, hi]`` (``hi=None``: no
    upper bound); the error names ``flag``."""
    what = "an integer" if kind is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be {what}, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            span = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise argparse.ArgumentTypeError(f"{flag} must be {span}, got {text}")
        return value

    return parse


def non_negative_int(flag: str) -> Callable[[str], int]:
    """An argparse ``type`` accepting integers >= 0; the error names ``flag``."""
    return number(int, flag, 0)


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
