"""INT8 for CPU serving (issue 13, section 5): keypoint AP and ONNX Runtime speed, fp32 vs INT8.

1. Accuracy: a small model trained on a synthetic split (``--checkpoint``; made with the
   commands below, a few minutes on the CPU) is exported as fp32 ONNX and as INT8 (QDQ,
   per-channel, calibrated on ``--calibration`` crops of the train split,
   ``models/inference/quantize.py``), and the project's evaluation (``training.evaluate.evaluate``:
   pycocotools keypoint AP, ground-truth boxes, flip test) runs each through the ``onnxruntime``
   backend on the val split.
2. Speed: the ONNX Runtime CPU forward of R18 and R50 at 256x192 (random weights, INT8
   calibrated on crops of the same data), batch ``--batch``, fp32 and INT8 in interleaved rounds,
   median images/s.

    heatpose synth --out DATA --train 240 --val 60 --width 320 --height 240 --seed 3
    heatpose train --data-path DATA --train-split train --val-split val --depth 18 \\
        --input-size 128x96 -b 16 -j 0 --epochs 12 --lr 2e-3 --lr-steps 9 --warmup-iters 10 \\
        --pretrained-backbone none --eval-every 12 --no-progress --seed 1 --device cpu \\
        --output-dir RUN
    .venv/bin/python benchmarks/bench_int8.py --checkpoint RUN/last.safetensors --data DATA \\
        [--calibration 128] [--batch 8] [--rounds 3] [--seconds 4] [--threads 1] [--reduce-range]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.inference.predictor import Predictor  # noqa: E402
from models.inference.quantize import calibration_crops, quantize_onnx  # noqa: E402
from models.runtime.export import export_onnx  # noqa: E402
from models.weights.checkpoint import ModelBundle, build_model, load  # noqa: E402
from models.weights.model_config import ModelConfig  # noqa: E402
from training.evaluate import evaluate  # noqa: E402


def both_files(
    bundle: ModelBundle, data: Path, count: int, tmp: Path, *, reduce_range: bool
) -> tuple[Path, Path]:
    """fp32 and INT8 ``.onnx`` files of ``bundle``, INT8 calibrated on ``count`` train crops."""
    name = f"{bundle.config.name}-r{bundle.config.depth}"
    fp32 = export_onnx(bundle.model, bundle.config, tmp / f"{name}.onnx")
    crops = calibration_crops(bundle, data, count=count, split="train")
    t = time.perf_counter()
    int8 = quantize_onnx(fp32, tmp / f"{name}.int8.onnx", crops, reduce_range=reduce_range)
    print(f"  {name}: quantized on {len(crops)} crops in {time.perf_counter() - t:.1f} s")
    return fp32, int8


def images_per_s(session, x: np.ndarray, seconds: float) -> float:
    n, t0 = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - t0 < seconds:
        session.run(None, {"input": x})
        n += 1
    return n * len(x) / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="the small trained model")
    p.add_argument("--data", required=True, type=Path, help="its synthetic data set (train, val)")
    p.add_argument("--calibration", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--threads", type=int, default=1, help="torch and ORT intra-op threads")
    p.add_argument("--reduce-range", action="store_true", help="7-bit weights (non-VNNI CPUs)")
    args = p.parse_args()
    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, onnxruntime {ort.__version__}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, {args.threads} thread(s)"
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-int8-"))
    trained = load(args.checkpoint)
    c = trained.config
    print(f"accuracy: {args.checkpoint} (R{c.depth} {c.input_size[1]}x{c.input_size[0]})")
    fp32, int8 = both_files(
        trained, args.data, args.calibration, tmp, reduce_range=args.reduce_range
    )
    for label, path in (("fp32", fp32), ("int8", int8)):
        predictor = Predictor(trained, "cpu", backend="onnxruntime", onnx_path=str(path))
        t = time.perf_counter()
        stats = evaluate(predictor, args.data, "val", batch_size=32)
        print(
            f"  {label}: AP {stats['AP']:.4f} AP50 {stats['AP50']:.4f} AP75 {stats['AP75']:.4f} "
            f"AR {stats['AR']:.4f} ({time.perf_counter() - t:.1f} s)"
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    print(f"speed: ONNX Runtime CPU forward, batch {args.batch}, 256x192, random weights")
    for depth in (18, 50):
        torch.manual_seed(0)
        config = ModelConfig(name="speed", depth=depth)  # 256x192, 17 keypoints
        bundle = ModelBundle(build_model(config).eval(), config)
        files = both_files(bundle, args.data, 32, tmp, reduce_range=args.reduce_range)
        sessions = [
            ort.InferenceSession(str(f), options, providers=["CPUExecutionProvider"]) for f in files
        ]
        x = np.random.default_rng(0).standard_normal((args.batch, 3, 256, 192), np.float32)
        for s in sessions:
            images_per_s(s, x, 0.5)  # first runs
        rates: list[list[float]] = [[], []]
        for _ in range(args.rounds):
            for i, s in enumerate(sessions):
                rates[i].append(images_per_s(s, x, args.seconds))
        f32, i8 = (statistics.median(r) for r in rates)
        print(f"  R{depth}: fp32 {f32:.1f} img/s, int8 {i8:.1f} img/s ({i8 / f32:.2f}x)")


if __name__ == "__main__":
    main()
