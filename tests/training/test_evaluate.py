"""Evaluation inputs: ground-truth boxes, detection-result boxes, a run over a detection file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.inference.predictor import Predictor
from models.pose.network import PoseResNet
from models.weights.checkpoint import load, save
from models.weights.model_config import ModelConfig
from training.data.coco import load_coco
from training.evaluate import detection_boxes, evaluate, ground_truth_boxes


@pytest.fixture(scope="module")
def data(make_synthetic) -> Path:
    return make_synthetic("ev", "--train 0 --val 3 --seed 2 --width 160 --height 128")


def test_ground_truth_boxes_are_xyxy_of_the_annotations(data: Path) -> None:
    coco = load_coco(data, "val")
    boxes = ground_truth_boxes(coco, data / "val")
    anns = [a for a in coco.loadAnns(coco.getAnnIds()) if a["num_keypoints"] > 0]
    assert sum(len(b) for b, _ in boxes.values()) == len(anns)
    a = anns[0]
    x, y, w, h = a["bbox"]
    b, s = boxes[a["image_id"]]
    assert any(np.allclose(row, [x, y, x + w, y + h]) for row in b) and np.all(s == 1.0)


def test_detection_boxes_filter_clip_and_keep_scores(data: Path, tmp_path: Path) -> None:
    coco = load_coco(data, "val")
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [-10, 5, 50, 200], "score": 0.9},
        {"image_id": 1, "category_id": 2, "bbox": [0, 0, 10, 10], "score": 0.9},  # not a person
        {"image_id": 2, "category_id": 1, "bbox": [10, 10, 20, 30], "score": 0.05},
        {"image_id": 99, "category_id": 1, "bbox": [10, 10, 20, 30], "score": 0.8},  # unknown
        {"image_id": 3, "category_id": 1, "bbox": [500, 10, 20, 30], "score": 0.8},  # outside
    ]
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(dets))
    boxes = detection_boxes(path, coco, score_thr=0.1)
    assert set(boxes) == {1}
    b, s = boxes[1]
    np.testing.assert_allclose(b, [[0, 5, 40, 128]])  # clipped to the 160x128 image
    np.testing.assert_allclose(s, [0.9])


def test_evaluate_with_a_detection_file(data: Path, tmp_path: Path) -> None:
    coco = load_coco(data, "val")
    gt = ground_truth_boxes(coco, data / "val")
    dets = [
        {
            "image_id": i,
            "category_id": 1,
            "score": 0.5 + 0.1 * j,
            "bbox": [float(v) for v in [*row[:2], *(row[2:] - row[:2])]],
        }
        for i, (b, _) in gt.items()
        for j, row in enumerate(b)
    ]
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(dets))
    ckpt = tmp_path / "m.safetensors"
    config = ModelConfig(
        depth=18,
        codec_params={
            "input_size": [64, 96],
            "heatmap_size": [16, 24],
            "sigma": 2.0,
            "blur_kernel": 11,
        },
    )
    save(ckpt, PoseResNet(18, 17), config)
    predictor = Predictor(load(ckpt), device="cpu")
    out = tmp_path / "results.json"
    stats = evaluate(predictor, data, "val", boxes_file=path, results_path=out, batch_size=4)
    results = json.loads(out.read_text())
    assert 0 < len(results) <= len(dets)  # OKS-NMS may merge overlapping people
    assert {r["image_id"] for r in results} <= set(gt)
    assert all(len(r["keypoints"]) == 51 and 0 <= r["score"] <= 0.75 for r in results)
    assert set(stats) >= {"AP", "AP50", "AP75", "APm", "APl", "AR"}
