"""The rule for a person detector that cannot be had: ``auto`` falls back, a named one is required.

Every front door (``heatpose serve``, ``heatpose predict``, ``heatpose eval --boxes detector``)
applies it the same way: a detector setting of ``auto`` resolves to some zoo name (which one is
the caller's choice, e.g. :func:`app.startup.detector_name`); when that name's weights are
neither cached nor downloadable (or unreadable), the program goes on *without* a detector and
says why, once, in the words of :func:`unavailable_reason`. A detector named explicitly (a zoo
name or a file) stays required: its error propagates and the program stops with one line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from models.checkpoint import CheckpointError
from models.zoo import ZooError

AUTO = "auto"
"""The detector setting that may fall back to no detector."""

NO_DETECTOR_EFFECT = "images without boxes are answered as one whole-image person"

T = TypeVar("T")


def unavailable_reason(name: str, error: BaseException, effect: str = NO_DETECTOR_EFFECT) -> str:
    """One line: ``auto``'s detector ``name`` could not be had (``error``), and what follows."""
    return (
        f"person detection is off: the automatic detector {name} cannot be loaded ({error}); "
        f"{effect}"
    )


def load_or_reason(
    setting: str,
    name: str,
    load: Callable[[], T],
    *,
    errors: tuple[type[BaseException], ...] = (),
    effect: str = NO_DETECTOR_EFFECT,
) -> tuple[T | None, str | None]:
    """``load()`` -> ``(detector, None)``; when it fails and ``setting`` is ``auto`` ->
    ``(None, reason)``.

    Args:
        setting: the user's detector setting (``auto``, a zoo name or a file).
        name: what ``auto`` (or the setting) resolved to, for the reason.
        load: fetches and loads the detector.
        errors: more exception types that mean "cannot be had" besides
            :class:`~models.zoo.ZooError`, :class:`~models.checkpoint.CheckpointError` and
            :class:`OSError` (e.g. the caller's wrapper of them).
        effect: what the program does without the detector, for the reason.

    Raises:
        Whatever ``load`` raises when ``setting`` is not ``auto``.
    """
    unavailable: tuple[type[BaseException], ...] = (ZooError, CheckpointError, OSError, *errors)
    try:
        return load(), None
    except unavailable as e:
        if setting != AUTO:
            raise
        return None, unavailable_reason(name, e, effect)
