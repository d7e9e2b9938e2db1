"""Model artifacts: one ``.safetensors`` file holding the weights and the whole model config.

The config (:class:`~models.weights.model_config.ModelConfig`) is JSON in the safetensors header
metadata under the key ``heatpose``: a file alone rebuilds model, codec, keypoint spec and input
normalisation.
This is the only module that reads or writes weight files. Published ``.pth`` files (mmpose 1.x,
the original SimpleBaselines) are converted by :func:`import_published`, which reads them with
``torch.load(weights_only=True)`` and an explicit numpy allow-list: nothing pickled runs code.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import pickle
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from models.pose.codec import HeatmapCodec
from models.pose.keypoints import COCO_KEYPOINTS, KeypointSpec
from models.pose.network import DEPTHS, PoseResNet
from models.weights.atomic_file import publish
from models.weights.model_config import FORMAT_VERSION, ModelConfig

__all__ = [
    "FORMAT_VERSION",
    "LAYOUTS",
    "METADATA_KEY",
    "CheckpointError",
    "ModelBundle",
    "build_model",
    "check_state_dict",
    "import_published",
    "load",
    "read_config",
    "read_state_dict",
    "save",
    "save_state_dict",
    "verify",
]

METADATA_KEY = "heatpose"
DETECTOR_KEY = "heatpose_detector"
"""Header key of a person detector's ``.safetensors`` (JSON: arch, source); not a pose model."""
LAYOUTS = ("mmpose", "simplebaselines")


class CheckpointError(ValueError):
    """A weight file is missing, unreadable or does not fit; the message says how to fix it."""


@dataclass
class ModelBundle:
    """A ready model (eval mode, on its device) and the config it was loaded with."""

    model: PoseResNet
    config: ModelConfig


def build_model(config: ModelConfig) -> PoseResNet:
    """A randomly initialised :class:`PoseResNet` as ``config`` describes (depth, K)."""
    return PoseResNet(depth=config.depth, num_keypoints=config.spec.num_keypoints)


