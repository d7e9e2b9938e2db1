"""COCO metrics: rescoring, OKS, OKS-NMS and the pycocotools table, against hand computations."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from models.pose.keypoints import COCO_KEYPOINTS
from training.eval.coco_metrics import (
    PosePrediction,
    coco_keypoint_eval,
    oks_matrix,
    oks_nms,
    postprocess,
    to_coco_results,
)

SIGMAS = np.asarray(COCO_KEYPOINTS.sigmas)


def _pose(seed: int, offset: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(50, 150, size=(17, 2)) + offset


def test_rescore_is_box_score_times_mean_confident_keypoint_score() -> None:
    scores = np.array([0.9, 0.1, 0.5, 0.2, 0.3] + [0.0] * 12)
    p = PosePrediction(1, _pose(0), scores, area=100.0, box_score=0.8)
    postprocess([p], SIGMAS, nms_threshold=None)
    assert p.score == pytest.approx(0.8 * (0.9 + 0.5 + 0.3) / 3)  # 0.2 is not above 0.2
    q = PosePrediction(1, _pose(0), np.full(17, 0.1), area=100.0, box_score=0.8)
    postprocess([q], SIGMAS, nms_threshold=None)
    assert q.score == 0.0


def test_oks_matches_a_loop_over_keypoints() -> None:
    a, b = _pose(1), _pose(2)
    area_a, area_b = 900.0, 1600.0
    expected = np.mean(
        [
            np.exp(-np.sum((a[k] - b[k]) ** 2) / (2 * (area_a + area_b) / 2 * (2 * SIGMAS[k]) ** 2))
            for k in range(17)
        ]
    )
    got = oks_matrix(a[None], np.array([area_a]), b[None], np.array([area_b]), SIGMAS)
    assert got.shape == (1, 1) and got[0, 0] == pytest.approx(expected, rel=1e-9)
    assert oks_matrix(a[None], np.array([1e4]), a[None], np.array([1e4]), SIGMAS)[0, 0] == (
        pytest.approx(1.0)
    )


def test_oks_nms_keeps_the_best_of_near_duplicates() -> None:
    s = np.full(17, 0.9)
    preds = [
        PosePrediction(1, _pose(0), s, 1e4, score=0.5),
        PosePrediction(1, _pose(0, 0.3), s, 1e4, score=0.7),  # a near copy of the first
        PosePrediction(1, _pose(5), s, 1e4, score=0.6),  # a different person
    ]
    assert oks_nms(preds, 0.9, SIGMAS) == [1, 2]
    assert oks_nms(preds, 1.0, SIGMAS) == [1, 2, 0]  # nothing exceeds OKS 1


def _gt(tmp_path: Path) -> COCO:
    rng = np.random.default_rng(0)
    anns, images = [], []
    for i in range(1, 6):
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 300, "height": 300})
        kp = np.concatenate([rng.uniform(60, 240, (17, 2)), np.full((17, 1), 2)], 1)
        anns.append(
            {
                "id": i,
                "image_id": i,
                "category_id": 1,
                "iscrowd": 0,
                "area": 8000.0,
                "bbox": [50, 50, 200, 200],
                "keypoints": kp.ravel().tolist(),
                "num_keypoints": 17,
            }
        )
    doc = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(doc))
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def test_coco_table_perfect_then_worse(tmp_path: Path) -> None:
    gt = _gt(tmp_path)
    preds = [
        PosePrediction(
            a["image_id"], np.reshape(a["keypoints"], (17, 3))[:, :2], np.ones(17), area=40000.0
        )
        for a in gt.loadAnns(gt.getAnnIds())
    ]
    perfect = coco_keypoint_eval(gt, to_coco_results(postprocess(preds, SIGMAS)), SIGMAS)
    assert perfect["AP"] == pytest.approx(1.0) and perfect["AR"] == pytest.approx(1.0)
    for p in preds:
        p.keypoints = p.keypoints + 6.0  # 8.5 px off: OKS ~0.5-0.9 at this size
    worse = coco_keypoint_eval(gt, to_coco_results(postprocess(preds, SIGMAS)), SIGMAS)
    assert 0.0 < worse["AP"] < 0.9
    assert coco_keypoint_eval(gt, [], SIGMAS)["AP"] == 0.0


def test_results_json_layout() -> None:
    p = PosePrediction(7, np.arange(34, dtype=float).reshape(17, 2), np.full(17, 0.5), 10.0)
    p.score = 0.25
    (r,) = to_coco_results([p])
    assert r["image_id"] == 7 and r["category_id"] == 1 and r["score"] == 0.25
    assert r["keypoints"][:6] == [0.0, 1.0, 0.5, 2.0, 3.0, 0.5] and len(r["keypoints"]) == 51
