"""Training-resume files: model, optimiser, scheduler, scaler, counters and RNG states.

Written atomically (temporary file, then ``os.replace``) so a crash never leaves a truncated
file; read with ``torch.load(weights_only=True)``, so nothing in the file can run code. Only
tensors, numbers, strings, lists, tuples and dicts go in (numpy's RNG state is stored as a
tensor). These files are for resuming; the model artifact for the service is the
``.safetensors`` export (:mod:`models.weights.checkpoint`).
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

RESUME_FILE = "resume.pt"


class ResumeError(Exception):
    """The resume file is missing or unreadable; the message names it."""


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch CPU (and CUDA) generator states, weights_only-safe."""
    np_state: Any = np.random.get_state(legacy=True)  # ('MT19937', keys, pos, has_gauss, cached)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(_tuples(state["python"]))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value: Any) -> Any:
    """random.setstate wants nested tuples; a round trip may give lists."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def save_resume(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def keep_copy(src: Path, dst: Path) -> None:
    """Keep ``src`` also as ``dst``: a hard link (no copy; the next atomic save of ``src``
    replaces its name, not the shared data), or a copy where links are not supported."""
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive
REQUIRED = ("model", "optimizer", "lr_scheduler", "epoch", "step")


def _refusal(path: Path, error: Exception) -> str:
    """Why ``torch.load(path, weights_only=True)`` refused the file, in one line of our words."""
    with path.open("rb") as f:
        head = f.read(16)
    if not head:
        return "is empty"
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1:
        return "is a model file (safetensors), not a resume file: --weights starts from a model"
    if not head.startswith(ZIP_MAGIC):
        return "is not a resume file (not a file that torch.save wrote, as heatpose train does)"
    text = str(error)
    if "Weights only load failed" in text:
        found = re.search(r"GLOBAL ([\w.]+)", text)
        what = f" such as {found.group(1)}" if found else ""
        return (
            f"holds Python objects{what} that a safe load (torch.load weights_only=True) refuses; "
            "only resume files that heatpose train wrote are read"
        )
    return "is damaged (truncated or changed after it was written): it cannot be read"


def load_resume(path: str | Path) -> dict[str, Any]:
    """Read a resume file with ``weights_only=True`` (tensors on the CPU); :class:`ResumeError`
    saying in one line, naming ``--resume`` and the file, why a file is refused."""
    path = Path(path)
    if path.is_dir():
        path = path / RESUME_FILE
    if not path.is_file():
        raise ResumeError(f"--resume file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle / zip / EOF errors come in many types
        raise ResumeError(f"--resume file {path} {_refusal(path, e)}") from e
    if not isinstance(state, dict):
        kind = type(state).__name__
        raise ResumeError(f"--resume file {path} holds a {kind}, not a heatpose resume file")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise ResumeError(
            f"--resume file {path} is not a heatpose resume file: it lacks {', '.join(missing)} "
            "(a bare state dict? --weights takes a .safetensors model)"
        )
    return state


def restore_model(model: torch.nn.Module, state: dict[str, Any], path: str | Path) -> None:
    """Load ``state["model"]`` into ``model``; :class:`ResumeError` naming the first parameter
    that does not fit (another depth or number of keypoints) and the run that wrote the file."""
    saved, own = state["model"], model.state_dict()
    if not isinstance(saved, dict) or not all(hasattr(v, "shape") for v in saved.values()):
        raise ResumeError(f"--resume file {path} has no model state dict under 'model'")
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    shapes = [k for k in own if k in saved and tuple(saved[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        if shapes:
            k = shapes[0]
            why = f"{k} is {tuple(saved[k].shape)} there, {tuple(own[k].shape)} here"
        else:
            why = f"{'no ' + missing[0] if missing else 'an extra ' + unexpected[0]} there"
        depth = state.get("args", {}).get("depth") if isinstance(state.get("args"), dict) else None
        wrote = f" (written by a --depth {depth} run)" if depth else ""
        raise ResumeError(f"--resume file {path} is of another model{wrote}: {why}")
    model.load_state_dict(saved)


def restore_training(
    state: dict[str, Any],
    path: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[int, int, float]:
    """Put a resume file's state back: model, optimiser, scheduler, scaler and RNG states;
    returns ``(epochs done, steps done, best val AP)``. :class:`ResumeError` with one line."""
    restore_model(model, state, path)
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["lr_scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        return int(state["epoch"]), int(state["step"]), float(state.get("best_ap", -1.0))
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise ResumeError(
            f"--resume file {path} has a training state that does not fit this run "
            f"({type(e).__name__}: {first})"
        ) from e