def _expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = build_model(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _listed(keys: list[str], limit: int = 8) -> str:
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _mismatch(expected: dict[str, tuple[int, ...]], got: dict[str, tuple[int, ...]]) -> str:
    """'' when the key sets and shapes agree, else a message naming the differences."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong = [
        f"{k} {got[k]} instead of {expected[k]}"
        for k in sorted(set(expected) & set(got))
        if tuple(got[k]) != tuple(expected[k])
    ]
    named = {"missing keys": missing, "unexpected keys": unexpected, "wrong shapes": wrong}
    return "; ".join(f"{what} ({len(ks)}): {_listed(ks)}" for what, ks in named.items() if ks)


def _write(path: str | Path, tensors: dict[str, torch.Tensor], key: str, value: Any) -> None:
    """Atomically write ``tensors`` to ``path`` (temp file, then os.replace) with ``value`` as
    JSON under ``key`` in the header."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    metadata = {"format": "pt", key: json.dumps(value)}
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        publish(tmp, path)  # the umask's mode, not the temporary file's 0600
    finally:
        tmp.unlink(missing_ok=True)


def save(path: str | Path, model: torch.nn.Module, config: ModelConfig) -> None:
    """Write ``model``'s full state dict (BN statistics included) and ``config`` to ``path``.

    ``model`` may be wrapped (DataParallel/DDP ``.module``, ``torch.compile``). The write is
    atomic: readers never see a half-written file.
    """
    inner = getattr(model, "_orig_mod", model)
    inner = getattr(inner, "module", inner)
    state = {k: v.detach().cpu() for k, v in inner.state_dict().items()}
    problem = _mismatch(_expected_shapes(config), {k: tuple(v.shape) for k, v in state.items()})
    if problem:
        raise CheckpointError(
            f"the model does not match its config (ResNet-{config.depth}, "
            f"K={config.spec.num_keypoints}): {problem}; pass the config the model was built with"
        )
    _write(path, state, METADATA_KEY, config.to_dict())


def read_config(path: str | Path) -> ModelConfig:
    """The :class:`ModelConfig` in a checkpoint's header, without reading its tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint not found: {path}; give an existing .safetensors file (from training "
            "or `heatpose weights import`) or a weight zoo name (`heatpose weights list`)"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata()
    except Exception as e:  # safetensors raises its own error types for malformed files
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({e}); a published .pth must be "
            f"converted first: heatpose weights import {path} --out model.safetensors"
        ) from e
    if metadata and DETECTOR_KEY in metadata:
        raise CheckpointError(
            f"{path} is a person detector's weights, not a pose model; give a pose checkpoint"
        )
    if not metadata or METADATA_KEY not in metadata:
        raise CheckpointError(
            f"{path} has no '{METADATA_KEY}' metadata: it is not a heatpose model. Convert "
            "published weights with `heatpose weights import`, or write models with "
            "models.weights.checkpoint.save"
        )
    try:
        return ModelConfig.from_dict(json.loads(metadata[METADATA_KEY]))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: the heatpose metadata is not valid JSON ({e})") from e
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from e


def _check_fits(path: str | Path, config: ModelConfig, shapes: dict[str, tuple[int, ...]]) -> None:
    problem = _mismatch(_expected_shapes(config), shapes)
    if problem:
        raise CheckpointError(
            f"{path}: the weights do not fit the model its header describes (ResNet-"
            f"{config.depth}, K={config.spec.num_keypoints}): {problem}; re-export the file"
        )


def verify(path: str | Path) -> ModelConfig:
    """The header's config, checked against the tensor names and shapes, reading no tensor data.

    What :func:`load` would refuse, found in milliseconds (the service checks this before
    starting): e.g. a header naming ResNet-50 over ResNet-18 weights.

    Raises:
        CheckpointError: as :func:`read_config`, or the tensors do not fit the header's model.
    """
    config = read_config(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception as e:
        raise CheckpointError(f"cannot read the tensors of {path} ({e}); re-create it") from e
    _check_fits(path, config, shapes)
    return config


def load(path: str | Path, device: str | torch.device = "cpu") -> ModelBundle:
    """Rebuild the model of a checkpoint from the file alone; eval mode, on ``device``."""
    config = read_config(path)
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as e:
        raise CheckpointError(f"cannot read the tensors of {path} ({e}); re-create it") from e
    _check_fits(path, config, {k: tuple(v.shape) for k, v in tensors.items()})
    with torch.device("meta"):
        model = build_model(config)
    model.load_state_dict(tensors, strict=True, assign=True)
    return ModelBundle(model=model.to(device).eval(), config=config)


# ---- published .pth files -------------------------------------------------------------------

_DEPTH_BY_BLOCKS = {(False, 2): 18, (False, 6): 34, (True, 6): 50, (True, 23): 101, (True, 36): 152}
_MMPOSE_PREFIXES = ("backbone.", "head.", "keypoint_head.")  # keypoint_head: mmpose 0.x


def _numpy_allow_list() -> list[Any]:
    """What ``weights_only`` loading needs for numpy arrays and scalars in mmpose's ``meta``.

    Pickles name functions by module path: numpy 1 wrote ``numpy.core.multiarray``, numpy 2
    ``numpy._core.multiarray``, so both names are allowed. Rebuilding a dtype calls BUILD on an
    instance of its class (``numpy.dtypes.Float64DType`` ...), so those classes are listed too.
    """
    try:
        multiarray: Any = importlib.import_module("numpy._core.multiarray")  # numpy >= 1.26
    except ImportError:  # pragma: no cover - older numpy
        multiarray = importlib.import_module("numpy.core.multiarray")
    allowed: list[Any] = [(np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype")]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed.append((multiarray._reconstruct, f"{module}._reconstruct"))
        allowed.append((multiarray.scalar, f"{module}.scalar"))
    allowed += sorted({type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFDGSU"}, key=str)
    return allowed


def _read_pth(src: Path) -> Any:
    with src.open("rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # zip, or pickle PROTO
        raise CheckpointError(f"{src} is not a PyTorch checkpoint; give the .pth as published")
    try:
        with torch.serialization.safe_globals(_numpy_allow_list()):
            return torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        paragraphs = [p.strip() for p in str(e).split("\n\n") if p.strip()]
        detail = [p for p in paragraphs[1:] if not p.startswith("Check the documentation")]
        raise CheckpointError(
            f"refused to load {src}: it holds more than tensors, containers and numpy arrays, "
            f"and loading it could run code ({detail[-1] if detail else 'unsupported content'}). "
            "If you trust the file, re-save only its state dict and import that"
        ) from None
    except Exception as e:
        raise CheckpointError(f"cannot read {src} ({type(e).__name__}: {e})") from e


def _state_dict(obj: Any, src: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the ``meta`` dict of a loaded file; strips a DataParallel ``module.``."""
    meta: dict[str, Any] = {}
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        raw_meta = obj.get("meta")
        meta = raw_meta if isinstance(raw_meta, dict) else {}
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{src} holds no state dict of tensors; is it a model checkpoint?")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj, meta


def _detect_layout(keys: list[str]) -> str | None:
    if any(k.startswith("backbone.") for k in keys):
        return "mmpose"
    if any(k.startswith(("conv1.", "layer1.")) for k in keys):
        return "simplebaselines"
    return None


def _rename(state: dict[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    if layout == "simplebaselines":
        return dict(state)
    out = {}
    for k, v in state.items():
        prefix = next((p for p in _MMPOSE_PREFIXES if k.startswith(p)), "")
        out[k[len(prefix) :]] = v
    return out


def _infer_depth(state: dict[str, torch.Tensor], src: Path) -> int:
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"layer3\.(\d+)\.", k))}
    bottleneck = any(re.match(r"layer1\.\d+\.conv3\.", k) for k in state)
    depth = _DEPTH_BY_BLOCKS.get((bottleneck, max(blocks) + 1 if blocks else 0))
    if depth is None:
        kind = "Bottleneck" if bottleneck else "BasicBlock"
        raise CheckpointError(
            f"{src}: cannot tell the ResNet depth ({len(blocks)} {kind} blocks in layer3); "
            f"heatpose supports ResNet {DEPTHS}. Check --layout"
        )
    return depth


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _plain_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The short scalar entries of a source's ``meta`` (epoch, versions, ...), JSON-ready."""
    out = {}
    for k, v in meta.items():
        v = v.item() if isinstance(v, np.generic) else v
        if isinstance(v, (bool, int, float)) or (isinstance(v, str) and len(v) <= 200):
            out[str(k)] = v
    return out


def import_published(
    src: str | Path,
    dst: str | Path,
    layout: str | None = None,
    name: str | None = None,
    *,
    decode_mode: str = "shift",
    codec: HeatmapCodec | None = None,
    spec: KeypointSpec = COCO_KEYPOINTS,
    metrics: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
) -> ModelConfig:
    """Convert a published PoseResNet ``.pth`` into a heatpose ``.safetensors`` at ``dst``.

    Args:
        src: an mmpose 1.x file (``{'meta', 'state_dict'}``, ``backbone.*``/``head.*`` keys, RGB
            input) or an original SimpleBaselines one (bare state dict, BGR input).
        layout: ``"mmpose" | "simplebaselines"``; ``None`` = detected from the keys.
        name: model name; ``None`` = the file name without ``.pth``/``.pt``/``.tar``.
        decode_mode: the decode the weights were published with (``shift``; ``dark`` for DARK).
        codec: heatmap codec; ``None`` = the default 256x192 (h x w) one.
        spec: keypoint spec; its K must equal the file's number of heatmaps.
        metrics, provenance: stored in the config (provenance adds to source, sha256, ...).

    Depth comes from the layer3 block count and block type, K from ``final_layer``. Keys and
    shapes are checked strictly; a mismatch names the missing and unexpected keys.
    """
    src = Path(src)
    if not src.is_file():
        raise CheckpointError(f"file not found: {src}; give the path of a downloaded .pth file")
    state, meta = _state_dict(_read_pth(src), src)
    if "bbox_head.rtm_cls.0.weight" in state:
        raise CheckpointError(
            f"{src} is an RTMDet person detector's checkpoint, not a pose model: give it as the "
            "detector (HEATPOSE_DETECTOR=FILE, --detector FILE) as it is, nothing to import"
        )
    detected = _detect_layout(list(state))
    if layout is not None and layout not in LAYOUTS:
        raise CheckpointError(f"unknown layout {layout!r}; use one of {LAYOUTS}")
    layout = layout or detected
    if layout is None:
        raise CheckpointError(
            f"{src}: cannot tell the layout from its keys ({_listed(sorted(state), 4)}); "
            f"pass --layout {'|'.join(LAYOUTS)}"
        )
    hint = f" (its keys look like {detected})" if detected not in (None, layout) else ""
    state = _rename(state, layout)
    if "final_layer.weight" not in state:
        raise CheckpointError(f"{src}: no final_layer.weight in the {layout} layout{hint}")
    k = state["final_layer.weight"].shape[0]
    if k != spec.num_keypoints:
        raise CheckpointError(f"{src} has {k} heatmaps, the keypoint spec {spec.num_keypoints}")
    config = ModelConfig(
        name=name or re.sub(r"(\.pth|\.pt|\.tar)+$", "", src.name),
        depth=_infer_depth(state, src),
        spec=spec,
        codec_params=(codec or HeatmapCodec()).to_dict(),
        color_order="RGB" if layout == "mmpose" else "BGR",
        decode_mode=decode_mode,
        provenance={
            "source": src.name,
            "sha256": file_sha256(src),
            "layout": layout,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source_meta": _plain_meta(meta),
            **(provenance or {}),
        },
        metrics=metrics or {},
    )
    expected = _expected_shapes(config)
    for key in expected:  # files older than PyTorch 0.4.1 have no BN batch counters
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=torch.long)
    problem = _mismatch(expected, {key: tuple(v.shape) for key, v in state.items()})
    if problem:
        raise CheckpointError(f"{src} does not fit the {layout} layout{hint}: {problem}")
    _write(dst, state, METADATA_KEY, config.to_dict())
    return config


