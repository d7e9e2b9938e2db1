"""Training checks its data before the first step: missing image files stop it at once with one
line (count and first few), before any model is built; nothing is trained or written."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from heatpose_cli import train
from training.data.data_checks import SHOWN, used_image_files

FLAGS = (
    "--train-split train --val-split val --depth 18 --input-size 64x64 -b 2 -j 0 --epochs 1"
    " --device cpu --no-progress"
    # A backbone file that does not exist: had a model been built first, this would be the error.
    " --pretrained-backbone /no/such/backbone.pth"
)


@pytest.fixture(scope="module")
def data(make_synthetic) -> Path:
    return make_synthetic("checks", "--train 9 --val 2 --seed 2 --width 96 --height 96")


def _copy(data: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(data, root)
    return root


def _train(root: Path, tmp_path: Path, *extra: str) -> int:
    argv = ["--data-path", str(root), *FLAGS.split(), *extra, "--output-dir", str(tmp_path / "o")]
    return train.main(argv)


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("heatpose train: error: "), err
    return err


def test_missing_images_are_counted_and_the_first_named_before_any_model(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _copy(data, tmp_path)
    doc = json.loads((root / "annotations" / "person_keypoints_train.json").read_text())
    files = sorted(i["file_name"] for i in doc["images"])  # ids 1..9 in order of their names
    assert len(files) == 9
    gone = files[1:8]  # seven of nine: more than the message shows
    for name in gone:
        (root / "train" / name).unlink()
    capsys.readouterr()
    assert _train(root, tmp_path) == 2
    err = _one_line(capsys)
    shown = ", ".join(gone[:SHOWN])
    assert (
        f"7 of the 9 image files of person_keypoints_train.json (--train-split train) are "
        f"missing from {root / 'train'}: {shown}, ..." in err
    ), err
    assert gone[SHOWN] not in err
    assert "backbone" not in err  # the data check ran first
    assert not (tmp_path / "o").exists()  # nothing trained, nothing written


def test_missing_val_images_are_found_before_training_too(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _copy(data, tmp_path)
    (root / "val" / "000000000002.jpg").unlink()
    capsys.readouterr()
    assert _train(root, tmp_path, "--eval-every", "1") == 2
    err = _one_line(capsys)
    assert "1 of the 2 image files of person_keypoints_val.json (--val-split val)" in err, err
    assert err.endswith(f"missing from {root / 'val'}: 000000000002.jpg (check --data-path)")
    assert not (tmp_path / "o").exists()


def test_a_missing_image_directory_is_one_line(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _copy(data, tmp_path)
    shutil.rmtree(root / "train")
    capsys.readouterr()
    assert _train(root, tmp_path) == 2
    err = _one_line(capsys)
    assert f"image directory not found: {root / 'train'}; person_keypoints_train.json" in err
    assert "has 9 images there" in err


def test_only_images_with_a_labelled_person_are_needed(tmp_path: Path) -> None:
    ann = {"iscrowd": 0, "keypoints": [1, 2, 0] * 16 + [5, 6, 2]}  # one labelled keypoint
    doc = {
        "images": [{"id": i, "file_name": f"{i}.jpg"} for i in (4, 1, 2, 3, 5)],
        "annotations": [
            {**ann, "image_id": 4},
            {**ann, "image_id": 1},
            {**ann, "image_id": 2, "iscrowd": 1},  # crowds make no sample
            {**ann, "image_id": 3, "keypoints": [0, 0, 0] * 17},  # nothing labelled
            {**ann, "image_id": 5, "keypoints": [7, 8, 2, 1]},  # a wrong length: still counted
        ],
    }
    assert used_image_files(doc) == ["1.jpg", "4.jpg", "5.jpg"]


@pytest.mark.skipif(
    importlib.util.find_spec("training.data.keypoint_spec") is None,
    reason="the keypoint-array length check lives in training.data.keypoint_spec.check_annotations",
)
def test_a_wrong_keypoint_array_names_the_annotation_id(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _copy(data, tmp_path)
    path = root / "annotations" / "person_keypoints_train.json"
    doc = json.loads(path.read_text())
    bad = doc["annotations"][2]
    bad["keypoints"] = bad["keypoints"][:-4]  # 47 values: not even a multiple of 3
    path.write_text(json.dumps(doc))
    capsys.readouterr()
    assert _train(root, tmp_path) == 2
    err = _one_line(capsys)
    assert f"annotation id {bad['id']} has 47 keypoint values" in err, err
    assert not (tmp_path / "o").exists()
