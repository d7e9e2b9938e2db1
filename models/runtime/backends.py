"""Backends: the network's forward call, and nothing else, run by torch, ONNX Runtime or TensorRT.

A backend is called with the predictor's normalised input ``(B, 3, h, w)`` float32 on the
predictor's device (input px) and returns ``(B, K, H, W)`` heatmaps on that device (heatmap px).
Colour order and normalisation (:func:`models.inference.predictor.normalize_crops`), the flip test,
decoding and everything after stay in :class:`models.inference.predictor.Predictor`, shared by all
backends.

- ``torch`` (default): the module itself.
- ``compile``: ``torch.compile`` of the module: batch 1 and dynamic-batch graphs, each for a
  range of sizes (warmed by :mod:`models.inference.warmup`).
- ``onnxruntime``: the model exported by :mod:`models.runtime.export`, run by ONNX Runtime: the CPU
  execution provider on the CPU, the CUDA one on CUDA devices (``heatpose[gpu]``).
- ``tensorrt``: ONNX Runtime's TensorRT execution provider, fp16 engines for a few batch-size
  profiles; CUDA hosts with onnxruntime-gpu and TensorRT only.

:class:`Bucketed` wraps any of them so each call runs at one of a few fixed batch sizes
(``HEATPOSE_BATCH_BUCKETS``): CUDA graphs and TensorRT profiles are then reused.

The ONNX file and the TensorRT engines are built on first start and cached under
``cache_dir`` (default ``$HEATPOSE_HOME/backends``), keyed by
:func:`models.weights.weights_digest.weights_sha256`, so a restart with the same weights reuses
them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from models.runtime.export import (
    INPUT_NAME,
    OUTPUT_NAME,
    SOURCE_KEY,
    ExportError,
    export_onnx,
    read_onnx_config,
    require,
)
from models.weights.model_config import ModelConfig
from models.weights.weights_digest import weights_sha256
from models.weights.zoo import heatpose_home

BACKENDS = ("torch", "onnxruntime", "tensorrt", "compile")
TRT_PROFILES = ((1, 8, 8), (9, 32, 32), (33, 128, 64))
"""TensorRT profiles ``(min, max, opt)`` of the batch axis; larger batches are split."""


class BackendError(ValueError):
    """A backend that cannot run here; the message names the setting and the fix."""


class Backend(Protocol):
    """The forward call: ``(B, 3, h, w)`` normalised float32 -> ``(B, K, H, W)`` heatmaps."""

    name: str

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


def _setting(name: str) -> str:
    return f"backend {name!r} (HEATPOSE_BACKEND={name})"


def cached_onnx(
    model: torch.nn.Module,
    config: ModelConfig,
    cache_dir: Path,
    *,
    source: torch.nn.Module | None = None,
) -> Path:
    """The model's ONNX export under ``cache_dir``, written on first use (``<sha256>.onnx``):
    named by the sha256 of ``source``'s weights (the checkpoint's network, when ``model`` is
    its BatchNorm-folded copy), else of ``model``'s."""
    path = cache_dir / f"{weights_sha256(model if source is None else source, config)}.onnx"
    if not path.is_file():
        export_onnx(model, config, path)
    return path


class TorchBackend:
    """The module itself (eager PyTorch)."""

    name = "torch"

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class CompileBackend:
    """``torch.compile`` of the module; every batch size after warm-up reuses a compiled graph.

    Batch 1 gets its own graph (torch specialises sizes 0 and 1); the batch axis of larger
    inputs is marked dynamic, so a few more graphs serve every batch of 2 or more: one per range
    of sizes over which no operator changes its choice (on the CPU a ResNet has 2..15 and 16..,
    where 1x1 convolutions switch to oneDNN). :func:`models.inference.warmup.warmup_sizes` covers
    them. Inputs are made channels_last first (what
    :func:`~models.inference.predictor.normalize_crops` gives; the flip test's concatenation may not
    keep it): graphs guard on strides, so one layout for every call path keeps a warmed graph valid.
    """

    name = "compile"

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.fn: Callable[[torch.Tensor], torch.Tensor] = torch.compile(model)  # type: ignore[assignment]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        torch._dynamo.maybe_mark_dynamic(x, 0)
        return self.fn(x)