# ---- third-party state dicts (the person detector's) ----------------------------------------


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a bare state dict: a ``.safetensors`` file, or a ``.pth`` read with
    ``torch.load(weights_only=True)`` and the numpy allow-list (nothing pickled runs code).

    A ``{'state_dict': ...}`` wrapper and a DataParallel ``module.`` prefix are removed.

    Raises:
        CheckpointError: missing or unreadable file, or not a state dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"file not found: {path}; give a .pth or .safetensors state dict")
    if path.suffix != ".safetensors":
        return _state_dict(_read_pth(path), path)[0]
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:
        raise CheckpointError(f"cannot read the tensors of {path} ({e})") from e


def check_state_dict(
    state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], what: str
) -> None:
    """Raise :class:`CheckpointError` naming missing/unexpected keys and wrong shapes when
    ``state`` does not match ``expected`` (key -> shape); ``what`` names the file and model."""
    problem = _mismatch(expected, {k: tuple(v.shape) for k, v in state.items()})
    if problem:
        raise CheckpointError(f"{what}: {problem}")


def save_state_dict(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]
) -> None:
    """Atomically write a bare state dict as ``.safetensors``; ``metadata`` (JSON-ready) goes
    into the header under :data:`DETECTOR_KEY`."""
    _write(path, tensors, DETECTOR_KEY, metadata)
