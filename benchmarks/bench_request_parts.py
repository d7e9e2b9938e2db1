"""The request path's stages one by one: CPU time per call on one thread (issue 13, section 1).

``bench_overhead.py`` measures the whole request in a running server; this script takes its
stages apart, each timed with ``time.process_time`` over many calls in one process with one
torch thread, for a 640x480 one-person JPEG (the issue's case) and the ResNet 256x192 input:

- JPEG decode (``app.intake.uploads.decode_image``, reduced as the service decodes it for one
  whole-image person),
- the crop (``Predictor.crop``, cv2),
- the network input and flip test around an instant forward (``Predictor.heatmaps`` with the
  forward call replaced by zeros of the right shape), per crop, at batch sizes 1, 6 and 16,
- heatmap decoding (DARK, the numpy engine the service uses for small CPU batches), per crop,
- the JSON answer for one person (``app.http.routes.predict``'s rendering).

``--roots base=/path,new=/path`` runs the same measurements on other checkouts (each in its own
process, e.g. ``git worktree add /tmp/base <commit>``) and prints them side by side.
``--neighbours N`` measures each checkout a second time while N other processes run the same
stages in a loop (column ``label/busy``): what the same work costs when the other cores are
busy, as they are in a loaded server (its other threads, the clients).

    .venv/bin/python benchmarks/bench_request_parts.py [--roots base=/tmp/base,new=.]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _per_call_ms(fn: Callable[[], object], seconds: float) -> float:
    """CPU ms per call of ``fn`` (after one warm-up call), over about ``seconds``."""
    fn()
    calls, start = 0, time.process_time()
    while (spent := time.process_time() - start) < seconds:
        fn()
        calls += 1
    return spent * 1e3 / calls


def measure(seconds: float) -> dict[str, float]:
    """The stages of the checkout on ``sys.path``; ``{label: CPU ms}``."""
    import torch

    torch.set_num_threads(1)
    from app.engine.inference import PredictOptions
    from app.http.routes.predict import model_summary, person
    from app.http.schemas import ImageResult, PredictResponse, Timing
    from app.intake.reduction import PoseNeed
    from app.intake.uploads import decode_image
    from app.settings import Settings
    from models.inference.predictor import Crops, Predictor
    from models.pose.persons import PersonBoxes
    from models.weights.checkpoint import ModelBundle, build_model
    from models.weights.model_config import ModelConfig

    # Last: bench_service puts this script's checkout first on sys.path; the measured
    # checkout's modules are imported above (from PYTHONPATH) and stay the ones used.
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_service import person_jpeg

    config = ModelConfig(name="r50-256x192", depth=50)
    predictor = Predictor(ModelBundle(build_model(config).eval(), config), device="cpu")
    k, (hw, hh) = config.spec.num_keypoints, config.codec.heatmap_size
    predictor.forward = lambda x: torch.zeros((x.shape[0], k, hh, hw))  # instant forward
    data = person_jpeg(0, (640, 480))
    need = PoseNeed(None, predictor.input_size)
    max_side = Settings().decode_max_side
    max_pixels = 10**9
    out: dict[str, float] = {}
    out["JPEG decode 640x480 (as served)"] = _per_call_ms(
        lambda: decode_image(data, "a.jpg", max_pixels, max_side=max_side, need=need), seconds
    )
    image = decode_image(data, "a.jpg", max_pixels, max_side=max_side, need=need)
    boxes = image.scale.boxes_in(PersonBoxes.whole_image(640, 480))
    out["crop (cv2), one person"] = _per_call_ms(
        lambda: predictor.crop(image.pixels, boxes), seconds
    )
    one = predictor.crop(image.pixels, boxes)
    for b in (1, 6, 16):
        crops = Crops.concat([one] * b).images
        ms = _per_call_ms(lambda crops=crops: predictor.heatmaps(crops, True), seconds)
        out[f"input + flip test, batch {b}, per crop"] = ms / b
    crops = Crops.concat([one] * 6)
    maps = predictor.heatmaps(crops.images, True) + torch.rand(6, k, hh, hw)
    out["DARK decode, batch 6, per crop"] = (
        _per_call_ms(lambda: predictor.decode(maps, crops.centers, crops.scales), seconds) / 6
    )
    kps, scores = predictor.decode(maps, crops.centers, crops.scales)
    found = crops.result(0, kps[0], scores[0], None)
    options = PredictOptions(flip_test=True, decode_mode="dark")
    names = predictor.spec.names

    def answer() -> bytes:
        images = [ImageResult(filename="a.jpg", width=640, height=480, persons=[])]
        images[0].persons.append(person(names, found, 0.3))
        timing = Timing(total_ms=1.0, decode_ms=0.5, inference_ms=0.5)
        body = PredictResponse(
            model=model_summary(predictor, options), images=images, timing=timing
        )
        return body.model_dump_json().encode()

    out["JSON answer, one person"] = _per_call_ms(answer, seconds)
    return out


def _run_worker(cmd: list[str], env: dict[str, str], root: Path) -> dict[str, float]:
    """One ``--worker`` run on the checkout ``root``: its stages, ``{label: CPU ms}``."""
    done = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, check=True)
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["predictor"].startswith(str(root)), found  # the checkout measured
    return found["stages"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--roots", default=f"this={ROOT}", help="label=path,... checkouts to compare")
    p.add_argument("--seconds", type=float, default=1.5, help="CPU seconds per stage")
    p.add_argument(
        "--neighbours", type=int, default=0, help="also measure with N busy processes alongside"
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        import models.inference.predictor

        stages = measure(args.seconds)
        print(json.dumps({"stages": stages, "predictor": models.inference.predictor.__file__}))
        return
    results: dict[str, dict[str, float]] = {}
    for item in args.roots.split(","):
        label, _, path = item.rpartition("=")
        root = Path(path).resolve()
        label = label or root.name
        env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker"]
        results[label] = _run_worker([*cmd, "--seconds", str(args.seconds)], env, root)
        if args.neighbours:
            loops = [
                subprocess.Popen(
                    [*cmd, "--seconds", "1e6"], env=env, cwd=root, stdout=subprocess.DEVNULL
                )
                for _ in range(args.neighbours)
            ]
            try:
                time.sleep(3.0)  # past their imports, into the stage loops
                results[f"{label}/busy"] = _run_worker(
                    [*cmd, "--seconds", str(args.seconds)], env, root
                )
            finally:
                for loop in loops:
                    loop.kill()
                    loop.wait()
    labels = list(results)
    print(f"CPU ms per call, one thread, load average {os.getloadavg()[0]:.2f}")
    print(f"{'stage':<42}" + "".join(f"{label:>12}" for label in labels))
    for stage in results[labels[0]]:
        row = "".join(f"{results[label].get(stage, float('nan')):12.3f}" for label in labels)
        print(f"{stage:<42}{row}")


if __name__ == "__main__":
    main()
