"""``HEATPOSE_DEVICE``: which devices serve, one model replica and batch worker on each.

Grammar (checked by :func:`parse_devices` when the settings load, so a bad value is one line
naming the variable): ``auto`` (CUDA device 0 if there is one, else the CPU), ``all`` (every
visible CUDA device; the CPU on a CPU-only host), or a comma list of ``cpu``, ``cuda``,
``cuda:N`` and ``mps``, e.g. ``cuda:0,cuda:1``. A device may repeat (``cpu,cpu``: two CPU
workers, for tests and benchmarks; ``cuda:0,cuda:0``: two replicas on one GPU).

Whether the devices exist is checked at start-up (:func:`resolve_devices`), where CUDA is known.
Each worker has a metrics label (:func:`worker_labels`): the device, with ``/k`` appended when a
device repeats (``cpu/0``, ``cpu/1``).

``HEATPOSE_BATCH_BUCKETS`` (:func:`parse_buckets`, :func:`buckets_for`): forward passes padded
to a few fixed batch sizes, so CUDA graphs and TensorRT profiles are reused.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_ONE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")
DEVICE_HELP = "must be auto, all, or a comma list of cpu, cuda, cuda:N, mps (e.g. cuda:0,cuda:1)"
BUCKETS_HELP = "must be auto, none, or a comma list of increasing batch sizes (e.g. 8,16,32)"


class DeviceError(RuntimeError):
    """``HEATPOSE_DEVICE`` names a device this host does not have; the message says which."""


def parse_devices(text: str) -> str:
    """``HEATPOSE_DEVICE`` normalised (lower case, no spaces): ``auto``, ``all`` or a list.

    Raises:
        ValueError: anything else (:data:`DEVICE_HELP`).
    """
    v = text.strip().lower().replace(" ", "")
    if v in ("auto", "all"):
        return v
    parts = v.split(",")
    if not all(_ONE.match(p) for p in parts):
        raise ValueError(DEVICE_HELP)
    return ",".join(parts)


def resolve_devices(setting: str) -> list[str] | None:
    """A normalised ``HEATPOSE_DEVICE`` -> torch device strings, or ``None`` (``auto``).

    ``all`` is every visible CUDA device (``cuda:0``, ``cuda:1``, ...), or ``["cpu"]`` without
    CUDA.

    Raises:
        DeviceError: a CUDA or MPS device that does not exist; the message names the setting.
    """
    import torch  # here: app.settings (and `heatpose serve --help`) stay torch-free

    if setting == "auto":
        return None
    if setting == "all":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [f"cuda:{i}" for i in range(n)] or ["cpu"]
    devices = setting.split(",")
    for d in devices:
        if d == "mps" and not torch.backends.mps.is_available():
            raise DeviceError(
                f"HEATPOSE_DEVICE={setting} but this host has no MPS device (Apple silicon "
                "with an MPS build of torch); use HEATPOSE_DEVICE=auto or cpu"
            )
        if not d.startswith("cuda"):
            continue
        if not torch.cuda.is_available():
            raise DeviceError(
                f"HEATPOSE_DEVICE={setting} but no CUDA device is available; "
                "use HEATPOSE_DEVICE=auto or cpu"
            )
        index = int(d.split(":")[1]) if ":" in d else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"HEATPOSE_DEVICE={setting} but only {torch.cuda.device_count()} CUDA "
                f"device(s) exist ({d} does not)"
            )
    return devices


def worker_labels(devices: Sequence[str]) -> list[str]:
    """One metrics label per worker: its device, ``device/k`` where a device repeats."""
    return [
        f"{d}/{sum(1 for e in devices[:k] if e == d)}" if devices.count(d) > 1 else d
        for k, d in enumerate(devices)
    ]


def parse_buckets(text: str) -> str:
    """``HEATPOSE_BATCH_BUCKETS`` normalised: ``auto``, ``none`` or increasing sizes ``8,16,32``.

    Raises:
        ValueError: anything else (:data:`BUCKETS_HELP`).
    """
    v = text.strip().lower().replace(" ", "")
    if v in ("auto", "none"):
        return v
    try:
        sizes = [int(p) for p in v.split(",")]
    except ValueError:
        raise ValueError(BUCKETS_HELP) from None
    if any(s < 1 for s in sizes) or sizes != sorted(set(sizes)):
        raise ValueError(BUCKETS_HELP)
    return ",".join(map(str, sizes))


def buckets_for(setting: str, device: torch.device, *, max_batch_size: int) -> tuple[int, ...]:
    """The forward batch sizes to pad to on ``device`` (``()`` = no padding).

    ``auto``: on CUDA 8, 16, 32, ... up to the first size holding ``2 x max_batch_size`` crops
    (the flip test doubles a batch); nothing on other devices, where padding only costs time.
    """
    if setting == "none" or (setting == "auto" and device.type != "cuda"):
        return ()
    if setting == "auto":
        sizes = [8]
        while sizes[-1] < 2 * max_batch_size:
            sizes.append(sizes[-1] * 2)
        return tuple(sizes)
    return tuple(int(s) for s in setting.split(","))
