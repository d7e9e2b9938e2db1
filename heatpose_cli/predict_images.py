"""``heatpose predict`` on images: one JSON per image (``/predict``'s schema), overlay PNGs, or
one COCO keypoint results file.

Images are decoded as the service decodes uploads (:func:`app.intake.uploads.decode_image`: EXIF
orientation applied, the same pixel limit), so coordinates mean the same thing here and there:
``(x, y)`` pixels of the image as displayed. They go through the pipeline ``--batch-size`` at a
time (one detector pass, then pose passes of at most ``--batch-size`` crops).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from app.engine.inference import PredictOptions
from app.errors import ApiError
from app.http.routes.predict import model_summary, person
from app.intake.uploads import DecodedImage, decode_image
from app.render.overlay import encode_png, render
from app.settings import Settings
from heatpose_cli.args import UsageError
from heatpose_cli.predict_flags import PROG
from models.inference.pipeline import PipelineOptions, PosePipeline
from models.pose.persons import PersonResult

COCO_FILE = "coco_results.json"
RESCORE_THR = 0.2
"""COCO score: box score x the mean of the keypoint scores above this (as the evaluation)."""


def pipeline_options(args: argparse.Namespace, *, heatmaps: bool = False) -> PipelineOptions:
    """The flags as :class:`PipelineOptions`."""
    return PipelineOptions(
        bbox_thr=args.bbox_thr,
        max_persons=args.max_persons,
        kpt_thr=args.kpt_thr,
        flip_test=args.flip_test,
        return_heatmaps=heatmaps,
    )


def coco_score(r: PersonResult) -> float:
    """Box score (1 without a detector) times the mean keypoint score above
    :data:`RESCORE_THR` (0 when none is), as the evaluation rescores."""
    confident = r.scores[r.scores > RESCORE_THR]
    box_score = 1.0 if r.box_score is None else r.box_score
    return float(box_score * (confident.mean() if len(confident) else 0.0))


def coco_result(image_id: int, r: PersonResult) -> dict[str, Any]:
    """One COCO keypoint result: ``keypoints`` ``[x, y, score] * K`` image px, ``score``."""
    flat = np.concatenate([r.keypoints, r.scores[:, None]], axis=1).ravel()
    return {
        "image_id": image_id,
        "category_id": 1,
        "keypoints": [round(float(v), 3) for v in flat],
        "score": round(coco_score(r), 6),
    }


def coco_ids(files: Sequence[Path], gt: Path | None) -> list[int]:
    """Image ids for COCO results: from the ``gt`` annotation file's ``file_name`` (base names),
    else numeric file names (COCO's ``000000000139.jpg``), else 1, 2, ... in input order.

    Raises:
        UsageError: an unreadable ``gt`` file, or an image it does not list.
    """
    if gt is not None:
        try:
            doc = json.loads(gt.read_text())
            by_name = {Path(im["file_name"]).name: int(im["id"]) for im in doc["images"]}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UsageError(f"--coco-gt {gt}: not a COCO annotation file ({e})") from e
        missing = [str(f) for f in files if f.name not in by_name]
        if missing:
            raise UsageError(f"--coco-gt {gt} lists no image named {Path(missing[0]).name}")
        return [by_name[f.name] for f in files]
    if all(f.stem.isdigit() for f in files):
        return [int(f.stem) for f in files]
    return list(range(1, len(files) + 1))


def read_image(path: Path, max_pixels: int) -> DecodedImage | str:
    """The oriented RGB image, or a one-line reason it cannot be read."""
    try:
        return decode_image(path.read_bytes(), str(path), max_pixels)
    except ApiError as e:
        return e.message
    except OSError as e:
        return f"cannot read: {e.strerror or e}"


def run_images(
    pipeline: PosePipeline, images: Sequence[tuple[Path, Path]], args: argparse.Namespace
) -> int:
    """Infer ``images`` ((path, output stem) pairs) and write the outputs under ``args.out``.

    Returns the number of images that could not be read (each named in one line on stderr).
    """
    files = [p for p, _ in images]
    ids = coco_ids(files, args.coco_gt) if args.format == "coco" else []
    out: Path = args.out
    options = pipeline_options(args, heatmaps=args.overlay)
    predictor = pipeline.predictor
    names = predictor.spec.names
    summary = model_summary(
        predictor,
        PredictOptions(flip_test=predictor.flip_test if args.flip_test is None else args.flip_test),
    ).model_dump(mode="json")
    max_pixels = Settings.model_fields["max_image_pixels"].default
    results: list[dict[str, Any]] = []
    failed = 0
    step = args.batch_size
    with (
        ThreadPoolExecutor(max_workers=4) as pool,
        tqdm(total=len(images), unit="img", desc="predict", file=sys.stderr) as bar,
    ):
        for start in range(0, len(images), step):
            chunk = list(range(start, min(start + step, len(images))))
            decoded = list(pool.map(lambda i: read_image(files[i], max_pixels), chunk))
            good = [
                (i, d) for i, d in zip(chunk, decoded, strict=True) if isinstance(d, DecodedImage)
            ]
            for i, d in zip(chunk, decoded, strict=True):
                if isinstance(d, str):
                    failed += 1
                    tqdm.write(f"{PROG}: {files[i]}: {d} (skipped)", file=sys.stderr)
            people = pipeline([d.host for _, d in good], None, options) if good else []
            for (i, image), persons in zip(good, people, strict=True):
                stem = out / images[i][1]
                stem.parent.mkdir(parents=True, exist_ok=True)
                if args.format == "coco":
                    results += [coco_result(ids[i], r) for r in persons]
                else:
                    doc = {
                        "model": summary,
                        "filename": str(files[i]),
                        "width": image.width,
                        "height": image.height,
                        "persons": [
                            person(
                                names,
                                replace(r, heatmaps=None),
                                args.kpt_thr,
                                image_size=(image.width, image.height),
                            ).model_dump(mode="json")
                            for r in persons
                        ],
                    }
                    stem.with_suffix(".json").write_text(json.dumps(doc))
                if args.overlay:
                    picture = render(
                        image.host,
                        persons,
                        predictor.spec,
                        predictor.input_size,
                        kpt_thr=args.kpt_thr,
                    )
                    Path(f"{stem}.overlay.png").write_bytes(encode_png(picture))
            bar.update(len(chunk))
    if args.format == "coco":
        (out / COCO_FILE).write_text(json.dumps(results))
    return failed
