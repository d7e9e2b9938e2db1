"""The argument parser of the ``heatpose`` subcommands in ``models/``: usage errors as one line.

Imports nothing but argparse, so a subcommand's ``--help`` stays instant (no torch).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn


class UsageError(Exception):
    """A bad command line; the message is the one line to print (it names the flag)."""


class Parser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` that raises :class:`UsageError` instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message} (see --help)")


def parse_or_report(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> Any:
    """``parser``'s namespace for ``argv`` (``None`` = ``sys.argv[1:]``), or ``None`` once the
    one-line usage error is printed to stderr (the caller then exits with status 2)."""
    try:
        return parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    except UsageError as e:
        print(e, file=sys.stderr)
        return None
