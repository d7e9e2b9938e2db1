"""``--init-from``: start a run from a published or earlier checkpoint with other keypoints.

The backbone and the deconvolution layers are copied as they are; the final 1x1 layer channel
by channel for the keypoint names the two specs share, the other channels keep their fresh
initialisation (normal std 0.001, bias 0). The source is a heatpose ``.safetensors`` file or a
weight-zoo name (:func:`models.weights.zoo.resolve`), read through :mod:`models.weights.checkpoint`;
the run takes over its input convention (colour order, mean, std), which its backbone was trained
with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from models.weights.checkpoint import CheckpointError, ModelBundle, load
from models.weights.model_config import ModelConfig
from models.weights.zoo import ZooError, resolve


@dataclass(frozen=True)
class Transfer:
    """What :func:`copy_weights` did: tensors copied whole, keypoint names whose final-layer
    channel was copied, and those left freshly initialised."""

    copied_tensors: int
    shared: tuple[str, ...]
    fresh: tuple[str, ...]


def load_source(name_or_path: str) -> ModelBundle:
    """The ``--init-from`` model on the CPU; a :class:`CheckpointError` naming the flag if not."""
    try:
        return load(resolve(name_or_path), device="cpu")
    except (ZooError, CheckpointError) as e:
        raise CheckpointError(f"--init-from {name_or_path}: {e}") from e


def adopt_input_convention(config: ModelConfig, source: ModelBundle, name: str) -> ModelConfig:
    """``config`` with the source's colour order, mean and std, and the source in provenance.

    Raises:
        CheckpointError: the source's ResNet depth is not ``config``'s.
    """
    src = source.config
    if src.depth != config.depth:
        raise CheckpointError(
            f"--init-from {name} is a ResNet-{src.depth} model, this run a ResNet-"
            f"{config.depth}: pass --depth {src.depth}"
        )
    provenance = {**config.provenance, "init_from": name, "init_from_model": src.name}
    return replace(
        config, color_order=src.color_order, mean=src.mean, std=src.std, provenance=provenance
    )


def copy_weights(
    model: torch.nn.Module,
    config: ModelConfig,
    source: ModelBundle,
    *,
    say: Callable[[str], None] = print,
) -> Transfer:
    """Copy ``source``'s weights into ``model`` (a PoseResNet of ``config``), see the module doc.

    Final-layer rows ``(K, C, 1, 1)`` / ``(K,)`` are matched by keypoint name; says which.
    """
    target, src = model.state_dict(), source.model.state_dict()
    src_names = source.config.spec.names
    copied = 0
    with torch.no_grad():
        for key, value in target.items():
            if key.startswith("final_layer."):
                continue
            if key not in src or src[key].shape != value.shape:
                raise CheckpointError(f"--init-from: {key} does not fit this model")
            value.copy_(src[key])
            copied += 1
        shared, fresh = [], []
        for i, name in enumerate(config.spec.names):
            if name not in src_names:
                fresh.append(name)
                continue
            j = src_names.index(name)
            for part in ("weight", "bias"):
                target[f"final_layer.{part}"][i].copy_(src[f"final_layer.{part}"][j])
            shared.append(name)
    say(
        f"--init-from {source.config.name}: copied the backbone and deconvolution layers "
        f"({copied} tensors); final layer: {len(shared)} of {len(config.spec.names)} keypoint "
        f"channels copied ({', '.join(shared) or 'none'}), fresh: {', '.join(fresh) or 'none'}"
    )
    return Transfer(copied, tuple(shared), tuple(fresh))
