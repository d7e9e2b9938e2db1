"""COCO keypoint evaluation through the shared :class:`models.predictor.Predictor`.

``heatpose eval --checkpoint X --data-path D [--split val2017] [--boxes gt|detector|det.json]
[--detector NAME_OR_FILE]`` (flags in :mod:`training.evaluate_args`; ``--split`` may be left
out when the data set has one split) crops every person box (ground truth by default, a COCO
detection-results file with its scores, or the boxes of our person detector run over the split
with the COCO protocol: score threshold 0, up to 100 an image), runs the predictor (flip test
on by default), rescores (box score x mean keypoint
score above 0.2), applies OKS-NMS (0.9), writes the COCO results JSON and prints pycocotools'
AP table. With the detector, its detection results file is written too and the person box AP
(pycocotools ``bbox``) is reported next to the keypoint AP. The trainer calls :func:`evaluate`
with the same defaults.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from models.checkpoint import CheckpointError, load
from models.detector import COCO_PROTOCOL, PersonDetector, load_detector
from models.predictor import Predictor
from models.zoo import ZooError
from training.coco_metrics import (
    BOX_STAT_NAMES,
    PosePrediction,
    coco_box_eval,
    coco_keypoint_eval,
    format_table,
    postprocess,
    to_coco_results,
    write_results,
)
from training.data import (
    DataError,
    annotation_path,
    available_splits,
    clip_box,
    keypoint_category,
    load_coco,
    person_records,
    read_image,
    single_threaded_opencv,
)
from training.evaluate_args import parse_args

Boxes = dict[int, tuple[np.ndarray, np.ndarray]]
"""image id -> (boxes ``(N, 4)`` xyxy image px, box scores ``(N,)``)."""


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


def detector_boxes(
    detector: PersonDetector,
    coco: Any,
    image_dir: Path,
    *,
    score_thr: float = 0.0,
    batch_size: int = 4,
    workers: int = 0,
) -> tuple[Boxes, list[dict]]:
    """Run ``detector`` over every image of the split, ``batch_size`` images a call, with the
    COCO protocol (:data:`models.detector.COCO_PROTOCOL`; ``score_thr`` 0 keeps every box).

    Returns the boxes by image id and the COCO detection results (``image_id``,
    ``category_id`` 1, ``bbox`` xywh image px, ``score``). Only :meth:`detect` is called.
    """
    ids = sorted(coco.imgs)
    loader = DataLoader(
        _Images(coco, image_dir, ids), batch_size=None, num_workers=workers, collate_fn=_as_is
    )
    protocol = {**COCO_PROTOCOL, "score_thr": score_thr}
    boxes: Boxes = {}
    results: list[dict] = []
    batch: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        found = detector.detect([image for _, image in batch], **protocol)
        for (image_id, _), det in zip(batch, found, strict=True):
            if len(det.scores):
                boxes[image_id] = (det.boxes.astype(np.float64), det.scores.astype(np.float64))
            for (x1, y1, x2, y2), score in zip(
                det.boxes.tolist(), det.scores.tolist(), strict=True
            ):
                xywh = [round(v, 2) for v in (x1, y1, x2 - x1, y2 - y1)]
                results.append(
                    {"image_id": image_id, "category_id": 1, "bbox": xywh, "score": score}
                )
        batch.clear()

    for item in loader:
        batch.append(item)
        if len(batch) >= max(batch_size, 1):
            flush()
    if batch:
        flush()
    return boxes, results


class _Images(Dataset):
    """Decoded RGB images ``(H, W, 3)`` uint8 of the given ids (for loader workers)."""

    def __init__(self, coco: Any, image_dir: Path, ids: list[int]) -> None:
        self.files = [(i, image_dir / coco.imgs[i]["file_name"]) for i in ids]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray]:
        image_id, path = self.files[index]
        return image_id, cv2.cvtColor(read_image(path), cv2.COLOR_BGR2RGB)


def _as_is(item: Any) -> Any:
    return item


def predict_boxes(
    predictor: Predictor,
    coco: Any,
    image_dir: Path,
    boxes: Boxes,
    *,
    batch_size: int = 64,
    workers: int = 0,
) -> list[PosePrediction]:
    """Run ``predictor`` on every box: crops on the CPU, ``batch_size`` crops a forward pass."""
    ids = sorted(boxes)
    loader = DataLoader(
        _Images(coco, image_dir, ids), batch_size=None, num_workers=workers, collate_fn=_as_is
    )
    preds: list[PosePrediction] = []
    pending: list[tuple[int, Any, np.ndarray]] = []

    def flush() -> None:
        crops = np.concatenate([c.images for _, c, _ in pending])
        centers = np.concatenate([c.centers for _, c, _ in pending])
        scales = np.concatenate([c.scales for _, c, _ in pending])
        kps, scores = predictor.decode(predictor.heatmaps(crops), centers, scales)
        i = 0
        for image_id, c, box_scores in pending:
            for j in range(len(c.images)):
                area = float(c.scales[j, 0] * c.scales[j, 1])
                preds.append(PosePrediction(image_id, kps[i], scores[i], area, box_scores[j]))
                i += 1
        pending.clear()

    for image_id, image in loader:
        b, s = boxes[image_id]
        pending.append((image_id, predictor.crop(image, b), s))
        if sum(len(c.images) for _, c, _ in pending) >= batch_size:
            flush()
    if pending:
        flush()
    return preds


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
    detector: PersonDetector | None = None,
    detections_path: str | Path | None = None,
    det_score_thr: float = 0.0,
    det_batch_size: int = 4,
) -> dict[str, float]:
    """COCO keypoint AP/AR of ``predictor`` on ``DATA``'s ``split`` (see the module doc).

    With ``detector`` (anything with :meth:`PersonDetector.detect`) its boxes are used instead
    of ``boxes_file``/ground truth, written to ``detections_path`` if given, and the person
    box stats are added as ``box_<name>`` (:data:`BOX_STAT_NAMES`).
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
    box_stats: dict[str, float] = {}
    if detector is not None:  # a person detector: the person category's boxes
        options = {"score_thr": det_score_thr, "batch_size": det_batch_size, "workers": workers}
        boxes, detections = detector_boxes(detector, coco, image_dir, **options)
        if detections_path is not None:
            write_results(detections_path, detections)
        box = coco_box_eval(coco, detections, verbose=verbose)
        box_stats = {f"box_{k}": v for k, v in box.items()}
    elif boxes_file is None:
        boxes = ground_truth_boxes(coco, image_dir, category)
    else:
        boxes = detection_boxes(boxes_file, coco, category_id=category)
    sigmas = np.asarray(predictor.spec.sigmas)
    preds = predict_boxes(predictor, coco, image_dir, boxes, batch_size=batch_size, workers=workers)
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
    """Evaluate as the parsed flags say (:func:`training.evaluate_args.parse_args`); prints the
    AP table and the results file; exit status (2 with one line naming a bad file or split)."""
    single_threaded_opencv()
    try:
        bundle = load(args.checkpoint, device="cpu")
    except CheckpointError as e:
        print(f"heatpose eval: error: --checkpoint: {e}", file=sys.stderr)
        return 2
    device = torch.device(args.device) if args.device else None
    detector: PersonDetector | None = None
    if args.boxes == "detector":
        try:
            detector = load_detector(args.detector, device)
        except (ZooError, CheckpointError) as e:
            print(f"heatpose eval: error: --detector: {e}", file=sys.stderr)
            return 2
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
        print(f"person boxes ({args.detector}):\n{format_table(box, BOX_STAT_NAMES)}")
        print(f"detections: {detections}")
    print(f"split: {split}")
    print(f"results: {output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m training.evaluate``: the flags of ``heatpose eval``; exit status."""
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
