"""`--boxes detector`: evaluation runs a person detector over the split, writes its COCO detection
file and reports person box AP next to the keypoint AP from those boxes.

The detector here is a test double behind ``PersonDetector.detect``: the ground-truth boxes of
the image it is given (found by the image's bytes), with noise.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from heatpose_cli import eval as evaluate_module
from heatpose_cli import synth as synthetic
from models.detection.detector import Detections
from models.inference.pipeline import PipelineOptions, PosePipeline
from models.inference.predictor import Predictor
from models.pose.network import PoseResNet
from models.pose.persons import PersonBoxes
from models.weights.checkpoint import load, save
from models.weights.model_config import ModelConfig
from training.data.coco import load_coco, read_image
from training.eval.eval_pipeline import coco_options, predict_split
from training.evaluate import detection_boxes, evaluate


class GroundTruthDetector:
    """Ground-truth boxes (every non-crowd person annotation) jittered by ``noise`` x the box
    size per coordinate, scores uniform in [0.5, 1); records its calls."""

    def __init__(self, data: Path, split: str, noise: float, seed: int = 0) -> None:
        coco = load_coco(data, split)
        rng = np.random.default_rng(seed)
        self.by_image: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for info in coco.dataset["images"]:
            image = cv2.cvtColor(read_image(data / split / info["file_name"]), cv2.COLOR_BGR2RGB)
            anns = coco.loadAnns(coco.getAnnIds(imgIds=info["id"], iscrowd=False))
            xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
            boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
            boxes += rng.normal(0.0, noise, boxes.shape) * np.tile(xywh[:, 2:], 2)
            self.by_image[_key(image)] = (boxes, rng.uniform(0.5, 1.0, len(boxes)))
        self.calls: list[tuple[int, float, float, int]] = []

    def detect(self, images: list[np.ndarray], *, score_thr, nms_thr, max_persons) -> list:
        self.calls.append((len(images), score_thr, nms_thr, max_persons))
        out = []
        for image in images:
            boxes, scores = self.by_image[_key(image)]
            order = [i for i in np.argsort(-scores) if scores[i] >= score_thr][:max_persons]
            found = boxes[order].astype(np.float32), scores[order].astype(np.float32)
            out.append(Detections(*found))
        return out


def _key(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def data(module_tmp: Callable[[str], Path]) -> Path:
    out = module_tmp("evdet") / "data"
    args = ["--out", str(out), "--train", "0", "--val", "8", "--seed", "4"]
    synthetic.main([*args, "--width", "160", "--height", "128"])
    return out


@pytest.fixture(scope="module")
def predictor(module_tmp: Callable[[str], Path]) -> Predictor:
    ckpt = module_tmp("m") / "m.safetensors"
    codec = {"input_size": [64, 96], "heatmap_size": [16, 24], "sigma": 2.0, "blur_kernel": 11}
    save(ckpt, PoseResNet(18, 17), ModelConfig(depth=18, codec_params=codec))
    return Predictor(load(ckpt), device="cpu")


def test_exact_boxes_give_box_ap_one(data: Path, predictor: Predictor) -> None:
    detector = GroundTruthDetector(data, "val", noise=0.0)
    stats = evaluate(predictor, data, "val", batch_size=16, detector=detector, det_batch_size=3)
    assert stats["box_AP"] == pytest.approx(1.0)
    assert [c[0] for c in detector.calls] == [3, 3, 2]  # 8 images, 3 a detector call
    assert {c[1:] for c in detector.calls} == {(0.0, 0.5, 100)}  # the COCO protocol


def test_noisy_boxes_report_both_aps_and_match_a_detection_file(
    data: Path, predictor: Predictor, tmp_path: Path
) -> None:
    detector = GroundTruthDetector(data, "val", noise=0.06)
    dets, out = tmp_path / "dets.json", tmp_path / "kps.json"
    stats = evaluate(
        predictor,
        data,
        "val",
        results_path=out,
        batch_size=16,
        detector=detector,
        detections_path=dets,
    )
    assert 0.2 < stats["box_AP"] < 0.95  # noisy boxes: good, not perfect
    assert stats["box_AP50"] > 0.9
    assert {"AP", "AP50", "AR", "box_AP", "box_AR100"} <= set(stats)
    written = json.loads(dets.read_text())
    total = sum(len(b) for b, _ in detector.by_image.values())
    assert len(written) == total and all(d["category_id"] == 1 for d in written)
    assert json.loads(out.read_text())  # the keypoint results from those boxes
    # the same boxes read back from the written file give the same keypoint stats
    from_file = evaluate(predictor, data, "val", boxes_file=dets, batch_size=16)
    assert from_file == {k: v for k, v in stats.items() if not k.startswith("box_")}


def test_cli_boxes_detector(data: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    ckpt = tmp_path / "m.safetensors"
    codec = {"input_size": [64, 96], "heatmap_size": [16, 24], "sigma": 2.0, "blur_kernel": 11}
    save(ckpt, PoseResNet(18, 17), ModelConfig(depth=18, codec_params=codec))
    double = GroundTruthDetector(data, "val", noise=0.06)
    monkeypatch.setattr("training.evaluate.load_detector", lambda name, device: double)
    out = tmp_path / "out" / "kps.json"
    args = ["--checkpoint", str(ckpt), "--data-path", str(data), "--split", "val", "-j", "0"]
    args += ["--boxes", "detector", "--detector", "x", "--output", str(out), "--device", "cpu"]
    assert evaluate_module.main(args) == 0
    printed = capsys.readouterr().out
    assert "person boxes (x):" in printed and "AR100" in printed
    assert (tmp_path / "out" / "kps_person_boxes.json").is_file() and out.is_file()


def test_cli_boxes_errors_are_one_line(data: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HEATPOSE_HOME", str(tmp_path))
    ckpt = tmp_path / "m.safetensors"
    save(ckpt, PoseResNet(18, 17), ModelConfig(depth=18))
    args = ["--checkpoint", str(ckpt), "--data-path", str(data), "--split", "val"]
    for extra, message in (
        (["--boxes", "nope.json"], "--boxes file not found: nope.json"),
        (["--boxes", "detector", "--detector", "nope"], "--detector nope: 'nope' is neither"),
    ):
        try:  # a bad flag stops in the parser, a bad detector when it is loaded: both exit 2
            status = evaluate_module.main([*args, *extra])
        except SystemExit as exit_info:
            status = exit_info.code
        assert status == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1


def _images(data: Path, split: str) -> tuple[list[int], list[np.ndarray]]:
    """The split's image ids (sorted) and RGB images, decoded here."""
    coco = load_coco(data, split)
    ids = sorted(coco.imgs)
    files = [data / split / coco.imgs[i]["file_name"] for i in ids]
    return ids, [cv2.cvtColor(read_image(f), cv2.COLOR_BGR2RGB) for f in files]


