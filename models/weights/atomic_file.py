"""Publishing a file written under a temporary name: the mode a plain ``open(path, "w")`` gives.

Writers that must never leave a half-written file write to a temporary name first, then rename.
Temporary files (``tempfile.mkstemp``, safetensors' writer) are created with mode 0600, which
the rename would keep: a checkpoint or ONNX file copied into a read-only container mount could
then not be read by the service's user. :func:`publish` gives the file the mode the process's
umask gives new files (0644 with the usual 022) before the rename.
"""

from __future__ import annotations

import os
from pathlib import Path

_STATUS = Path("/proc/self/status")


def process_umask() -> int:
    """The process's umask, read without changing it where Linux tells it (``Umask:`` in
    ``/proc/self/status``); elsewhere set and restored at once."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish(tmp: str | Path, path: str | Path) -> None:
    """Give ``tmp`` the mode new files get here (``0o666 & ~umask``), then rename it to ``path``
    (atomically, replacing ``path``)."""
    os.chmod(tmp, 0o666 & ~process_umask())
    os.replace(tmp, path)
