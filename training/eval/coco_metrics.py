"""COCO keypoint metrics: rescoring, OKS-NMS, results JSON and pycocotools' AP/AR table.

Predictions here are per person: ``keypoints (K, 2)`` image px, ``scores (K,)`` heatmap maxima,
``area`` (the crop region's ``w * h``, image px^2, as SimpleBaselines and mmpose use for NMS),
``box_score`` and ``image_id``.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from models.video.similarity import oks_matrix

STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
"""The ten numbers of ``COCOeval.stats`` for keypoints, in order."""
BOX_STAT_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)
"""The twelve numbers of ``COCOeval.stats`` for boxes, in order."""


@dataclass
class PosePrediction:
    """One person's prediction: ``keypoints (K, 2)`` image px, ``scores (K,)``, the crop
    region's ``area`` (image px^2), the detector's ``box_score`` and the final ``score``."""

    image_id: int
    keypoints: np.ndarray
    scores: np.ndarray
    area: float
    box_score: float = 1.0
    score: float = 0.0


def rescore(box_score: float, scores: np.ndarray, threshold: float = 0.2) -> float:
    """Box score times the mean of the keypoint scores above ``threshold`` (0 mean if none),
    in double precision whatever the types (a Python float times a float32 mean would
    otherwise round to float32)."""
    confident = scores[scores > threshold]
    return float(box_score) * (float(confident.mean()) if len(confident) else 0.0)


def oks_nms(preds: list[PosePrediction], threshold: float, sigmas: np.ndarray) -> list[int]:
    """Greedy NMS of one image's poses by score: drop any pose whose OKS with a kept,
    higher-scored pose exceeds ``threshold``. Returns kept indices, best first."""
    if not preds:
        return []
    kp = np.stack([p.keypoints for p in preds]).astype(np.float64)
    areas = np.array([p.area for p in preds], dtype=np.float64)
    oks = oks_matrix(kp, areas, kp, areas, sigmas)
    order = list(np.argsort([-p.score for p in preds], kind="stable"))
    keep: list[int] = []
    while order:
        i = order.pop(0)
        keep.append(int(i))
        order = [j for j in order if oks[i, j] <= threshold]
    return keep


def postprocess(
    preds: list[PosePrediction],
    sigmas: np.ndarray,
    nms_threshold: float | None = 0.9,
    score_thr: float = 0.2,
) -> list[PosePrediction]:
    """Rescore every prediction, then OKS-NMS per image (``nms_threshold`` None: no NMS)."""
    by_image: dict[int, list[PosePrediction]] = defaultdict(list)
    for p in preds:
        p.score = rescore(p.box_score, p.scores, score_thr)
        by_image[p.image_id].append(p)
    out = []
    for image_id in sorted(by_image):
        group = by_image[image_id]
        if nms_threshold is None:
            out += group
        else:
            out += [group[i] for i in oks_nms(group, nms_threshold, sigmas)]
    return out


def to_coco_results(preds: list[PosePrediction], category_id: int = 1) -> list[dict]:
    """COCO keypoint results: ``image_id``, ``category_id`` (1: person), ``keypoints``
    ``[x, y, score]*K`` (image px), ``score``."""
    results = []
    for p in preds:
        flat = np.concatenate([p.keypoints, p.scores[:, None]], axis=1).ravel()
        results.append(
            {
                "image_id": int(p.image_id),
                "category_id": int(category_id),
                "keypoints": [round(float(v), 3) for v in flat],
                "score": float(p.score),
            }
        )
    return results


def coco_keypoint_eval(
    gt: COCO,
    results: list[dict],
    sigmas: np.ndarray | None = None,
    verbose: bool = False,
    *,
    category_id: int | None = None,
) -> dict[str, float]:
    """pycocotools ``COCOeval(iouType="keypoints")`` over ``gt``'s images.

    ``sigmas`` ``(K,)`` become ``kpt_oks_sigmas`` (``None``: pycocotools' COCO person values);
    ``category_id`` limits the evaluation to that category (``None``: all of ``gt``'s).
    Returns the ten :data:`STAT_NAMES` values (all 0 when there are no results). With
    ``verbose`` the pycocotools table is printed.
    """
    cat_ids = None if category_id is None else [int(category_id)]
    return _coco_eval(
        gt, results, "keypoints", STAT_NAMES, sigmas=sigmas, cat_ids=cat_ids, verbose=verbose
    )


def coco_box_eval(gt: COCO, results: list[dict], verbose: bool = False) -> dict[str, float]:
    """Person box AP/AR: pycocotools ``COCOeval(iouType="bbox")`` over ``gt``'s images, person
    category only, for detection results (``image_id``, ``category_id``, ``bbox`` xywh image
    px, ``score``). Returns the twelve :data:`BOX_STAT_NAMES` values (0 without results)."""
    return _coco_eval(gt, results, "bbox", BOX_STAT_NAMES, cat_ids=[1], verbose=verbose)


def _coco_eval(
    gt: COCO,
    results: list[dict],
    iou_type: str,
    names: tuple[str, ...],
    *,
    sigmas: np.ndarray | None = None,
    cat_ids: list[int] | None = None,
    verbose: bool = False,
) -> dict[str, float]:
    if not results:
        return dict.fromkeys(names, 0.0)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        dt = gt.loadRes([dict(r) for r in results])  # loadRes adds keys to the dicts
        ev = COCOeval(gt, dt, iou_type)
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.asarray(sigmas)
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.params.useSegm = None
        ev.params.imgIds = sorted(gt.getImgIds())
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    if verbose:
        print("\n".join(line for line in out.getvalue().splitlines() if "Average" in line))
    return {name: float(v) for name, v in zip(names, ev.stats, strict=True)}


def write_results(path: str | Path, results: list[dict]) -> None:
    """Write COCO results JSON atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results))
    tmp.replace(path)


def format_table(stats: dict[str, float], names: tuple[str, ...] = STAT_NAMES) -> str:
    """A two-line text table of the stats (``names`` present, then values to 3 decimals)."""
    names = tuple(n for n in names if n in stats)
    return (
        " | ".join(f"{n:>5}" for n in names) + "\n" + " | ".join(f"{stats[n]:5.3f}" for n in names)
    )
