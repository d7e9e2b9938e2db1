"""What the service resolves before it loads anything: checkpoint and detector files, devices.

Each function turns one ``HEATPOSE_*`` setting into something loadable, or raises
:class:`StartupError` with one line that names the setting and says how to fix it. ``heatpose
serve`` calls them before it starts the server (a wrong setting fails fast, without uvicorn);
:class:`app.service.PoseService` calls them again when it starts.
"""

from __future__ import annotations

from pathlib import Path

import torch

from app.devices import DeviceError, resolve_devices
from models import zoo
from models.zoo import ZooError


class StartupError(RuntimeError):
    """The service cannot start; the message says what is wrong and how to fix it."""


def resolve_checkpoint(name: str) -> Path:
    """``HEATPOSE_CHECKPOINT`` -> a file: an existing path, or a zoo name (fetched once, cached).

    Raises:
        StartupError: neither, or the download failed; the message says how to fix it.
    """
    try:
        return Path(zoo.resolve(name, progress=False))
    except ZooError as e:
        raise StartupError(f"HEATPOSE_CHECKPOINT={name!r}: {e}") from e


DETECTOR_NONE_HINT = "or set HEATPOSE_DETECTOR=none to serve without a person detector"


def detector_name(setting: str, device: str | None) -> str | None:
    """``HEATPOSE_DETECTOR`` -> a zoo name or file, or ``None`` (no detector).

    ``auto``: ``person-rcnn-r50-fpn`` on CUDA, ``person-frcnn-mbv3`` on CPU (``device`` as
    :func:`pick_device` returns it, ``None`` = auto).
    """
    if setting == "none":
        return None
    if setting != "auto":
        return setting
    cuda = device.startswith("cuda") if device else torch.cuda.is_available()
    return "person-rcnn-r50-fpn" if cuda else "person-frcnn-mbv3"


def resolve_detector(name: str) -> Path:
    """A detector zoo name or file -> a file (fetched once, cached).

    Raises:
        StartupError: neither, or the download failed; the message says how to fix it.
    """
    try:
        return Path(zoo.resolve(name, progress=False, kind="detector"))
    except ZooError as e:
        raise StartupError(f"HEATPOSE_DETECTOR={name!r}: {e}; {DETECTOR_NONE_HINT}") from e


def pick_devices(setting: str) -> list[str | None]:
    """``HEATPOSE_DEVICE`` -> one torch device string per worker; ``[None]`` = auto.

    Raises:
        StartupError: a CUDA device this host does not have (:func:`app.devices.resolve_devices`).
    """
    try:
        devices = resolve_devices(setting)
    except DeviceError as e:
        raise StartupError(str(e)) from e
    return [None] if devices is None else list(devices)


def pick_device(setting: str) -> str | None:
    """``HEATPOSE_DEVICE`` -> the first worker's torch device string, or ``None`` (auto)."""
    return pick_devices(setting)[0]
