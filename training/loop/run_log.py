"""What a training run records: JSON lines, TensorBoard scalars, and an optional step trace.

Rank 0 appends to ``OUTPUT/metrics.jsonl`` (one JSON object a line with a ``type``: ``start``,
``train``, ``epoch``, ``eval``) and writes TensorBoard scalars under ``OUTPUT/tb``. Epoch
numbers are 1-based, as in the progress bar: ``train`` records of epoch E are its steps,
``epoch`` and ``eval`` records of epoch E are written when it ends, ``start`` names the first
epoch the run trains (E + 1 after resuming from a file written at the end of epoch E). With a
trace directory every rank writes ``rank<R>.jsonl`` with each step's mean loss, LR and a digest
of its own weights (``train`` records), which is how the DDP test checks that ranks stay
identical. A fresh run starts the trace anew; a resumed run keeps the stopped run's lines and
appends a ``resume`` record (``from``: the resume file, ``epoch``: the first epoch it trains,
``step``: the steps done in that file), then its own steps. Lines before that record with a
larger step were trained after the resume file was written: the resumed run does those steps
again (the same ones on the CPU, bit for bit) after the record.
:func:`checkpoint_summary` is what the trainer prints at its end.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import time
from pathlib import Path
from typing import Any

import torch

from models.weights.checkpoint import read_config
from training.loop.distributed import DistInfo
from training.loop.engine import StepRecord
from training.loop.resume import RESUME_FILE


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter's bytes, in order (bit-exact). Buffers (BatchNorm running
    statistics) are left out: without sync-BN each rank updates its own, and DDP re-broadcasts
    rank 0's before every forward pass."""
    h = hashlib.sha256()
    for name, t in model.named_parameters():
        h.update(name.encode())
        # reshape(-1): logical order, whatever the memory format (channels_last weights too)
        h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class RunLog:
    """Metrics sinks of one run (files are written by rank 0 only, traces by every rank)."""

    def __init__(
        self,
        out_dir: Path,
        info: DistInfo,
        trace_dir: Path | None = None,
        *,
        resumed: dict[str, Any] | None = None,
    ) -> None:
        self.info = info
        self.jsonl = self.tb = self.trace = None
        if info.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            self.jsonl = (out_dir / "metrics.jsonl").open("a")
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out_dir / "tb"))
            except ImportError:  # tensorboard is optional at run time
                self.tb = None
        if trace_dir is not None:
            trace_dir.mkdir(parents=True, exist_ok=True)
            # A resumed run appends after the stopped run's lines, behind a resume record.
            self.trace = (trace_dir / f"rank{info.rank}.jsonl").open("a" if resumed else "w")
            if resumed:
                self.trace.write(json.dumps({"type": "resume", **resumed}) + "\n")
                self.trace.flush()

    def _write(self, record: dict[str, Any]) -> None:
        if self.jsonl is not None:
            self.jsonl.write(json.dumps(record) + "\n")
            self.jsonl.flush()

    def event(self, kind: str, **fields: Any) -> None:
        """One JSON line (and TensorBoard scalars for ``eval``)."""
        self._write({"type": kind, "time": round(time.time(), 3), **fields})
        if self.tb is not None and kind in ("eval", "epoch"):
            step = fields.get("step", 0)
            for k, v in fields.items():
                if isinstance(v, float) and k not in ("time_s",):
                    self.tb.add_scalar(f"{kind}/{k}", v, step)

    def train_step(self, rec: StepRecord, digest: str | None = None) -> None:
        """A logged training step (loss already averaged over the ranks)."""
        fields = {
            "epoch": rec.epoch,
            "step": rec.step,
            "loss": rec.loss,
            "lr": rec.lr,
            "img_s": round(rec.images_per_s, 2),
        }
        self._write({"type": "train", **fields})
        if self.tb is not None:
            self.tb.add_scalar("train/loss", rec.loss, rec.step)
            self.tb.add_scalar("train/lr", rec.lr, rec.step)
            self.tb.add_scalar("train/images_per_s", rec.images_per_s, rec.step)
        if self.trace is not None:
            self.trace.write(json.dumps({"type": "train", **fields, "digest": digest}) + "\n")
            self.trace.flush()

    def close(self) -> None:
        for f in (self.jsonl, self.trace):
            if f is not None:
                f.close()
        if self.tb is not None:
            self.tb.close()


def checkpoint_summary(out_dir: Path) -> str:
    """Where the run's checkpoints are and how to serve the best one, read from the files.

    One line each for ``best.safetensors`` (best val AP), ``last.safetensors`` and the resume
    file, with the epoch (and val AP) stored in each export, then the ``heatpose serve``
    command for the best export (the last one when no evaluation ran).
    """
    lines = [f"checkpoints in {out_dir}:"]
    best, last = out_dir / "best.safetensors", out_dir / "last.safetensors"
    for path in (best, last):
        if not path.is_file():
            why = "no evaluation ran: see --eval-every" if path == best else "no epoch ran"
            lines.append(f"  {path.name:<17} not written ({why})")
            continue
        metrics = read_config(path).metrics
        ap = f", val AP {metrics['val_AP']:.4f}" if "val_AP" in metrics else ""
        lines.append(f"  {path.name:<17} {path}  (epoch {metrics.get('epoch')}{ap})")
    resume = out_dir / RESUME_FILE
    if resume.is_file():
        lines.append(f"  {RESUME_FILE:<17} {resume}  (continue: add --resume {resume})")
    serve = best if best.is_file() else last
    if serve.is_file():
        which = "best" if serve == best else "last"
        command = f"HEATPOSE_CHECKPOINT={shlex.quote(str(serve))} heatpose serve"
        lines.append(f"serve the {which} model: {command}")
    return "\n".join(lines)
