"""Synthetic four-legged animals: their own category, plausible side-view poses whose facing
sets left and right, and the people's occlusion, truncation and visibility flags."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from heatpose_cli import synth
from training.synthetic import dataset as synthetic
from training.synthetic.synthetic_animal import (
    LB_PAW,
    LF_KNEE,
    LF_PAW,
    NAMES,
    NOSE,
    RB_PAW,
    RF_PAW,
    SKELETON,
    TAIL_BASE,
    WITHERS,
    sample_animal,
)

W, H = 320, 240


@pytest.fixture(scope="module")
def dataset(module_tmp: Callable[[str], Path]) -> Path:
    out = module_tmp("animals")
    argv = ["--out", str(out), "--train", "24", "--val", "0", "--seed", "5", "--skeleton", "animal"]
    assert synth.main([*argv, "--width", str(W), "--height", str(H)]) == 0
    return out


def test_own_category_and_coco_layout(dataset: Path) -> None:
    path = dataset / "annotations" / "animal_keypoints_train.json"
    doc = json.loads(path.read_text())
    (cat,) = doc["categories"]
    assert cat["name"] == "quadruped" and cat["keypoints"] == list(NAMES)
    assert cat["skeleton"] == [[a + 1, b + 1] for a, b in SKELETON]
    assert not (dataset / "annotations" / "person_keypoints_train.json").exists()
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
    counts = {0: 0, 1: 0, 2: 0}
    for a in coco.loadAnns(coco.getAnnIds()):
        k = np.asarray(a["keypoints"], dtype=np.float64).reshape(-1, 3)
        assert a["category_id"] == 2 and a["num_keypoints"] == int((k[:, 2] > 0).sum())
        x, y, w, h = a["bbox"]
        assert x >= 0 and y >= 0 and x + w <= W and y + h <= H and w > 0 and h > 0
        for v in k[:, 2]:
            counts[int(v)] += 1
    assert min(counts.values()) > 0, counts  # cut by the border, covered, and visible


def test_pose_facing_sets_left_and_right() -> None:
    for seed in range(100):
        rng = np.random.default_rng(seed)
        a = sample_animal(rng, np.array([500.0, 300.0]), 200.0)
        k = a.keypoints
        ahead = np.sign(k[NOSE, 0] - k[TAIL_BASE, 0])
        assert ahead == a.facing  # the head is on the side it faces
        assert np.sign(k[WITHERS, 0] - k[TAIL_BASE, 0]) == a.facing
        for paw in (LF_PAW, RF_PAW, LB_PAW, RB_PAW):
            assert k[paw, 1] > k[WITHERS, 1] + 40  # paws below the back (y down)
        # Facing right shows the left side: the left legs are the near ones, drawn in front.
        near_left = a.roots[0, 1] >= a.roots[1, 1] - 1e-9
        assert near_left == (a.facing > 0), seed
        assert a.labelled.all() and np.linalg.norm(k[LF_KNEE] - a.roots[0]) > 30


def test_the_command_line_offers_every_skeleton() -> None:
    from heatpose_cli.synth import SKELETON_NAMES

    assert tuple(synthetic.SKELETONS) == SKELETON_NAMES