@pytest.mark.parametrize("boxes", ["detector", "file"])
def test_evaluation_gives_the_persons_of_the_pipeline_called_directly(
    data: Path, predictor: Predictor, tmp_path: Path, boxes: str
) -> None:
    """Evaluation's persons are PosePipeline's: the same keypoints per image, in the same order
    (by box score), as one direct pipeline call on all images decoded here, whatever the
    evaluation's batching (3 images a detector pass, passes of >= 5 crops)."""
    detector = GroundTruthDetector(data, "val", noise=0.06, seed=1)
    ids, images = _images(data, "val")
    coco = load_coco(data, "val")
    pipe = PosePipeline(predictor, detector)
    if boxes == "detector":  # the COCO protocol, written out here
        opts = PipelineOptions(detect="true", bbox_thr=0.0, nms_thr=0.5, max_persons=100)
        direct = pipe(images, None, opts)
        given, options = None, coco_options()
        kw: dict = {"detector": detector, "det_batch_size": 3}
    else:  # a detection file: scores not in order, boxes clipped to their images
        rng = np.random.default_rng(3)
        file_boxes, dets = [], []
        for image_id, image in zip(ids, images, strict=True):
            b, _ = detector.by_image[_key(image)]
            height, width = image.shape[:2]
            b = np.clip(b.round(2), 0, [width, height, width, height])
            s = rng.uniform(0.1, 1.0, len(b))
            file_boxes.append(PersonBoxes(b, s, "client"))
            for row, score in zip(b.tolist(), s.tolist(), strict=True):
                xywh = [*row[:2], row[2] - row[0], row[3] - row[1]]
                dets.append({"image_id": image_id, "category_id": 1, "bbox": xywh, "score": score})
        direct = pipe(images, file_boxes, PipelineOptions(detect="false"))
        path = tmp_path / "dets.json"
        path.write_text(json.dumps(dets))
        given = detection_boxes(path, coco)
        options, kw = PipelineOptions(detect="false"), {"boxes_file": path}
    assert sum(map(len, direct)) > len(images)  # several people an image

    # the evaluation's persons, unrounded: within 1e-3 px, same boxes and provenance (other
    # batch compositions change float32 convolution sums: ~1e-6 relative, 1.3e-4 px seen)
    found = predict_split(
        PosePipeline(predictor, detector if boxes == "detector" else None),
        coco,
        data / "val",
        given,
        options=options,
        batch_size=5,
        det_batch_size=3,
    )
    assert sorted(found) == ids
    for image_id, people in zip(ids, direct, strict=True):
        got = found[image_id]
        assert [p.box_source for p in got] == [p.box_source for p in people]
        assert [p.box_score for p in got] == pytest.approx([p.box_score for p in people])
        for g, p in zip(got, people, strict=True):
            np.testing.assert_allclose(g.box, p.box, atol=1e-6)
            np.testing.assert_allclose(g.keypoints, p.keypoints, atol=1e-3)
            np.testing.assert_allclose(g.scores, p.scores, atol=1e-5)

    # the COCO results of evaluate(): per image the same keypoints in the same order (the
    # file rounds them to 0.001 px), scored box score x mean keypoint score above 0.2
    out = tmp_path / "kps.json"
    evaluate(predictor, data, "val", results_path=out, batch_size=5, nms_threshold=None, **kw)
    results = json.loads(out.read_text())
    for image_id, people in zip(ids, direct, strict=True):
        rows = [r for r in results if r["image_id"] == image_id]
        assert len(rows) == len(people)
        for r, p in zip(rows, people, strict=True):
            kps = np.array(r["keypoints"]).reshape(-1, 3)
            np.testing.assert_allclose(kps[:, :2], p.keypoints, atol=6e-4)
            confident = p.scores[p.scores > 0.2]
            mean = confident.mean() if len(confident) else 0.0
            assert r["score"] == pytest.approx(p.box_score * mean, abs=1e-6)


