"""``heatpose export``: a pose checkpoint or a person detector -> an ONNX file (fp32 or INT8).

    heatpose export CHECKPOINT --format onnx --out X.onnx [--opset N] [--no-verify]
    heatpose export CHECKPOINT --format onnx --out X.onnx --int8 --calibration-data DIR
    heatpose export person-rtmdet-nano --format onnx --out detector.onnx

The artifacts are :mod:`models.runtime.export` (pose), :mod:`models.detection.detector_export`
(detectors) and
:mod:`models.inference.quantize` (INT8). Flags are parsed before torch or onnx is imported, so
``--help`` stays instant; a mistake is one line naming the flag, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from heatpose_cli.args import ArgumentParser, number, parse_or_status
from models.runtime.export import (  # torch and onnx are imported by its functions, not by it
    DEFAULT_OPSET,
    FORMATS,
    OPSETS,
    ExportError,
    export_onnx,
    max_abs_diff,
)


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="heatpose export", description="Export a checkpoint for another runtime."
    )
    p.add_argument(
        "checkpoint",
        help="a .safetensors pose checkpoint (models.weights.checkpoint.save), or a person "
        "detector: an RTMDet zoo name (person-rtmdet-nano, person-rtmdet-m) or, with --detector, "
        "a file",
    )
    p.add_argument(
        "--detector",
        action="store_true",
        help="CHECKPOINT is a person detector's weights file (static input, NMS outside the "
        "graph; models/detection/detector_export.py)",
    )
    p.add_argument("--format", choices=FORMATS, required=True, help="the output format")
    p.add_argument("--out", required=True, help="the file to write, e.g. model.onnx")
    p.add_argument(
        "--opset",
        type=int,
        choices=OPSETS,
        default=DEFAULT_OPSET,
        metavar="N",
        help=f"ONNX opset, {OPSETS[0]}..{OPSETS[-1]} (default {DEFAULT_OPSET})",
    )
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="skip the onnxruntime parity check against the torch model",
    )
    q = p.add_argument_group(
        "INT8 (models/inference/quantize.py: ONNX Runtime static quantization, CPU)"
    )
    q.add_argument("--int8", action="store_true", help="write a QDQ INT8 model (needs onnx)")
    q.add_argument(
        "--calibration-data",
        metavar="DIR",
        help="a COCO-format data set to calibrate on (as `heatpose synth --out DIR` writes it)",
    )
    q.add_argument(
        "--calibration",
        type=number(int, "--calibration", 1),
        default=128,
        metavar="N",
        help="person crops to calibrate on (default 128)",
    )
    q.add_argument("--calibration-split", default="train", help="the split (default train)")
    q.add_argument(
        "--reduce-range",
        action="store_true",
        help="7-bit weights: for CPUs without VNNI, where 8-bit products may saturate",
    )
    return p


def _check_int8(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.int8 and args.format != "onnx":
        p.error(f"--int8 needs --format onnx, not {args.format}")
    if args.int8 and not args.calibration_data:
        p.error("--int8 needs --calibration-data DIR (e.g. the output of `heatpose synth`)")
    if (args.calibration_data or args.reduce_range) and not args.int8:
        p.error("--calibration-data and --reduce-range are for --int8 exports only")
    if args.int8 and not Path(args.calibration_data).is_dir():
        p.error(f"--calibration-data {args.calibration_data}: no such directory")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``heatpose export`` with ``argv`` (the arguments after ``export``); exit status."""
    parser = _parser()
    args = parse_or_status(parser, None if argv is None else list(argv))
    if isinstance(args, int):
        return args
    try:
        _check_int8(parser, args)
    except SystemExit as e:  # parser.error: the line is printed
        return int(e.code or 2)
    # after parsing: torch and onnx only for real work, not for --help
    from models.inference.quantize import CalibrationError
    from models.weights.checkpoint import CheckpointError, load

    try:
        if args.detector or _is_zoo_detector(args.checkpoint):
            from models.weights.zoo import ZooError

            try:
                return _export_detector(args)
            except ZooError as e:
                raise ExportError(str(e)) from e
        bundle = load(args.checkpoint)
        if args.int8:
            return _export_int8(bundle, args)
        out = export_onnx(bundle.model, bundle.config, args.out, opset=args.opset)
        print(f"wrote {out}: {bundle.config.name}, ResNet-{bundle.config.depth}, dynamic batch")
        if not args.no_verify:
            diff = max_abs_diff(bundle.model, out)
            print(f"onnxruntime vs torch: max |diff| {diff:.2e} on random inputs")
    except (CheckpointError, ExportError, CalibrationError, OSError) as e:
        print(f"heatpose export: error: {e}", file=sys.stderr)
        return 2
    return 0


def _is_zoo_detector(name: str) -> bool:
    from models.weights.zoo import ENTRIES

    entry = ENTRIES.get(name)
    return entry is not None and entry.kind == "detector"


def _export_int8(bundle: Any, args: argparse.Namespace) -> int:
    """The fp32 export (a temporary file), calibration crops, the INT8 file; prints a summary."""
    from models.inference.quantize import calibration_crops, int8_vs_fp32, quantize_onnx
    from models.weights.weights_digest import weights_sha256

    crops = calibration_crops(
        bundle, args.calibration_data, count=args.calibration, split=args.calibration_split
    )
    out = Path(args.out)
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.is_dir() else None) as tmp:
        fp32 = export_onnx(bundle.model, bundle.config, Path(tmp) / "fp32.onnx", opset=args.opset)
        if not args.no_verify:
            print(f"fp32 onnxruntime vs torch: max |diff| {max_abs_diff(bundle.model, fp32):.2e}")
        sha = weights_sha256(bundle.model, bundle.config)
        quantize_onnx(fp32, out, crops, source_sha256=sha, reduce_range=args.reduce_range)
        diff, agree = int8_vs_fp32(fp32, out, crops)
    c = bundle.config
    print(f"wrote {out}: {c.name}, ResNet-{c.depth}, INT8 (QDQ), {len(crops)} calibration crops")
    print(f"INT8 vs fp32 on them: max |diff| {diff:.2e}, heatmap maxima agree {agree:.1%}")
    return 0


def _export_detector(args: argparse.Namespace) -> int:
    """``heatpose export DETECTOR``: a zoo detector name or weights file -> ``--out`` ONNX;
    prints what was written and (unless ``--no-verify``) the parity with torch."""
    from models.detection.detector import load_detector
    from models.detection.detector_export import (
        NMS_PLACE,
        detector_max_abs_diff,
        export_detector_onnx,
    )

    if args.int8:
        raise ExportError("--int8 is for pose checkpoints; a detector exports in float32")
    detector: Any = load_detector(args.checkpoint, "cpu")  # RTMDet or torchvision
    network = getattr(detector, "network", None)
    if network is None:
        raise ExportError(
            f"{args.checkpoint} is a two-stage torchvision detector, whose shapes depend on its "
            "proposals: only RTMDet detectors (person-rtmdet-nano, person-rtmdet-m) export"
        )
    arch, size = str(detector.arch), int(detector.input_size)
    out = export_detector_onnx(network, args.out, arch=arch, input_size=size, opset=args.opset)
    print(f"wrote {out}: {arch} detector, input {size}x{size}, dynamic batch, NMS {NMS_PLACE}")
    if not args.no_verify:
        scores, boxes = detector_max_abs_diff(detector, out)
        print(
            f"onnxruntime vs torch on pictures: max |diff| scores {scores:.2e}, "
            f"boxes {boxes:.2e} px"
        )
    return 0
