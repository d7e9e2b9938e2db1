"""What the service starts from: checkpoint and detector files, devices, the models per device.

Each resolving function turns one ``HEATPOSE_*`` setting into something loadable, or raises
:class:`StartupError` with one line that names the setting and says how to fix it. ``heatpose
serve`` calls them before it starts the server (a wrong setting fails fast, without uvicorn);
:class:`app.engine.service.PoseService` calls them again when it starts, then loads one model per
device with :func:`pose_replicas` and :func:`person_detectors`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import anyio.to_thread
import torch

from app.devices import DeviceError, buckets_for, resolve_devices
from models.detection.detector import load_detector
from models.detection.detector_backends import served_detector
from models.detection.detector_choice import (
    AUTO,
    NO_DETECTOR_EFFECT,
    auto_detector,
    unavailable_reason,
)
from models.inference.predictor import Predictor, default_device
from models.runtime.backends import BackendError
from models.weights import zoo
from models.weights.checkpoint import CheckpointError, ModelBundle, file_sha256
from models.weights.zoo import ZooError

if TYPE_CHECKING:
    from app.settings import Settings
    from models.inference.pipeline import Detector


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

    ``auto``: :func:`models.detection.detector_choice.auto_detector` (``person-rtmdet-m`` on CUDA,
    ``person-rtmdet-nano`` on CPU; ``device`` as :func:`pick_device` returns it, ``None`` = auto).
    """
    if setting == "none":
        return None
    if setting != "auto":
        return setting
    return auto_detector(device)


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
        StartupError: a CUDA device this host does not have
        (:func:`app.devices.resolve_devices`).
    """
    try:
        devices = resolve_devices(setting)
    except DeviceError as e:
        raise StartupError(str(e)) from e
    return [None] if devices is None else list(devices)


def pick_device(setting: str) -> str | None:
    """``HEATPOSE_DEVICE`` -> the first worker's torch device string, or ``None`` (auto)."""
    return pick_devices(setting)[0]


def pose_replicas(
    bundle: ModelBundle, devices: Sequence[str | None], settings: Settings
) -> list[Predictor]:
    """One :class:`~models.inference.predictor.Predictor` per device (``None`` = the default
    device), each with its own copy of the weights, configured by ``settings``.

    Raises:
        StartupError: the backend cannot run here (e.g. tensorrt without CUDA).
    """
    s = settings
    out = []
    for device in devices:  # each Predictor makes its own (BatchNorm-folded) copy
        where = torch.device(device) if device is not None else default_device()
        try:
            out.append(
                Predictor(
                    bundle,
                    device=where,
                    flip_test=s.flip_test,
                    decode_mode=s.decode_mode,
                    backend=s.backend,
                    onnx_path=s.onnx,
                    batch_buckets=buckets_for(
                        s.batch_buckets, where, max_batch_size=s.max_batch_size
                    ),
                )
            )
        except BackendError as e:  # e.g. tensorrt without CUDA, onnxruntime not installed
            raise StartupError(str(e)) from e
    return out


async def person_detectors(
    settings: Settings, devices: Sequence[str | None], *, given: Detector | None
) -> tuple[list[Detector], str | None]:
    """The person detector ``HEATPOSE_DETECTOR`` names, loaded once per device (in worker
    threads), or ``given`` (a stand-in; it serves every device).

    Returns:
        One detector per device (``[]`` without a detector) and its label for logs and
        ``/v1/model``: the zoo name and file, or the given detector's type.

    Raises:
        StartupError: the weights cannot be found, fetched or read (the message says how to
            provide them, or to set ``HEATPOSE_DETECTOR=none``).
    """
    if given is not None:
        return [given] * len(devices), f"{type(given).__name__} (given)"
    name = detector_name(settings.detector, devices[0])
    if name is None:
        return [], None
    path = await anyio.to_thread.run_sync(resolve_detector, name)
    detectors: list[Detector] = []
    try:
        for device in devices:
            load_one = functools.partial(load_detector, path, device, progress=False)
            loaded = await anyio.to_thread.run_sync(load_one)
            serve = functools.partial(
                served_detector,
                loaded,
                backend=settings.backend,
                bucket_setting=settings.batch_buckets,
                max_batch_size=settings.detector_batch_size,
            )
            detectors.append(await anyio.to_thread.run_sync(serve))
    except (CheckpointError, ZooError) as e:
        raise StartupError(f"HEATPOSE_DETECTOR={name!r}: {e}; {DETECTOR_NONE_HINT}") from e
    except BackendError as e:  # an RTMDet detector runs on the pose model's backend
        raise StartupError(f"HEATPOSE_DETECTOR={name!r}: {e}") from e
    return detectors, name if str(path) == name else f"{name} ({path})"


SEND_BOXES_HINT = (
    "to get one person per box, send the boxes with the image: /predict's `boxes` form field, "
    "per file a list of [x1, y1, x2, y2] in image pixels, e.g. -F 'boxes=[[[10, 20, 110, 320]]]'"
)


async def optional_person_detectors(
    settings: Settings, devices: Sequence[str | None], *, given: Detector | None
) -> tuple[list[Detector], str | None, str | None]:
    """:func:`person_detectors` with the rule of :mod:`models.detection.detector_choice`: with
    ``HEATPOSE_DETECTOR=auto`` a detector that cannot be had means none.

    Returns:
        The detectors and label of :func:`person_detectors`, and, without a detector, why
        detection is off and how to send boxes instead (``None`` with a detector).

    Raises:
        StartupError: a detector named explicitly (a zoo name or a file) cannot be had.
    """
    try:
        detectors, label = await person_detectors(settings, devices, given=given)
    except StartupError as e:
        if given is not None or settings.detector != AUTO:
            raise
        name = detector_name(settings.detector, devices[0]) or settings.detector
        return [], None, f"{unavailable_reason(name, e.__cause__ or e)}; {SEND_BOXES_HINT}"
    if detectors:
        return detectors, label, None
    return (
        [],
        None,
        f"person detection is off (HEATPOSE_DETECTOR=none): {NO_DETECTOR_EFFECT}; "
        + (SEND_BOXES_HINT),
    )


def served_onnx_sha256(predictor: Predictor) -> str | None:
    """The sha256 of the ``.onnx`` file ``predictor``'s backend runs (``HEATPOSE_ONNX``, or the
    export the onnxruntime/tensorrt backend cached), for ``/v1/model`` and ``/metrics``;
    ``None`` when no ONNX file is served (torch, compile)."""
    backend: object | None = predictor.forward
    while backend is not None:  # a wrapper (e.g. batch buckets) holds the backend as `inner`
        path = getattr(backend, "path", None)
        if path is not None:
            return file_sha256(Path(path))
        backend = getattr(backend, "inner", None)
    return None
