"""ONNX artifacts: export a model, read its config back, check it against torch.

``heatpose export CHECKPOINT --format onnx --out X.onnx`` (:mod:`heatpose_cli.export`) writes one.

An exported ``.onnx`` is as self-describing as our ``.safetensors``: the model's
:meth:`~models.weights.model_config.ModelConfig.to_dict` JSON sits in the ONNX ``metadata_props``
under the key ``heatpose``, and :func:`read_onnx_config` rebuilds the config from the file alone.
The graph is the network only: input ``input`` ``(B, 3, h, w)`` float32 normalised as
:func:`models.inference.predictor.normalize_crops` makes it (input px), output ``heatmaps`` ``(B, K,
H, W)`` float32 (heatmap px); the batch axis ``B`` is dynamic. Colour order, normalisation, flip
test and decoding stay with the predictor.

This module owns the ONNX artifact (a derived file: it is never loaded back into torch; the
weights' source of truth stays :mod:`models.weights.checkpoint`). ``onnx`` and ``onnxruntime`` are
optional (``pip install 'heatpose[onnx]'``) and, like torch, imported only when needed, so
``heatpose export --help`` stays instant.
"""

from __future__ import annotations

import copy
import importlib
import io
import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.weights.atomic_file import publish

if TYPE_CHECKING:
    import torch

    from models.weights.model_config import ModelConfig

FORMATS = ("onnx",)
INPUT_NAME = "input"
OUTPUT_NAME = "heatmaps"
METADATA_KEY = "heatpose"  # the same key as the .safetensors header's
SOURCE_KEY = "heatpose_weights_sha256"
"""ONNX metadata of INT8 exports (:mod:`models.inference.quantize`):
:func:`models.weights.weights_digest.weights_sha256` of the checkpoint the file came from."""
DEFAULT_OPSET = 17
OPSETS = range(11, 21)  # what torch's TorchScript exporter writes (2.14: up to 20)
INSTALL_HINT = "pip install 'heatpose[onnx]' (CUDA hosts: 'heatpose[gpu]')"


class ExportError(ValueError):
    """An export or an ONNX file that cannot be used; the message says how to fix it."""


def require(module: str) -> Any:
    """Import an optional ONNX package, or raise :class:`ExportError` saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ExportError(f"the {module} package is not installed: {INSTALL_HINT}") from e


def onnx_bytes(model: torch.nn.Module, config: ModelConfig, *, opset: int = DEFAULT_OPSET) -> bytes:
    """The serialised, checked ONNX model of ``model`` with ``config`` in its metadata.

    Exported with torch's TorchScript-based exporter (``dynamo=False``): it needs only ``onnx``,
    while the dynamo exporter (torch's default) also needs ``onnxscript`` and takes longer for
    the same graph. The model is traced on a CPU float32 copy; ``model`` is left as it was.

    Raises:
        ExportError: ``onnx`` is missing or the checker rejects the graph.
    """
    w, h = config.input_size
    meta = {METADATA_KEY: json.dumps(config.to_dict())}
    return graph_bytes(model, (h, w), outputs=[OUTPUT_NAME], metadata=meta, opset=opset)


def graph_bytes(
    model: torch.nn.Module,
    input_hw: tuple[int, int],
    *,
    outputs: Sequence[str],
    metadata: dict[str, str],
    opset: int = DEFAULT_OPSET,
) -> bytes:
    """``model`` (one ``(B, 3, h, w)`` float32 input :data:`INPUT_NAME`; ``outputs`` named in
    order, each with the batch first) as a checked ONNX graph with a dynamic batch axis and
    ``metadata`` in its ``metadata_props``; traced on a CPU float32 copy.

    Raises:
        ExportError: ``onnx`` is missing or the checker rejects the graph.
    """
    import torch  # here: `heatpose export --help` imports this module and stays torch-free

    onnx = require("onnx")
    net = copy.deepcopy(model).cpu().float().eval().to(memory_format=torch.contiguous_format)
    dummy = torch.zeros(2, 3, *input_hw)  # batch 2: nothing may specialise on a batch of one
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            net,
            (dummy,),
            buf,  # type: ignore[arg-type]  # a file object: the TorchScript exporter takes one
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=list(outputs),
            dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *outputs)},
            opset_version=opset,
        )
        produced = net(dummy)
    proto = onnx.load_from_string(buf.getvalue())
    tensors = [produced] if isinstance(produced, torch.Tensor) else list(produced)
    for out, tensor in zip(proto.graph.output, tensors, strict=True):
        for dim, size in zip(out.type.tensor_type.shape.dim[1:], tensor.shape[1:], strict=True):
            dim.dim_value = int(size)  # static past the batch axis, where tracing lost it
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "heatpose"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"the exported graph fails onnx.checker: {e}") from e
    return bytes(proto.SerializeToString())


def export_onnx(
    model: torch.nn.Module, config: ModelConfig, out: str | Path, *, opset: int = DEFAULT_OPSET
) -> Path:
    """Write :func:`onnx_bytes` to ``out`` atomically (a temporary file, then a rename)."""
    return write_atomically(out, onnx_bytes(model, config, opset=opset))


def write_atomically(out: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``out`` through a temporary file and a rename (never half a file)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        publish(tmp, out)  # the umask's mode, not mkstemp's 0600
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def read_onnx_config(path: str | Path) -> ModelConfig:
    """The :class:`ModelConfig` stored in an exported ``.onnx`` file's metadata.

    Raises:
        ExportError: no such file, not ONNX, or no heatpose metadata.
    """
    # here: models.weights.model_config imports torch (the codec); `heatpose export --help` must not
    from models.weights.model_config import ModelConfig

    text = read_metadata(path, METADATA_KEY)
    try:
        return ModelConfig.from_dict(json.loads(text))
    except ValueError as e:
        raise ExportError(f"{path}: {e}") from e


def read_metadata(path: str | Path, key: str) -> str:
    """The ``metadata_props`` entry ``key`` of an ONNX file (the graph's weights not read).

    Raises:
        ExportError: no such file, not ONNX, or no such entry.
    """
    onnx = require("onnx")
    p = Path(path)
    if not p.is_file():
        raise ExportError(f"{p}: no such file")
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends
        raise ExportError(f"{p}: not an ONNX model ({e})") from e
    meta = {m.key: m.value for m in proto.metadata_props}
    if key not in meta:
        raise ExportError(f"{p}: no '{key}' metadata: export it with `heatpose export`")
    return str(meta[key])


def max_abs_diff(
    model: torch.nn.Module, path: str | Path, *, batch_sizes: Sequence[int] = (1, 3), seed: int = 0
) -> float:
    """Largest ``|torch - onnxruntime|`` heatmap difference on random inputs (CPU, float32).

    Args:
        model: the torch network the file was exported from.
        path: the ``.onnx`` file.
        batch_sizes: batches of standard-normal ``(B, 3, h, w)`` inputs to compare.
    """
    import numpy as np
    import torch  # here: `heatpose export --help` imports this module and stays torch-free

    ort = require("onnxruntime")
    config = read_onnx_config(path)
    w, h = config.input_size
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    net = model.cpu().float().eval()
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for b in batch_sizes:
        x = torch.randn(b, 3, h, w, generator=gen)
        with torch.inference_mode():
            ref = net(x).numpy()
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst
