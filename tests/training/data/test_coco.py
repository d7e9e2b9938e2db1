"""COCO top-down data: which persons become samples, what a sample holds, clear file errors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from models.pose.codec import HeatmapCodec
from models.pose.keypoints import COCO_KEYPOINTS
from training.data.coco import CocoKeypoints, DataError, clip_box
from training.data.transforms import NO_AUGMENT, TopDownTransform

CODEC = HeatmapCodec(input_size=(48, 64), heatmap_size=(12, 16))


def _kps(n_labelled: int, x0: float = 20.0) -> list[float]:
    out = []
    for j in range(17):
        out += [x0 + j, 30.0 + j, 2] if j < n_labelled else [0, 0, 0]
    return out


def _write_set(root: Path, split: str = "val2017") -> None:
    (root / split).mkdir(parents=True)
    (root / "annotations").mkdir()
    for i in (1, 2):
        cv2.imwrite(str(root / split / f"{i:012d}.jpg"), np.full((100, 120, 3), 40 * i, np.uint8))
    anns = [
        {"id": 10, "image_id": 1, "bbox": [10, 20, 40, 50], "keypoints": _kps(17), "iscrowd": 0},
        {"id": 11, "image_id": 1, "bbox": [10, 20, 40, 50], "keypoints": _kps(0), "iscrowd": 0},
        {"id": 12, "image_id": 1, "bbox": [10, 20, 40, 50], "keypoints": _kps(5), "iscrowd": 1},
        {"id": 13, "image_id": 2, "bbox": [130, 5, 20, 20], "keypoints": _kps(3), "iscrowd": 0},
        {"id": 14, "image_id": 2, "bbox": [-10, 50, 40, 80], "keypoints": _kps(2), "iscrowd": 0},
    ]
    for a in anns:
        a.update(category_id=1, area=100.0, num_keypoints=sum(v > 0 for v in a["keypoints"][2::3]))
    doc = {
        "images": [
            {"id": i, "file_name": f"{i:012d}.jpg", "width": 120, "height": 100} for i in (1, 2)
        ],
        "annotations": anns,
        "categories": [{"id": 1, "name": "person", "keypoints": list(COCO_KEYPOINTS.names)}],
    }
    (root / "annotations" / f"person_keypoints_{split}.json").write_text(json.dumps(doc))


def test_clip_box() -> None:
    np.testing.assert_allclose(clip_box([-10, 50, 40, 80], 120, 100), [0, 50, 30, 50])
    assert clip_box([130, 5, 20, 20], 120, 100) is None
    assert clip_box([10, 10, 0, 5], 120, 100) is None


def test_only_uncrowded_labelled_persons_with_boxes_in_the_image(tmp_path: Path) -> None:
    _write_set(tmp_path)
    ds = CocoKeypoints(tmp_path, "val2017", TopDownTransform(CODEC, COCO_KEYPOINTS, NO_AUGMENT))
    assert [r.ann_id for r in ds.records] == [10, 14]  # 11 unlabelled, 12 crowd, 13 off-image
    np.testing.assert_allclose(ds.records[1].box, [0, 50, 30, 50])
    item = ds[0]
    assert item["image"].shape == (64, 48, 3) and str(item["image"].dtype) == "torch.uint8"
    assert item["heatmaps"].shape == (17, 16, 12) and item["weights"].shape == (17,)
    assert item["image_id"] == 1 and item["ann_id"] == 10 and item["box_score"] == 1.0
    # Ground-truth region: box centre; 40x50 is wider than 48:64, so h = 40 / 0.75; x1.25.
    np.testing.assert_allclose(item["center"].numpy(), [30, 45])
    np.testing.assert_allclose(item["scale"].numpy(), [40 * 1.25, 40 / 0.75 * 1.25], rtol=1e-6)
    assert float(item["image"].float().mean()) == pytest.approx(40, abs=1.5)  # grey 40 crop


def test_samples_are_a_function_of_seed_epoch_index(tmp_path: Path) -> None:
    _write_set(tmp_path)
    t = TopDownTransform(CODEC, COCO_KEYPOINTS)  # full training augmentation
    a, b = CocoKeypoints(tmp_path, "val2017", t, seed=1), CocoKeypoints(tmp_path, "val2017", t, 1)
    assert np.array_equal(a[0]["keypoints"].numpy(), b[0]["keypoints"].numpy())
    b.set_epoch(1)
    assert not np.array_equal(a[0]["keypoints"].numpy(), b[0]["keypoints"].numpy())


def test_missing_files_are_named(tmp_path: Path) -> None:
    t = TopDownTransform(CODEC, COCO_KEYPOINTS, NO_AUGMENT)
    with pytest.raises(DataError, match=r"person_keypoints_val2017\.json"):
        CocoKeypoints(tmp_path, "val2017", t)
    _write_set(tmp_path)
    (tmp_path / "val2017" / "000000000001.jpg").unlink()
    ds = CocoKeypoints(tmp_path, "val2017", t)
    with pytest.raises(DataError, match=r"missing: .*000000000001\.jpg"):
        ds[0]
    (tmp_path / "val2017" / "000000000002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"unreadable .*000000000002\.jpg"):
        ds[1]
