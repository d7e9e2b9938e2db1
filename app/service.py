"""The running model: checkpoint, :class:`~models.predictor.Predictor`, batcher, readiness.

:class:`PoseService` is what the routes talk to. Its life: :meth:`start` (load the checkpoint,
build the predictor, warm up, start the batcher; ``ready`` turns true), then requests through
:meth:`infer`, then :meth:`begin_drain` (``ready`` false, new work refused) and :meth:`stop`
(queued work finishes within the grace period, the device is released).
"""

from __future__ import annotations

import gc
import logging
import os
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
import torch

from app.batch_worker import CropResult
from app.batcher import Batcher
from app.errors import ApiError
from app.metrics import Metrics
from app.settings import Settings
from models import zoo
from models.backends import BackendError
from models.checkpoint import CheckpointError, ModelConfig, load
from models.predictor import Crops, Predictor
from models.zoo import ZooError

log = logging.getLogger("heatpose.app")


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


def pick_device(setting: str) -> str | None:
    """``HEATPOSE_DEVICE`` -> a torch device string, or ``None`` (auto)."""
    if setting == "auto":
        return None
    if setting.startswith("cuda"):
        if not torch.cuda.is_available():
            raise StartupError(
                f"HEATPOSE_DEVICE={setting} but no CUDA device is available; "
                "use HEATPOSE_DEVICE=auto or cpu"
            )
        index = int(setting.split(":")[1]) if ":" in setting else 0
        if index >= torch.cuda.device_count():
            raise StartupError(
                f"HEATPOSE_DEVICE={setting} but only {torch.cuda.device_count()} CUDA "
                "device(s) exist"
            )
    return setting


class PoseService:
    """Owns the model and the batcher for one app instance."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.predictor: Predictor | None = None
        self.batcher: Batcher | None = None
        self.config: ModelConfig | None = None
        self.checkpoint_path: Path | None = None
        self.draining = False
        self.started_at: float | None = None
        self.decode_limiter: anyio.CapacityLimiter | None = None

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Load, warm up, start batching. Raises :class:`StartupError` with a fix-it message.

        May be called again after :meth:`stop` (an app's lifespan can run more than once).
        """
        s = self.settings
        self.draining = False
        device = pick_device(s.device)
        if s.torch_threads is not None:
            torch.set_num_threads(s.torch_threads)  # process-wide, like the setting
        path = await anyio.to_thread.run_sync(resolve_checkpoint, s.checkpoint)
        try:
            bundle = await anyio.to_thread.run_sync(load, path)
        except CheckpointError as e:
            raise StartupError(f"HEATPOSE_CHECKPOINT={s.checkpoint!r}: {e}") from e
        try:
            predictor = Predictor(bundle, device=device, flip_test=s.flip_test,
                                  decode_mode=s.decode_mode, backend=s.backend)  # fmt: skip
        except BackendError as e:  # e.g. tensorrt without CUDA, onnxruntime not installed
            raise StartupError(str(e)) from e
        self.predictor, self.config, self.checkpoint_path = predictor, bundle.config, path
        if s.warmup:
            await anyio.to_thread.run_sync(self._warmup)
        self.batcher = Batcher(
            lambda crops, flip: predictor.heatmaps(crops, flip),
            lambda hm, c, sc, mode: predictor.decode(hm, c, sc, mode),
            max_batch_size=s.max_batch_size,
            max_queue_delay_s=s.max_queue_delay_s,
            max_queued=s.max_queued_persons,
            metrics=self.metrics,
            device_name=str(predictor.device),
        )
        self.batcher.start()
        # Decoding and cropping run in worker threads; bounded so they cannot crowd out the model.
        self.decode_limiter = anyio.CapacityLimiter(max(2, os.cpu_count() or 2))
        self.started_at = time.time()
        log.info("serving %s (%s) on %s", bundle.config.name, path, predictor.device)

    def _warmup(self) -> None:
        assert self.predictor is not None
        w, h = self.predictor.input_size
        crops = np.zeros((1, h, w, 3), np.uint8)
        for flip in (False, True):
            hm = self.predictor.heatmaps(crops, flip)
            self.predictor.decode(hm, np.array([[w / 2, h / 2]]), np.array([[w, h]]))

    def begin_drain(self) -> None:
        """``/ready`` turns false and new inference is refused (503)."""
        if not self.draining:
            log.info("draining: refusing new work, finishing in-flight requests")
        self.draining = True

    async def stop(self) -> None:
        """Finish queued work within the grace period, then release the model and device."""
        self.begin_drain()
        if self.batcher is not None:
            clean = await self.batcher.drain(self.settings.shutdown_grace_s)
            if not clean:
                log.warning("grace period over with work still queued; it was refused")
        device = self.predictor.device if self.predictor is not None else None
        self.predictor = None
        gc.collect()
        if device is not None and device.type == "cuda":
            torch.cuda.empty_cache()

    # ---------------------------------------------------------------- state
    @property
    def ready(self) -> bool:
        """Model loaded, batcher alive, not draining."""
        return self.not_ready_reason() is None

    def not_ready_reason(self) -> str | None:
        """Why ``/ready`` is false, or ``None`` when it is true."""
        if self.draining:
            return "the service is shutting down"
        if self.predictor is None or self.batcher is None:
            return "the model is not loaded yet"
        if not self.batcher.alive:
            died = self.batcher.died
            return f"the batcher is not running ({died!r})" if died else "the batcher stopped"
        return None

    def require_ready(self) -> tuple[Predictor, Batcher]:
        """The predictor and batcher, or 503 when not ready."""
        reason = self.not_ready_reason()
        if reason is not None or self.predictor is None or self.batcher is None:
            self.metrics.rejected.labels("not_ready").inc()
            raise ApiError(503, "not_ready", reason or "not ready", {"Retry-After": "5"})
        return self.predictor, self.batcher

    # ---------------------------------------------------------------- inference
    async def infer(
        self,
        crops: list[Crops],
        *,
        flip_test: bool | None,
        mode: str | None,
        want_heatmaps: bool,
        deadline: float,
    ) -> list[list[CropResult]]:
        """All persons of all images of one request through the batcher, as one job.

        Args:
            crops: per image the output of ``Predictor.crop``.
            deadline: ``time.monotonic()`` deadline of the request.

        Returns:
            Per image, per person (in box order) the keypoints in image pixels.
        """
        predictor, batcher = self.require_ready()
        counts = [len(c.images) for c in crops]
        if sum(counts) == 0:
            return [[] for _ in crops]
        images = np.concatenate([c.images for c in crops if len(c.images)])
        centers = np.concatenate([c.centers for c in crops if len(c.images)])
        scales = np.concatenate([c.scales for c in crops if len(c.images)])
        flip = predictor.flip_test if flip_test is None else flip_test
        results = await batcher.submit(images, flip, centers, scales, deadline=deadline,
                                       mode=mode, want_heatmaps=want_heatmaps)  # fmt: skip
        out, start = [], 0
        for n in counts:
            out.append(results[start : start + n])
            start += n
        return out

    def model_info(self) -> dict[str, Any]:
        """The checkpoint's metadata for ``/v1/model``."""
        assert self.config is not None and self.predictor is not None
        return {
            **self.config.to_dict(),
            "input_size": list(self.config.input_size),
            "heatmap_size": list(self.config.codec.heatmap_size),
            "checkpoint": str(self.checkpoint_path),
            "device": str(self.predictor.device),
            "flip_test_default": self.predictor.flip_test,
            "decode_mode_default": self.predictor.decode_mode,
        }