class OrtBackend:
    """An ONNX Runtime session over an exported model (the pose network's, or a detector's).

    Args:
        path: the ``.onnx`` file (:func:`models.runtime.export.export_onnx`).
        device: CPU, or a CUDA device (data stays on it through ORT's I/O binding).
        providers: ORT execution providers with options, in order of preference.
        outputs: ``(name, shape of one row)`` of each output, e.g. ``[("heatmaps", (K, H, W))]``.
        max_batch: larger inputs are run in chunks of this size (``None`` = no limit).
    """

    def __init__(
        self,
        path: Path,
        *,
        device: torch.device,
        providers: Sequence[Any],
        outputs: Sequence[tuple[str, tuple[int, ...]]],
        name: str = "onnxruntime",
        max_batch: int | None = None,
    ) -> None:
        ort = require("onnxruntime")
        self.name, self.device, self.outputs, self.max_batch = name, device, outputs, max_batch
        self.path = Path(path)  # the file served (/v1/model and /metrics show its sha256)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = torch.get_num_threads()  # HEATPOSE_TORCH_THREADS applies
        self.session = ort.InferenceSession(str(path), options, providers=list(providers))
        self.providers = self.session.get_providers()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The first output (the pose network's heatmaps)."""
        return self.run_all(x)[0]

    def run_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every output, in the order of ``outputs``, on ``x``'s device."""
        step = self.max_batch or x.shape[0]
        parts = [self._run(x[i : i + step]) for i in range(0, x.shape[0], step)]
        return parts[0] if len(parts) == 1 else [torch.cat(p) for p in zip(*parts, strict=True)]

    def _run(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = x.float().contiguous()  # NCHW, as exported
        names = [name for name, _ in self.outputs]
        if self.device.type == "cpu":
            return [torch.from_numpy(o) for o in self.session.run(names, {INPUT_NAME: x.numpy()})]
        binding = self.session.io_binding()
        index = x.device.index or 0
        binding.bind_input(INPUT_NAME, "cuda", index, np.float32, tuple(x.shape), x.data_ptr())
        outs = []
        for name, row in self.outputs:
            out = torch.empty((x.shape[0], *row), device=x.device, dtype=torch.float32)
            binding.bind_output(name, "cuda", index, np.float32, tuple(out.shape), out.data_ptr())
            outs.append(out)
        torch.cuda.current_stream(x.device).synchronize()  # x is written before ORT reads it
        self.session.run_with_iobinding(binding)
        return outs


class Bucketed:
    """``inner`` run at fixed batch sizes: an input of ``n`` rows is padded with zero rows to
    the smallest bucket ``>= n`` and the padding's output dropped (``n`` above every bucket
    runs as it is). Exact: in eval mode each row of a batch is computed on its own (BatchNorm
    uses its running statistics), so the padding cannot change the real rows' heatmaps.

    Args:
        inner: the backend; ``buckets``: increasing batch sizes, e.g. ``(8, 16, 32, 64)``.
    """

    def __init__(self, inner: Backend, buckets: Sequence[int]) -> None:
        self.inner, self.buckets, self.name = inner, tuple(sorted(buckets)), inner.name

    def size_for(self, n: int) -> int:
        """The batch size an input of ``n`` rows runs at."""
        return next((b for b in self.buckets if b >= n), n)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        size = self.size_for(n)
        if size == n:
            return self.inner(x)
        padded = torch.cat([x, x.new_zeros((size - n, *x.shape[1:]))])
        if x.is_contiguous(memory_format=torch.channels_last):
            padded = padded.contiguous(memory_format=torch.channels_last)
        return self.inner(padded)[:n]


def onnxruntime_backend(
    path: Path, device: torch.device, outputs: Sequence[tuple[str, tuple[int, ...]]]
) -> OrtBackend:
    """ONNX Runtime on ``device``: the CPU execution provider, or the CUDA one.

    Raises:
        BackendError: onnxruntime-gpu missing on a CUDA device, or a device it cannot use.
    """
    ort = require("onnxruntime")
    if device.type == "cpu":
        providers: list[Any] = ["CPUExecutionProvider"]
    elif device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BackendError(
                f"{_setting('onnxruntime')} on {device} needs onnxruntime-gpu: "
                "pip install 'heatpose[gpu]' (it replaces the CPU-only onnxruntime)"
            )
        providers = [("CUDAExecutionProvider", {"device_id": device.index or 0})]
    else:
        raise BackendError(f"{_setting('onnxruntime')} runs on cpu or cuda, not {device}")
    return OrtBackend(path, device=device, providers=providers, outputs=outputs)


def tensorrt_backend(
    path: Path,
    device: torch.device,
    outputs: Sequence[tuple[str, tuple[int, ...]]],
    engines: Path,
) -> OrtBackend:
    """ONNX Runtime's TensorRT execution provider on ``device``: fp16 engines of
    :data:`TRT_PROFILES`, built (or loaded from ``engines``) now, not mid-request.

    Raises:
        BackendError: no CUDA device, no TensorRT provider, or TensorRT failed to load.
    """
    setting = _setting("tensorrt")
    if device.type != "cuda" or not torch.cuda.is_available():
        raise BackendError(
            f"{setting} needs a CUDA device (this one is {device}): use HEATPOSE_BACKEND=torch, "
            "onnxruntime or compile on this host"
        )
    ort = require("onnxruntime")
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        raise BackendError(
            f"{setting} needs ONNX Runtime's TensorRT execution provider: "
            "pip install 'heatpose[gpu]' and the TensorRT libraries it was built for"
        )
    engines.mkdir(parents=True, exist_ok=True)
    shape = "x".join(str(v) for v in (3, *_input_hw(path)))

    def profiles(col: int) -> str:
        return ",".join(f"{INPUT_NAME}:{p[col]}x{shape}" for p in TRT_PROFILES)

    index = device.index or 0
    trt = {
        "device_id": index,
        "trt_fp16_enable": True,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(engines),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(engines),
        "trt_profile_min_shapes": profiles(0),
        "trt_profile_max_shapes": profiles(1),
        "trt_profile_opt_shapes": profiles(2),
    }
    providers = [
        ("TensorrtExecutionProvider", trt),
        ("CUDAExecutionProvider", {"device_id": index}),
    ]
    backend = OrtBackend(
        path,
        device=device,
        providers=providers,
        outputs=outputs,
        name="tensorrt",
        max_batch=TRT_PROFILES[-1][1],
    )
    if backend.providers[0] != "TensorrtExecutionProvider":  # ORT falls back silently
        raise BackendError(f"{setting}: TensorRT failed to load (providers {backend.providers})")
    for p in TRT_PROFILES:  # build (or load) the engine of every profile now, not mid-request
        backend(torch.zeros(p[2], 3, *_input_hw(path), device=device))
    return backend


def _input_hw(path: Path) -> tuple[int, int]:
    """``(h, w)`` of the graph's input (static in every model :mod:`models.runtime.export`
    writes)."""
    onnx = require("onnx")
    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape
    h, w = (d.dim_value for d in dims.dim[2:])
    return int(h), int(w)


def _outputs(config: ModelConfig) -> list[tuple[str, tuple[int, ...]]]:
    """The pose graph's one output: ``(K, H, W)`` heatmaps a crop."""
    hw, hh = config.codec.heatmap_size
    return [(OUTPUT_NAME, (config.spec.num_keypoints, int(hh), int(hw)))]


def create(
    name: str,
    model: torch.nn.Module,
    config: ModelConfig,
    *,
    device: torch.device,
    cache_dir: str | Path | None = None,
    onnx_path: str | Path | None = None,
    source: torch.nn.Module | None = None,
) -> Backend:
    """The backend ``name`` for ``model`` (already on ``device``, eval mode).

    Args:
        name: one of :data:`BACKENDS`.
        cache_dir: where ONNX files and TensorRT engines are kept; ``None`` =
            ``$HEATPOSE_HOME/backends``.
        onnx_path: ``onnxruntime`` only: run this ``.onnx`` (e.g. an INT8 one from
            :mod:`models.inference.quantize`) instead of exporting ``model``; its stored config must
            equal ``config`` (``HEATPOSE_ONNX``).
        source: the checkpoint's network as loaded, when ``model`` is a copy of it with other
            tensors (BatchNorm folded): the weights an ``onnx_path`` must have come from, and
            whose sha256 names the cached export.

    Raises:
        BackendError: an unknown name, a missing package, or a backend this host cannot run;
            the message names the setting and what to do.
    """
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r} (HEATPOSE_BACKEND): one of {BACKENDS}")
    if onnx_path is not None:
        try:
            path = served_onnx(onnx_path, name, model if source is None else source, config)
        except ExportError as e:
            raise BackendError(f"HEATPOSE_ONNX={onnx_path}: {e}") from e
        return onnxruntime_backend(path, device, _outputs(config))
    if name == "torch":
        return TorchBackend(model)
    if name == "compile":
        return CompileBackend(model)
    root = Path(cache_dir) if cache_dir is not None else heatpose_home() / "backends"
    outputs = _outputs(config)
    try:
        if name == "tensorrt" and device.type != "cuda":
            return tensorrt_backend(Path(), device, outputs, root)  # raises the CUDA-only error
        path = cached_onnx(model, config, root, source=source)
        if name == "onnxruntime":
            return onnxruntime_backend(path, device, outputs)
        return tensorrt_backend(path, device, outputs, root / f"{path.stem}.trt")
    except ExportError as e:
        raise BackendError(f"{_setting(name)}: {e}") from e


def served_onnx(
    path: str | Path, backend: str, model: torch.nn.Module, config: ModelConfig
) -> Path:
    """``path`` checked as the file to serve for ``model`` (``HEATPOSE_ONNX``).

    It must be a heatpose export (an INT8 one from :mod:`models.inference.quantize`, say) whose
    stored config equals ``config`` and, where it records the weights it came from
    (:data:`~models.runtime.export.SOURCE_KEY`, INT8 exports do), come from ``model``'s.

    Raises:
        ExportError: another backend than ``onnxruntime``, no such file, not a heatpose ONNX
            file, another config or other weights; the message says which.
    """
    if backend != "onnxruntime":
        raise ExportError(
            f"a given .onnx file is served by HEATPOSE_BACKEND=onnxruntime only, not {backend}"
        )
    p = Path(path)
    stored = read_onnx_config(p)
    if stored != config:
        raise ExportError(
            f"{p} stores the config of {stored.name!r} (ResNet-{stored.depth}, input "
            f"{stored.input_size}), not the checkpoint's {config.name!r}: export it from "
            "HEATPOSE_CHECKPOINT"
        )
    onnx = require("onnx")
    meta = {m.key: m.value for m in onnx.load(str(p), load_external_data=False).metadata_props}
    if SOURCE_KEY in meta and meta[SOURCE_KEY] != weights_sha256(model, config):
        raise ExportError(f"{p} was exported from other weights than HEATPOSE_CHECKPOINT's")
    return p
