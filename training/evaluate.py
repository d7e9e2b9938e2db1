"""COCO keypoint evaluation through the shared :class:`models.predictor.Predictor`.

``python -m training.evaluate --checkpoint X --data-path D [--split val2017] [--boxes det.json]``
crops every person box (ground truth by default, or a COCO detection-results file with its
scores), runs the predictor (flip test on by default), rescores (box score x mean keypoint
score above 0.2), applies OKS-NMS (0.9), writes the COCO results JSON and prints pycocotools'
AP table. The trainer calls :func:`evaluate` with the same defaults.
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
from models.predictor import Predictor
from training.cli_args import ArgumentParser, non_negative_int
from training.coco_metrics import (
    PosePrediction,
    coco_keypoint_eval,
    format_table,
    postprocess,
    to_coco_results,
    write_results,
)
from training.data import (
    DataError,
    annotation_path,
    clip_box,
    keypoint_category,
    load_coco,
    person_records,
    read_image,
    single_threaded_opencv,
)

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
    boxes_file: str | Path | None = None,
    results_path: str | Path | None = None,
    batch_size: int = 64,
    workers: int = 0,
    nms_threshold: float | None = 0.9,
    verbose: bool = False,
) -> dict[str, float]:
    """COCO keypoint AP/AR of ``predictor`` on ``DATA``'s ``split`` (see the module doc)."""
    coco = load_coco(data_path, split)
    image_dir = Path(data_path) / split
    # The category whose keypoints are the model's; its sigmas serve OKS-NMS and COCOeval.
    category = keypoint_category(coco, predictor.spec.names)
    if category is None:
        raise DataError(
            f"{annotation_path(data_path, split)} has no category with the model's "
            f"{predictor.spec.num_keypoints} keypoints ({', '.join(predictor.spec.names[:4])}, ...)"
        )
    boxes = (
        ground_truth_boxes(coco, image_dir, category)
        if boxes_file is None
        else detection_boxes(boxes_file, coco, category_id=category)
    )
    sigmas = np.asarray(predictor.spec.sigmas)
    preds = predict_boxes(predictor, coco, image_dir, boxes, batch_size, workers)
    results = to_coco_results(postprocess(preds, sigmas, nms_threshold), category)
    if results_path is not None:
        write_results(results_path, results)
    return coco_keypoint_eval(coco, results, sigmas, verbose=verbose, category_id=category)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 for bad arguments or files)."""
    parser = ArgumentParser(
        prog="python -m training.evaluate",
        description="COCO keypoint AP of a heatpose .safetensors model on a COCO-format split.",
    )
    add = parser.add_argument
    add("--checkpoint", required=True, type=Path, help="model file (.safetensors)")
    add("--data-path", required=True, type=Path, help="data set root (DATA/annotations, ...)")
    add("--split", default="val2017", help="split name (default val2017)")
    add("--boxes", type=Path, default=None, help="COCO detection results JSON (default: GT)")
    add("--no-flip", action="store_true", help="disable the flip test")
    add("--decode-mode", choices=("dark", "shift", "argmax"), default=None,
        help="heatmap decoding (default: the checkpoint's)")  # fmt: skip
    add("--nms-thr", type=float, default=0.9, help="OKS-NMS threshold (default 0.9)")
    add("-b", "--batch-size", type=non_negative_int("--batch-size"), default=64)
    add("-j", "--workers", type=non_negative_int("--workers"), default=2)
    add("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    add("--output", type=Path, default=None, help="results JSON (default: next to checkpoint)")
    args = parser.parse_args(argv)
    single_threaded_opencv()
    if args.boxes is not None and not args.boxes.is_file():
        parser.error(f"--boxes file not found: {args.boxes}")
    try:
        bundle = load(args.checkpoint, device="cpu")
    except CheckpointError as e:
        parser.error(f"--checkpoint: {e}")
    device = torch.device(args.device) if args.device else None
    predictor = Predictor(bundle, device, flip_test=not args.no_flip, decode_mode=args.decode_mode)
    output = args.output or args.checkpoint.with_name(
        f"{args.checkpoint.stem}_{args.split}_keypoints.json"
    )
    try:
        stats = evaluate(
            predictor, args.data_path, args.split, args.boxes, output,
            max(args.batch_size, 1), args.workers, args.nms_thr, verbose=True,
        )  # fmt: skip
    except DataError as e:  # from a loader worker the message ends with the original error
        print(f"{parser.prog}: error: {str(e).strip().splitlines()[-1]}", file=sys.stderr)
        return 2
    print(format_table(stats))
    print(f"results: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
