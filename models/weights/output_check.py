"""Refuse a model whose outputs are not finite (NaN/Inf weights or BatchNorm statistics).

A checkpoint with NaN weights loads fine and then serves ``"score": null`` at nonsense
coordinates. :func:`check_finite` runs one forward pass and raises
:class:`~models.weights.checkpoint.CheckpointError` with one line naming the cause, so start-up (the
service's warm-up) can stop before ``/ready`` turns true.
"""

from __future__ import annotations

import torch

from models.weights.checkpoint import CheckpointError, ModelBundle

__all__ = ["check_finite", "check_finite_heatmaps"]

_NAMED = 3  # at most this many non-finite tensors are named in the message


def _non_finite_tensors(model: torch.nn.Module) -> list[str]:
    """Names of the parameters and buffers (e.g. BN ``running_var``) holding a NaN or an Inf."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return [
        name for name, t in tensors if t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]


def check_finite_heatmaps(heatmaps: torch.Tensor, model: torch.nn.Module) -> None:
    """Raise if ``heatmaps`` (B, K, H, W), produced by ``model``, hold a NaN or an Inf.

    Raises:
        CheckpointError: "the model's outputs are not finite (NaN/Inf weights?)", followed by
            the names of the first non-finite weight tensors when there are any.
    """
    if bool(torch.isfinite(heatmaps).all()):
        return
    bad = _non_finite_tensors(model)
    cause = ""
    if bad:
        more = f" and {len(bad) - _NAMED} more" if len(bad) > _NAMED else ""
        cause = f": non-finite values in {', '.join(bad[:_NAMED])}{more}"
    raise CheckpointError(
        f"the model's outputs are not finite (NaN/Inf weights?){cause}; re-export or re-train it"
    )


@torch.inference_mode()
def check_finite(bundle: ModelBundle) -> None:
    """One forward pass of ``bundle.model`` on a mean-colour crop; raise if any output is not
    finite.

    The input is one ``(1, 3, h, w)`` crop of zeros *after* normalisation (the mean colour), on
    the model's device and in its dtype, ``(w, h)`` = ``bundle.config.input_size`` (input px).
    The model stays in its mode (eval for a loaded bundle). A NaN or an Inf anywhere in the
    weights or BN statistics reaches the output even where activations are zero (``0 * NaN``
    and ``0 * Inf`` are NaN).

    Raises:
        CheckpointError: see :func:`check_finite_heatmaps`.
    """
    model = bundle.model
    first = next(model.parameters())
    w, h = bundle.config.input_size
    x = torch.zeros((1, 3, h, w), device=first.device, dtype=first.dtype)
    check_finite_heatmaps(model(x), model)
