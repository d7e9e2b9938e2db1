"""Distributed data parallel set-up from torchrun's environment, and synchronised BatchNorm.

``torchrun --nproc_per_node=N -m training.train ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT``); multi-node runs use torchrun's own
``--nnodes --node_rank --rdzv-*`` flags. Without those variables everything runs in one process.
The backend is NCCL when the process has a CUDA device, else gloo.

:class:`SyncBatchNorm` is BatchNorm whose batch statistics are all-reduced over the ranks. On
CUDA, torch's :class:`torch.nn.SyncBatchNorm` is used; on CPU (which torch's does not support)
this module's version does the same with two differentiable all-reduces (gloo), so that
``--sync-bn`` also works there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its node, the
    ``device`` it computes on and whether a process group is up (``distributed``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    distributed: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that prints, logs, evaluates and writes files."""
        return self.rank == 0


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the process group when launched by torchrun, else describe a single process.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available). Under torchrun on CUDA
            each process takes ``cuda:LOCAL_RANK``.
    """
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        dev = torch.device(device or ("cuda" if use_cuda else "cpu"))
        return DistInfo(device=dev)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        dist.init_process_group(backend, rank=rank, world_size=world, device_id=dev)
    else:
        dist.init_process_group(backend, rank=rank, world_size=world)
    dist.barrier()
    return DistInfo(rank, world, local_rank, dev, True)


def cleanup(info: DistInfo) -> None:
    """Leave the process group (if any)."""
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for all ranks (no-op in one process)."""
    if info.distributed:
        dist.barrier()


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The mean of ``value`` over ranks (a copy; ``value`` itself in one process)."""
    if not info.distributed:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / info.world_size


class SyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d over the union of all ranks' batches (training mode), via all-reduce.

    Input/output ``(B, C, H, W)``. Statistics: mean, then biased variance from a second
    all-reduce of squared deviations (numerically safer than ``E[x^2] - E[x]^2``); running
    statistics use the unbiased variance, as BatchNorm does. Gradients flow through the
    all-reduces (``torch.distributed.nn``), so each rank's input gradient includes the other
    ranks' terms exactly as one big batch would. In eval mode, or in one process, it is plain
    BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        if dist.get_world_size() == 1:
            return super().forward(x)
        c = x.shape[1]
        local = torch.cat([x.sum(dim=(0, 2, 3)), x.new_tensor([x.numel() / c])])
        total = dist_fn.all_reduce(local)
        count = total[-1]
        mean = total[:c] / count
        centered = x - mean.view(1, c, 1, 1)
        var = dist_fn.all_reduce((centered * centered).sum(dim=(0, 2, 3))) / count
        y = centered * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        if self.track_running_stats:
            assert self.running_mean is not None and self.running_var is not None
            assert self.num_batches_tracked is not None
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                n = float(self.num_batches_tracked)
                m = self.momentum if self.momentum is not None else 1.0 / n
                unbiased = var.detach() * count / max(float(count) - 1.0, 1.0)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        return y


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm2d of ``model`` by a synchronised one (torch's on CUDA)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert_cpu(model)


def _convert_cpu(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, SyncBatchNorm):
        out = SyncBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        out.load_state_dict(module.state_dict())
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert_cpu(child))
    return out