def test_cli_auto_detector_offline_evaluates_with_ground_truth_boxes(
    data: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    """``--boxes detector`` with ``--detector auto`` (the default) whose weights cannot be had:
    one line saying so, then the ground-truth boxes; a named detector stays required."""
    monkeypatch.setenv("HEATPOSE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HEATPOSE_WEIGHTS_URL", "http://127.0.0.1:9")  # closed: offline
    ckpt = tmp_path / "m.safetensors"
    codec = {"input_size": [64, 96], "heatmap_size": [16, 24], "sigma": 2.0, "blur_kernel": 11}
    save(ckpt, PoseResNet(18, 17), ModelConfig(depth=18, codec_params=codec))
    args = ["--checkpoint", str(ckpt), "--data-path", str(data), "--split", "val", "-j", "0"]
    args += ["--boxes", "detector", "--output", str(tmp_path / "kps.json"), "--device", "cpu"]
    assert evaluate_module.main(args) == 0
    captured = capsys.readouterr()
    (said,) = [line for line in captured.err.splitlines() if "person detection is off" in line]
    assert "cannot download" in said and "--boxes gt" in said
    assert "person boxes (" not in captured.out and "AP" in captured.out
    assert evaluate_module.main([*args, "--detector", "person-rcnn-r50-fpn"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--boxes gt" in err and "cannot download" in err
