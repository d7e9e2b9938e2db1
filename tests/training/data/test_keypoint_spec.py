"""The keypoint spec from the data: category choice, flip pairs and half-body groups from names,
OKS sigmas, files that override them, and one-line stops on categories that do not fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from heatpose_cli import train
from heatpose_cli.train import DEFAULT_OKS_SIGMA, parse_args
from models.pose.keypoints import COCO_KEYPOINTS
from training.data.coco import DataError
from training.data.keypoint_spec import (
    check_annotations,
    infer_body_halves,
    infer_flip_pairs,
    select_category,
    sigmas_for,
    spec_for_training,
)
from training.synthetic.synthetic_animal import NAMES as ANIMAL


@pytest.mark.parametrize(
    ("names", "pairs"),
    [
        (["nose", "left_eye", "right_eye"], [("left_eye", "right_eye")]),
        (["L_Shoulder", "r_shoulder", "Neck"], [("L_Shoulder", "r_shoulder")]),
        (
            ["paw-left", "paw-right", "ear_L", "ear_R"],
            [("paw-left", "paw-right"), ("ear_L", "ear_R")],
        ),
        (["LeftHand", "RightHand", "Head"], [("LeftHand", "RightHand")]),
        (["front left paw", "front right paw"], [("front left paw", "front right paw")]),
        (["base", "elbow", "tip", "l", "r", "lower", "rib"], []),  # nothing sided
        (["left_eye", "right_ear"], []),  # sides without a partner
    ],
)
def test_flip_pairs_from_the_naming_conventions(names: list[str], pairs: list) -> None:
    got = [(names[i], names[j]) for i, j in infer_flip_pairs(names)]
    assert sorted(got) == sorted(pairs)


def test_coco_names_give_cocos_flip_pairs_and_body_halves() -> None:
    pairs = infer_flip_pairs(COCO_KEYPOINTS.names)
    flip = list(range(17))
    for i, j in pairs:
        flip[i], flip[j] = j, i
    assert tuple(flip) == COCO_KEYPOINTS.flip_indices
    assert infer_body_halves(COCO_KEYPOINTS.names) == (
        COCO_KEYPOINTS.upper_body,
        COCO_KEYPOINTS.lower_body,
    )


def test_animal_halves_are_front_and_back() -> None:
    upper, lower = infer_body_halves(ANIMAL) or ((), ())
    assert {ANIMAL[i] for i in upper} == {
        "nose",
        "withers",
        "left_front_knee",
        "left_front_paw",
        "right_front_knee",
        "right_front_paw",
    }
    assert {ANIMAL[i] for i in lower} == {
        "tail_base",
        "tail_tip",
        "left_back_knee",
        "left_back_paw",
        "right_back_knee",
        "right_back_paw",
    }
    assert infer_body_halves(["base", "joint1", "joint2", "tip"]) is None


def test_sigmas_cocos_for_coco_names_file_then_default(tmp_path: Path) -> None:
    names = ["nose", "left_knee", "withers", "tail_tip"]
    sigmas, source = sigmas_for(names, None, 0.05)
    assert sigmas == (0.026, 0.087, 0.05, 0.05)
    assert source == {"file": [], "COCO": ["nose", "left_knee"], "default": ["withers", "tail_tip"]}
    f = tmp_path / "sigmas.json"
    f.write_text(json.dumps({"nose": 0.04, "withers": 0.1}))
    sigmas, _ = sigmas_for(names, f, 0.05)
    assert sigmas == (0.04, 0.087, 0.1, 0.05)
    f.write_text(json.dumps({"hoof": 0.1}))
    with pytest.raises(DataError, match=r"--oks-sigmas .*'hoof' is not a keypoint"):
        sigmas_for(names, f, 0.05)
    f.write_text(json.dumps({"nose": -1}))
    with pytest.raises(DataError, match=r"sigma of 'nose' is not a number > 0"):
        sigmas_for(names, f, 0.05)


def _cat(cid: int, name: str, k: int) -> dict:
    return {"id": cid, "name": name, "keypoints": [f"p{i}" for i in range(k)], "skeleton": []}


def test_category_choice() -> None:
    path = Path("ann.json")
    doc = {"categories": [_cat(3, "dog", 9), _cat(1, "person", 17), {"id": 5, "name": "car"}]}
    assert select_category(doc, None, path)["name"] == "person"
    assert select_category(doc, "dog", path)["id"] == 3
    assert select_category(doc, "3", path)["name"] == "dog"
    with pytest.raises(
        DataError, match=r"--category 'car' is not a keypoint category.*'dog' \(id 3\)"
    ):
        select_category(doc, "car", path)
    two = {"categories": [_cat(3, "dog", 9), _cat(4, "cat", 9)]}
    with pytest.raises(DataError, match=r"several keypoint categories .*choose with --category"):
        select_category(two, None, path)
    assert select_category({"categories": [_cat(4, "cat", 9)]}, None, path)["id"] == 4


def test_wrong_array_length_names_the_first_bad_annotation() -> None:
    cat = _cat(2, "dog", 9)
    anns = [
        {"id": 5, "category_id": 2, "keypoints": [0] * 27},
        {"id": 6, "category_id": 1, "keypoints": [0] * 51},  # another category: not checked
        {"id": 7, "category_id": 2, "keypoints": [0] * 51},
        {"id": 8, "category_id": 2, "keypoints": [0] * 3},
    ]
    with pytest.raises(DataError, match=r"annotation id 7 has 51 keypoint values .*'dog'"):
        check_annotations({"annotations": anns}, cat, Path("a.json"))


def _write(root: Path, names: list[str], k_values: int | None = None, split: str = "train") -> Path:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / split).mkdir(exist_ok=True)
    k = len(names)
    anns = [
        {
            "id": 40 + i,
            "image_id": 1,
            "category_id": 7,
            "bbox": [0, 0, 10, 10],
            "iscrowd": 0,
            "keypoints": [1.0, 1.0, 2] * k if k_values is None or i == 0 else [1.0] * k_values,
        }
        for i in range(3)
    ]
    doc = {
        "images": [{"id": 1, "file_name": "1.jpg", "width": 10, "height": 10}],
        "annotations": anns,
        "categories": [{"id": 7, "name": "arm", "keypoints": names, "skeleton": [[1, 2], [2, 3]]}],
    }
    (root / "annotations" / f"arm_keypoints_{split}.json").write_text(json.dumps(doc))
    return root


def _args(root: Path, *extra: str):
    return parse_args(
        ["--data-path", str(root), "--train-split", "train", "--val-split", "val", *extra]
    )


def test_no_pairs_turns_flip_off_and_says_so(tmp_path: Path) -> None:
    root = _write(tmp_path, ["base", "elbow", "tip"])
    args = _args(root)
    said: list[str] = []
    spec = spec_for_training(args, say=said.append)
    assert spec.names == ("base", "elbow", "tip") and spec.flip_indices == (0, 1, 2)
    assert spec.skeleton == ((0, 1), (1, 2))
    assert spec.sigmas == (DEFAULT_OKS_SIGMA,) * 3
    assert args.flip_prob == 0.0 and args.half_body_prob == 0.0
    assert any("horizontal flip augmentation is off" in s for s in said)
    assert any(s.startswith("warning: no upper/lower body groups") for s in said)


def test_files_override_pairs_sigmas_and_halves(tmp_path: Path) -> None:
    root = _write(tmp_path, ["a", "b", "c", "d"])
    (tmp_path / "pairs.json").write_text(json.dumps([["a", "c"]]))
    (tmp_path / "upper.json").write_text(json.dumps(["a", "c"]))
    (tmp_path / "sig.json").write_text(json.dumps({"d": 0.2}))
    args = _args(
        root,
        "--flip-pairs",
        str(tmp_path / "pairs.json"),
        "--upper-body",
        str(tmp_path / "upper.json"),
        "--oks-sigmas",
        str(tmp_path / "sig.json"),
        "--default-sigma",
        "0.03",
    )
    spec = spec_for_training(args, say=lambda _: None)
    assert spec.flip_indices == (2, 1, 0, 3)
    assert (spec.upper_body, spec.lower_body) == ((0, 2), (1, 3))
    assert spec.sigmas == (0.03, 0.03, 0.03, 0.2)
    assert args.flip_prob == 0.5 and args.half_body_prob == 0.3
    (tmp_path / "pairs.json").write_text(json.dumps([["a", "c"], ["c", "d"]]))
    with pytest.raises(DataError, match=r"--flip-pairs .*'c' is in more than one pair"):
        spec_for_training(args, say=lambda _: None)


def test_person_data_gives_the_coco_spec(tmp_path: Path) -> None:
    root = tmp_path / "data"
    from heatpose_cli import synth as synthetic

    synthetic.main(
        ["--out", str(root), "--train", "1", "--val", "1", "--width", "64", "--height", "64"]
    )
    assert spec_for_training(_args(root), say=lambda _: None) == COCO_KEYPOINTS


def test_mismatched_category_stops_training_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _write(tmp_path, ["base", "elbow", "tip"], k_values=12)
    argv = [
        "--data-path",
        str(root),
        "--train-split",
        "train",
        "--val-split",
        "train",
        "--depth",
        "18",
        "--pretrained-backbone",
        "none",
        "--output-dir",
        str(tmp_path / "o"),
    ]
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "annotation id 41 has 12 keypoint values" in err[0]
    assert "'arm' (id 7) has 3 keypoints" in err[0]
    assert not (tmp_path / "o" / "metrics.jsonl").exists()  # stopped before training
