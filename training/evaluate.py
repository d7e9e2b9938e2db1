"""COCO keypoint evaluation through the shared pipeline
(:class:`models.inference.pipeline.PosePipeline`).

``heatpose eval --checkpoint X --data-path D [--split val2017] [--boxes gt|detector|det.json]
[--detector NAME_OR_FILE]`` (flags in :mod:`heatpose_cli.eval`; ``--split`` may be left
out when the data set has one split) runs every person through the pipeline ``heatpose
predict`` and the service use: the ground-truth boxes (score 1, the default) or those of a
COCO detection-results file (with its scores) go in as client boxes; with ``--boxes detector``
the pipeline's person detector finds them with the COCO protocol (score threshold 0, NMS 0.5,
up to 100 an image). The pose model crops and decodes them (flip test on by default), then
each pose is rescored (box score x mean keypoint score above 0.2), OKS-NMS (0.9) applied, the
COCO results JSON written and pycocotools' AP table printed. With the detector, its detection
results file is written too and the person box AP (pycocotools ``bbox``) is reported next to
the keypoint AP. The trainer calls :func:`evaluate` with the same defaults.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.detection.detector import load_detector
from models.detection.detector_choice import AUTO, auto_detector, load_or_reason
from models.inference.pipeline import Detector, PipelineOptions, PosePipeline
from models.inference.predictor import Predictor
from models.weights.checkpoint import CheckpointError, load
from models.weights.zoo import ZooError
from training.data.coco import (
    DataError,
    annotation_path,
    available_splits,
    clip_box,
    keypoint_category,
    load_coco,
    person_records,
    single_threaded_opencv,
)
from training.eval.coco_metrics import (
    BOX_STAT_NAMES,
    coco_box_eval,
    coco_keypoint_eval,
    format_table,
    postprocess,
    to_coco_results,
    write_results,
)
from training.eval.eval_pipeline import (
    Boxes,
    coco_options,
    detection_results,
    pose_predictions,
    predict_split,
)


def ground_truth_boxes(coco: Any, image_dir: Path, category_id: int | None = None) -> Boxes:
    """The boxes of the persons the training data uses (score 1), per image (of
    ``category_id``; ``None``: any category)."""
    out: dict[int, tuple[list, list]] = {}
    for r in person_records(coco, image_dir, category_id):
        boxes, scores = out.setdefault(r.image_id, ([], []))
        boxes.append([r.box[0], r.box[1], r.box[0] + r.box[2], r.box[1] + r.box[3]])
        scores.append(1.0)
    return {k: (np.array(b, dtype=np.float64), np.array(s)) for k, (b, s) in out.items()}


def detection_boxes(
    path: str | Path, coco: Any, score_thr: float = 0.0, category_id: int = 1
) -> Boxes:
    """Boxes of ``category_id`` (1: person) from a COCO detection-results JSON (``image_id,
    category_id, bbox xywh, score``), clipped to their images, those with ``score >= score_thr``."""
    try:
        dets = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read --boxes file {path}: {e}") from e
    out: dict[int, tuple[list, list]] = {}
    for d in dets:
        if d.get("category_id", 1) != category_id or d["score"] < score_thr:
            continue
        if d["image_id"] not in coco.imgs:
            continue
        info = coco.imgs[d["image_id"]]
        box = clip_box(d["bbox"], info["width"], info["height"])
        if box is not None:
            boxes, scores = out.setdefault(d["image_id"], ([], []))
            boxes.append([box[0], box[1], box[0] + box[2], box[1] + box[3]])
            scores.append(float(d["score"]))
    return {k: (np.array(b, dtype=np.float64), np.array(s)) for k, (b, s) in out.items()}


def evaluate(
    predictor: Predictor,
    data_path: str | Path,
    split: str,
    *,
    boxes_file: str | Path | None = None,
    results_path: str | Path | None = None,
    batch_size: int = 64,
    workers: int = 0,
    nms_threshold: float | None = 0.9,
    verbose: bool = False,
    detector: Detector | None = None,
    detections_path: str | Path | None = None,
    det_score_thr: float = 0.0,
    det_batch_size: int = 4,
) -> dict[str, float]:
    """COCO keypoint AP/AR of ``predictor`` on ``DATA``'s ``split`` (see the module doc).

    Persons go through :class:`models.inference.pipeline.PosePipeline` (:func:`predict_split`), as
    in ``heatpose predict`` and the service. With ``detector`` (anything with
    :meth:`PersonDetector.detect`) the pipeline detects every image with :func:`coco_options`
    instead of taking ``boxes_file``/ground-truth boxes; the detections are written to
    ``detections_path`` if given, and the person box stats are added as ``box_<name>``
    (:data:`BOX_STAT_NAMES`).
    """
    coco = load_coco(data_path, split)
    image_dir = Path(data_path) / split
    # The category whose keypoints are the model's; its sigmas serve OKS-NMS and COCOeval.
    category = keypoint_category(coco, predictor.spec.names)
    if category is None:
        raise DataError(
            f"{annotation_path(data_path, split)} has no category with the model's "
            f"{predictor.spec.num_keypoints} keypoints ({', '.join(predictor.spec.names[:4])}, ...)"
        )
    pipeline = PosePipeline(predictor, detector, detector_batch_size=det_batch_size)
    boxes: Boxes | None = None
    options = PipelineOptions(detect="false", kpt_thr=0.0)  # the boxes are given
    if detector is not None:  # a person detector: the person category's boxes
        options = coco_options(det_score_thr)
    elif boxes_file is None:
        boxes = ground_truth_boxes(coco, image_dir, category)
    else:
        boxes = detection_boxes(boxes_file, coco, category_id=category)
    persons = predict_split(
        pipeline,
        coco,
        image_dir,
        boxes,
        options=options,
        batch_size=batch_size,
        det_batch_size=det_batch_size,
        workers=workers,
    )
    box_stats: dict[str, float] = {}
    if detector is not None:
        detections = detection_results(persons)
        if detections_path is not None:
            write_results(detections_path, detections)
        box = coco_box_eval(coco, detections, verbose=verbose)
        box_stats = {f"box_{k}": v for k, v in box.items()}
    sigmas = np.asarray(predictor.spec.sigmas)
    preds = pose_predictions(persons)
    results = to_coco_results(postprocess(preds, sigmas, nms_threshold), category)
    if results_path is not None:
        write_results(results_path, results)
    keypoint_stats = coco_keypoint_eval(
        coco, results, sigmas, verbose=verbose, category_id=category
    )
    return keypoint_stats | box_stats


def resolve_split(data_path: Path, split: str | None) -> str:
    """``split``, or the data set's only split when it is ``None``; :class:`DataError` naming
    the splits there when ``split`` is not one of them or several leave the choice open."""
    splits = available_splits(data_path)
    if split is not None and (split in splits or not splits):
        return split  # no splits at all: load_coco names the missing annotation file
    if split is None and len(splits) == 1:
        return splits[0]
    if not splits:
        raise DataError(
            f"--data-path {data_path} has no split: no annotations/person_keypoints_<split>.json"
        )
    names = ", ".join(splits)
    if split is None:
        raise DataError(f"--split is needed: {data_path} has splits {names}")
    raise DataError(f"--split {split} is not in {data_path}, which has splits {names}")


def run(args: Any) -> int:
    """Evaluate as the parsed flags say (:func:`heatpose_cli.eval.parse_args`); prints the
    AP table and the results file; exit status (2 with one line naming a bad file or split)."""
    single_threaded_opencv()
    try:
        bundle = load(args.checkpoint, device="cpu")
    except CheckpointError as e:
        print(f"heatpose eval: error: --checkpoint: {e}", file=sys.stderr)
        return 2
    device = torch.device(args.device) if args.device else None
    detector: Detector | None = None
    if args.boxes == "detector":
        name = auto_detector(device) if args.detector == AUTO else args.detector
        try:
            detector, off = load_or_reason(
                args.detector,
                name,
                lambda: load_detector(name, device),
                effect="evaluating with the ground-truth boxes (--boxes gt) instead",
            )
        except (ZooError, CheckpointError, OSError) as e:
            print(f"heatpose eval: error: --detector {name}: {e}; or --boxes gt", file=sys.stderr)
            return 2
        if off is not None:  # auto's weights cannot be had: the ground-truth boxes instead
            print(f"heatpose eval: {off}", file=sys.stderr)
            args.boxes = "gt"
    try:
        split = resolve_split(args.data_path, args.split)
        predictor = Predictor(
            bundle, device, flip_test=not args.no_flip, decode_mode=args.decode_mode
        )
        output = args.output or args.checkpoint.with_name(
            f"{args.checkpoint.stem}_{split}_keypoints.json"
        )
        detections = output.with_name(f"{output.stem}_person_boxes.json")
        stats = evaluate(
            predictor,
            args.data_path,
            split,
            boxes_file=None if args.boxes in ("gt", "detector") else Path(args.boxes),
            results_path=output,
            batch_size=max(args.batch_size, 1),
            workers=args.workers,
            nms_threshold=args.nms_thr,
            verbose=True,
            detector=detector,
            detections_path=detections,
            det_score_thr=args.det_score_thr,
            det_batch_size=max(args.det_batch_size, 1),
        )
    except DataError as e:  # from a loader worker the message ends with the original error
        print(f"heatpose eval: error: {str(e).strip().splitlines()[-1]}", file=sys.stderr)
        return 2
    print(format_table(stats))
    if detector is not None:
        box = {k.removeprefix("box_"): v for k, v in stats.items() if k.startswith("box_")}
        print(f"person boxes ({name}):\n{format_table(box, BOX_STAT_NAMES)}")
        print(f"detections: {detections}")
    print(f"split: {split}")
    print(f"results: {output}")
    return 0


if __name__ == "__main__":  # python -m training.evaluate (docs): `heatpose eval`
    from heatpose_cli.eval import main

    sys.exit(main())
