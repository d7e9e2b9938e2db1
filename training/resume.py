"""Training-resume files: model, optimiser, scheduler, scaler, counters and RNG states.

Written atomically (temporary file, then ``os.replace``) so a crash never leaves a truncated
file; read with ``torch.load(weights_only=True)``, so nothing in the file can run code. Only
tensors, numbers, strings, lists, tuples and dicts go in (numpy's RNG state is stored as a
tensor). These files are for resuming; the model artifact for the service is the
``.safetensors`` export (:mod:`models.checkpoint`).
"""

from __future__ import annotations

import os
import random
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


def load_resume(path: str | Path) -> dict[str, Any]:
    """Read a resume file with ``weights_only=True`` (tensors on the CPU)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESUME_FILE
    if not path.is_file():
        raise ResumeError(f"--resume file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle / zip errors come in many types
        raise ResumeError(f"--resume file {path} is not a readable resume file: {e}") from e
    missing = {"model", "optimizer", "lr_scheduler", "epoch", "step"} - set(state)
    if missing:
        raise ResumeError(f"--resume file {path} lacks {sorted(missing)}")
    return state
