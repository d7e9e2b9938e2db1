"""One training epoch and one evaluation, in the style of torchvision's ``references/engine.py``.

Batches come from :class:`training.data.coco.CocoKeypoints`: ``image`` ``(B, h, w, 3)`` uint8 RGB
crops, ``heatmaps`` ``(B, K, H, W)`` targets and ``weights`` ``(B, K)``. The crops are
normalised on the device by :func:`models.inference.predictor.normalize_crops`, the same function
inference uses (colour order and mean/std from the model's config).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from models.inference.predictor import Predictor, normalize_crops
from models.weights.checkpoint import ModelBundle
from models.weights.model_config import ModelConfig
from training.evaluate import evaluate
from training.loop.distributed import DistInfo, all_reduce_mean


class KeypointMSELoss(nn.Module):
    """Mean over ``(B, K, H, W)`` of ``weights[b, k] * (pred - target)^2`` (mmpose's
    KeypointMSELoss with target weights)."""

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        return ((pred.float() - target) ** 2 * weights[:, :, None, None]).mean()


class WarmupMultiStep:
    """LR factor of iteration ``it``: linear warm-up from ``warmup_factor`` to 1 over
    ``warmup_iters``, times ``gamma`` for each milestone (in iterations) passed.

    A callable object (not a lambda) so that ``LambdaLR.state_dict`` saves it.
    """

    def __init__(
        self, *, warmup_iters: int, warmup_factor: float, milestones: list[int], gamma: float
    ) -> None:
        self.warmup_iters, self.warmup_factor = int(warmup_iters), float(warmup_factor)
        self.milestones, self.gamma = [int(m) for m in milestones], float(gamma)

    def __call__(self, it: int) -> float:
        warm = 1.0
        if it < self.warmup_iters:
            warm = self.warmup_factor + (1.0 - self.warmup_factor) * it / self.warmup_iters
        return warm * self.gamma ** sum(it >= m for m in self.milestones)


def epoch_label(epoch: int, epochs: int | None = None) -> str:
    """The progress bar's label of 1-based ``epoch``: ``"epoch 3/10"`` (``"epoch 3"``)."""
    return f"epoch {epoch}/{epochs}" if epochs else f"epoch {epoch}"


@dataclass(kw_only=True)
class StepRecord:
    """What one optimiser step did: the mean loss over all ranks and the LR it used.

    ``step`` counts optimiser steps from the start of training (1 for the first); ``epoch``
    is 1-based (1 for the first epoch), as in the progress bar and every log record.
    """

    step: int
    epoch: int
    loss: float
    lr: float
    images_per_s: float


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[dict],
    *,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    config: ModelConfig,
    info: DistInfo,
    epoch: int,
    step: int,
    epochs: int | None = None,
    scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None,
    log_every: int = 20,
    on_log: Callable[[StepRecord], None] | None = None,
    sync_loss_every_step: bool = False,
    progress: bool = True,
) -> tuple[int, float]:
    """Train over ``loader`` once; returns ``(step after the epoch, mean loss over ranks)``.

    ``epoch`` is this epoch's 1-based number (shown in the progress bar as ``epoch E/epochs``
    and put in each :class:`StepRecord`); ``step`` counts optimiser steps since the start of
    training. ``on_log`` gets a :class:`StepRecord` every ``log_every`` steps (every step with
    ``sync_loss_every_step``, whose loss is then all-reduced each step). The scheduler steps
    once per iteration.
    """
    model.train()
    bar = tqdm(
        loader,
        desc=epoch_label(epoch, epochs),
        disable=not (progress and info.is_main),
        dynamic_ncols=True,
        leave=False,
    )
    total, count = torch.zeros((), device=info.device), 0
    window_t, window_n = time.perf_counter(), 0
    for batch in bar:
        x = normalize_crops(batch["image"], config, info.device)
        target = batch["heatmaps"].to(info.device, non_blocking=True)
        weights = batch["weights"].to(info.device, non_blocking=True)
        lr = optimizer.param_groups[0]["lr"]
        amp = torch.autocast(info.device.type, dtype=amp_dtype) if amp_dtype else None
        with amp or contextlib.nullcontext():
            loss = loss_fn(model(x), target, weights)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss is {loss.item()} at step {step}; stopping")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()
        step += 1
        total += loss.detach()
        count += 1
        window_n += x.shape[0] * info.world_size
        if sync_loss_every_step or step % log_every == 0:
            now = time.perf_counter()
            rate = window_n / max(now - window_t, 1e-9)
            window_t, window_n = now, 0
            mean_loss = float(all_reduce_mean(loss.detach(), info))
            bar.set_postfix(loss=f"{mean_loss:.3e}", lr=f"{lr:.2e}", img_s=f"{rate:.1f}")
            if on_log is not None:
                on_log(StepRecord(step=step, epoch=epoch, loss=mean_loss, lr=lr, images_per_s=rate))
    mean = float(all_reduce_mean(total / max(count, 1), info))
    return step, mean


def evaluate_model(
    model: nn.Module,
    config: ModelConfig,
    *,
    data_path: str | Path,
    split: str,
    device: torch.device,
    flip_test: bool = True,
    batch_size: int = 64,
    workers: int = 0,
    results_path: str | Path | None = None,
    verbose: bool = False,
) -> dict[str, float]:
    """COCO AP of ``model`` (unwrapped, not DDP) through
    :class:`models.inference.predictor.Predictor`, the code the service runs; the model is back in
    training mode afterwards."""
    bundle = ModelBundle(model, config)  # type: ignore[arg-type]  # a PoseResNet, maybe SyncBN
    predictor = Predictor(bundle, device=device, flip_test=flip_test)
    try:
        return evaluate(
            predictor,
            data_path,
            split,
            results_path=results_path,
            batch_size=batch_size,
            workers=workers,
            verbose=verbose,
        )
    finally:
        model.train()
