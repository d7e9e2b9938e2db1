"""A split through the pipeline, as evaluation runs it (:func:`predict_split`).

Every person of the split goes through :class:`models.inference.pipeline.PosePipeline`, the code
``heatpose predict`` and the service run: its
:meth:`~models.inference.pipeline.PosePipeline.person_boxes` (given boxes, or the detector with
:func:`coco_options`) a few images at a time, then its
:meth:`~models.inference.pipeline.PosePipeline.poses` once enough crops are waiting. The persons
come back per image id, as COCO's rescoring and OKS-NMS (:func:`pose_predictions`) and the person
box evaluation (:func:`detection_results`) take them. Boxes are ``[x1, y1, x2, y2]`` image px.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
from torch.utils.data import DataLoader, Dataset

from models.detection.detector import COCO_PROTOCOL
from models.inference.pipeline import PipelineOptions, PosePipeline
from models.pose.persons import PersonBoxes, PersonResult
from training.data.coco import read_image
from training.eval.coco_metrics import PosePrediction

Boxes = dict[int, tuple[np.ndarray, np.ndarray]]
"""image id -> (boxes ``(N, 4)`` xyxy image px, box scores ``(N,)``)."""


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


def coco_options(score_thr: float = 0.0) -> PipelineOptions:
    """The pipeline options of COCO evaluation with the detector: every image detected with
    :data:`models.detection.detector.COCO_PROTOCOL` (``score_thr`` 0 keeps every box); OKS-NMS
    follows."""
    return PipelineOptions(
        detect="true",
        bbox_thr=score_thr,
        nms_thr=float(COCO_PROTOCOL["nms_thr"]),
        max_persons=int(COCO_PROTOCOL["max_persons"]),
        kpt_thr=0.0,
    )


def predict_split(
    pipeline: PosePipeline,
    coco: Any,
    image_dir: Path,
    boxes: Boxes | None,
    *,
    options: PipelineOptions,
    batch_size: int = 64,
    det_batch_size: int = 4,
    workers: int = 0,
) -> dict[int, list[PersonResult]]:
    """Every person of the split through ``pipeline``: :meth:`PosePipeline.person_boxes`
    ``det_batch_size`` images a call, then :meth:`PosePipeline.poses` on the persons of
    consecutive images once they make ``batch_size`` crops (an image's persons stay in one pass).

    Args:
        boxes: per image id the persons' boxes and box scores, given to the pipeline as client
            boxes (``PersonBoxes`` with those scores; images without any are skipped); ``None``:
            every image of the split goes to the pipeline's detector (``options.detect`` true).
        options: see :class:`models.inference.pipeline.PipelineOptions` (:func:`coco_options` with a
            detector).

    Returns:
        Per image id its persons as the pipeline orders them (keypoints image px).
    """
    ids = sorted(coco.imgs) if boxes is None else sorted(boxes)
    loader = DataLoader(
        _Images(coco, image_dir, ids), batch_size=None, num_workers=workers, collate_fn=_as_is
    )
    out: dict[int, list[PersonResult]] = {}
    chunk: list[tuple[int, np.ndarray]] = []
    pending: list[tuple[int, np.ndarray, PersonBoxes]] = []

    def poses() -> None:
        images, persons = [im for _, im, _ in pending], [p for _, _, p in pending]
        found = pipeline.poses(images, persons, options)
        out.update(zip([i for i, _, _ in pending], found, strict=True))
        pending.clear()

    def locate() -> None:
        images = [im for _, im in chunk]
        given = None if boxes is None else [_client(*boxes[i]) for i, _ in chunk]
        for (image_id, image), persons in zip(
            chunk, pipeline.person_boxes(images, given, options), strict=True
        ):
            pending.append((image_id, image, persons))
            if sum(len(p) for _, _, p in pending) >= batch_size:
                poses()
        chunk.clear()

    for item in loader:
        chunk.append(item)
        if len(chunk) >= max(det_batch_size, 1):
            locate()
    if chunk:
        locate()
    if pending:
        poses()
    return out


def _client(boxes: np.ndarray, scores: np.ndarray) -> PersonBoxes:
    """Boxes given to the pipeline with their scores (the rescoring's box scores)."""
    return PersonBoxes(np.asarray(boxes, np.float64).reshape(-1, 4), scores, "client")


def pose_predictions(persons: dict[int, list[PersonResult]]) -> list[PosePrediction]:
    """The pipeline's persons for COCO's rescoring and OKS-NMS: the crop region's ``w * h`` as
    the area, the box score (1 for boxes without one)."""
    return [
        PosePrediction(
            image_id,
            r.keypoints,
            r.scores,
            float(r.scale[0] * r.scale[1]),
            1.0 if r.box_score is None else r.box_score,
        )
        for image_id in sorted(persons)
        for r in persons[image_id]
    ]


def detection_results(persons: dict[int, list[PersonResult]]) -> list[dict]:
    """The detector's boxes behind the persons as COCO detection results (``image_id``,
    ``category_id`` 1, ``bbox`` xywh image px rounded to 0.01, ``score``), best first per image."""
    results = []
    for image_id in sorted(persons):
        for r in persons[image_id]:
            if r.box_source != "detector":
                continue
            x1, y1, x2, y2 = (float(v) for v in r.box)
            xywh = [round(v, 2) for v in (x1, y1, x2 - x1, y2 - y1)]
            results.append(
                {"image_id": image_id, "category_id": 1, "bbox": xywh, "score": r.box_score}
            )
    return results
