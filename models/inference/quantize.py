"""INT8 ONNX models for CPU serving: ONNX Runtime static quantization, calibrated on crops.

    heatpose export CHECKPOINT --format onnx --int8 --calibration-data DIR [--calibration N]
        --out X.onnx

:func:`quantize_onnx` turns an fp32 export (:func:`models.runtime.export.export_onnx`) into a QDQ
model (``QuantizeLinear``/``DequantizeLinear`` pairs around every convolution: int8 weights, one
scale per output channel; uint8 activations with ranges calibrated (min/max) on the crops given).
The file keeps the fp32 file's ``heatpose`` metadata (its :class:`ModelConfig`), so the
``onnxruntime`` backend can serve it (``HEATPOSE_ONNX``, :func:`models.runtime.backends.create`).

Calibration crops come from the caller as an array: :func:`calibration_crops` cuts them out of
a COCO-format data set (``DATA/annotations/*_keypoints_<split>.json``, ``DATA/<split>/``, as
``heatpose synth`` writes it) exactly as the service does (:meth:`Predictor.crop`,
:func:`~models.inference.predictor.normalize_crops`); it reads the annotation file as plain JSON.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch

from models.inference.predictor import Predictor, normalize_crops
from models.runtime.export import INPUT_NAME, METADATA_KEY, SOURCE_KEY, ExportError, require
from models.weights.atomic_file import publish

if TYPE_CHECKING:
    from models.weights.checkpoint import ModelBundle

__all__ = [
    "SOURCE_KEY",
    "CalibrationError",
    "calibration_crops",
    "int8_vs_fp32",
    "quantize_onnx",
    "quantized_op_types",
]


class CalibrationError(ValueError):
    """The calibration data cannot be read; the message names the flag or the file."""


def _annotation_file(data: Path, split: str) -> Path:
    person = data / "annotations" / f"person_keypoints_{split}.json"
    if person.is_file():
        return person
    others = sorted((data / "annotations").glob(f"*_keypoints_{split}.json"))
    if len(others) != 1:
        raise CalibrationError(
            f"--calibration-data {data}: no annotations/person_keypoints_{split}.json "
            "(a COCO-format data set, as `heatpose synth --out DIR` writes it)"
        )
    return others[0]


def calibration_crops(
    bundle: ModelBundle, data: str | Path, *, count: int, split: str = "train", seed: int = 0
) -> np.ndarray:
    """``count`` person crops of a COCO-format data set, as the model's normalised input.

    Persons (annotations with keypoints and a box of positive area) are drawn at random
    (``seed``), each image decoded once (RGB), cut by :meth:`Predictor.crop` with the person's
    box and normalised by :func:`~models.inference.predictor.normalize_crops`.

    Returns:
        ``(count, 3, h, w)`` float32 NCHW (input px), or fewer when the set has fewer persons.

    Raises:
        CalibrationError: the directory, annotation file or an image is missing or unreadable;
            the message names ``--calibration-data`` or the file.
    """
    root = Path(data)
    if not root.is_dir():
        raise CalibrationError(f"--calibration-data {root}: no such directory")
    path = _annotation_file(root, split)
    try:
        doc = json.loads(path.read_text())
        files = {im["id"]: im["file_name"] for im in doc["images"]}
        persons = [
            (a["image_id"], a["bbox"])
            for a in doc["annotations"]
            if a.get("num_keypoints", 0) > 0 and a["bbox"][2] > 0 and a["bbox"][3] > 0
        ]
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise CalibrationError(f"{path}: not a COCO keypoint annotation file ({e})") from e
    if not persons:
        raise CalibrationError(f"{path}: no annotated person to calibrate on")
    order = np.random.default_rng(seed).permutation(len(persons))[:count]
    chosen: dict[int, list[list[float]]] = {}
    for i in sorted(order):
        image_id, (x, y, w, h) = persons[i]
        chosen.setdefault(image_id, []).append([x, y, x + w, y + h])
    predictor = Predictor(bundle, "cpu", flip_test=False)
    crops = []
    for image_id, boxes in chosen.items():
        file = root / split / files[image_id]
        bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if bgr is None:
            raise CalibrationError(f"--calibration-data: cannot read the image {file}")
        crops.append(predictor.crop(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), np.array(boxes)).images)
    x = normalize_crops(np.concatenate(crops), bundle.config, torch.device("cpu"))
    return np.ascontiguousarray(x.numpy())


class _Batches:
    """ONNX Runtime's calibration data reader over an array, ``batch`` rows a call."""

    def __init__(self, crops: np.ndarray, batch: int) -> None:
        self.parts = iter([crops[i : i + batch] for i in range(0, len(crops), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        part = next(self.parts, None)
        return None if part is None else {INPUT_NAME: part}


def quantize_onnx(
    fp32: str | Path,
    out: str | Path,
    crops: np.ndarray,
    *,
    batch: int = 8,
    reduce_range: bool = False,
    source_sha256: str | None = None,
) -> Path:
    """Static INT8 quantization of an fp32 export (QDQ, per-channel weights), written atomically.

    Args:
        fp32: the ``.onnx`` written by :func:`models.runtime.export.export_onnx`.
        out: the INT8 ``.onnx`` to write.
        crops: ``(N, 3, h, w)`` float32 normalised calibration inputs (:func:`calibration_crops`).
        batch: calibration rows per ONNX Runtime call.
        reduce_range: 7-bit weights (for CPUs without VNNI where 8 bits may saturate).
        source_sha256: recorded under :data:`SOURCE_KEY` (the checkpoint's weights).

    Raises:
        ExportError: onnxruntime/onnx missing, or no calibration crops.
    """
    onnx = require("onnx")
    require("onnxruntime")
    # onnxruntime is optional (heatpose[onnx]): imported where it is needed, after require()
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    if crops.ndim != 4 or len(crops) == 0:
        raise ExportError(f"calibration needs (N, 3, h, w) crops, got shape {crops.shape}")
    src = Path(fp32)
    out = Path(out)
    meta = {m.key: m.value for m in onnx.load(str(src), load_external_data=False).metadata_props}
    if METADATA_KEY not in meta:
        raise ExportError(f"{src}: no '{METADATA_KEY}' metadata: export it with `heatpose export`")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        pre, q = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(src), str(pre))
        options: dict[str, Any] = {"ActivationSymmetric": False, "WeightSymmetric": True}
        quantize_static(
            str(pre),
            str(q),
            _Batches(crops.astype(np.float32), batch),  # type: ignore[arg-type]
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            extra_options=options,
        )
        proto = onnx.load(str(q))
        del proto.metadata_props[:]
        if source_sha256:
            meta[SOURCE_KEY] = source_sha256
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.producer_name = "heatpose"
        onnx.checker.check_model(proto)
        part = Path(tmp) / "out.onnx"
        onnx.save(proto, str(part))
        publish(part, out)
    return out


def int8_vs_fp32(fp32: str | Path, int8: str | Path, crops: np.ndarray) -> tuple[float, float]:
    """ONNX Runtime (CPU) on ``crops`` ``(N, 3, h, w)`` with both files: the largest
    ``|int8 - fp32|`` heatmap difference and the share of heatmaps whose maximum is at the same
    heatmap pixel."""
    ort = require("onnxruntime")
    outs = []
    for path in (fp32, int8):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outs.append(session.run(None, {INPUT_NAME: crops.astype(np.float32)})[0])
    a, q = outs
    same = a.reshape(*a.shape[:2], -1).argmax(-1) == q.reshape(*q.shape[:2], -1).argmax(-1)
    return float(np.abs(a - q).max()), float(same.mean())


def quantized_op_types(path: str | Path) -> dict[str, int]:
    """Operator counts of an ONNX file (``QuantizeLinear``/``DequantizeLinear`` mark INT8)."""
    onnx = require("onnx")
    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
