"""``heatpose predict``: images -> JSON / overlay PNG / COCO results; videos -> JSON lines with
stable track ids, an overlay MP4; bad input -> one line and exit 2.

The pose model is the tiny checkpoint of ``conftest.py``; the person detector is a test double
behind ``PersonDetector.detect`` (boxes known to the test), passed through ``main``'s
``detector`` injection point. Keypoints are checked against ``Predictor.predict`` run directly
on the same boxes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from app.http.schemas import ImageResult, ModelSummary
from heatpose_cli.predict import main
from models.inference.predictor import Predictor
from models.pose.keypoints import COCO_KEYPOINTS
from models.video.similarity import box_iou
from models.video.smoothing import savgol
from models.video.tracking import keypoints_to_box
from models.video.video_files import write_video
from models.weights.checkpoint import load
from tests.helpers.detectors import Boxes, StandInDetector
from training.synthetic.dataset import write_split
from training.synthetic.synthetic_video import SyntheticVideo, make_video


def image_boxes(image: np.ndarray) -> Boxes:
    """Three boxes relative to the image size; scores unsorted, one under the 0.3 threshold."""
    h, w = image.shape[:2]
    rel = np.array([[0.05, 0.1, 0.45, 0.9], [0.5, 0.05, 0.95, 0.95], [0.3, 0.3, 0.6, 0.6]])
    return rel * [w, h, w, h], np.array([0.6, 0.9, 0.2])


@pytest.fixture(scope="module")
def dataset(module_tmp: Callable[[str], Path]) -> tuple[Path, Path]:
    """Four synthetic JPEGs (160x128) in ``val/`` and their COCO annotation file."""
    root = module_tmp("synth")
    gt = write_split(root, "val", 4, seed=3, width=160, height=128)
    return root / "val", gt


def run(args: list[str], checkpoint: Path, detector: StandInDetector | None) -> int:
    return main([*args, "--checkpoint", str(checkpoint), "--device", "cpu"], detector=detector)


def test_help_is_fast_and_imports_no_torch() -> None:
    code = (
        "import sys, heatpose_cli\n"
        "try:\n    heatpose_cli.main(['predict', '--help'])\n"
        "except SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'cv2', 'fastapi', 'training') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "--det-interval" in r.stdout and "--format" in r.stdout


def test_image_folder_gives_one_json_per_image(
    dataset: tuple[Path, Path], app_checkpoint: Path, tmp_path: Path
) -> None:
    images, _ = dataset
    nested = tmp_path / "in" / "sub"
    nested.mkdir(parents=True)
    files = sorted(images.glob("*.jpg"))
    Image.open(files[0]).resize((200, 96)).save(nested / "wide.png")  # another size and format
    detector = StandInDetector.per_image(image_boxes)
    out = tmp_path / "out"
    assert (
        run([str(images), str(tmp_path / "in"), "--out", str(out)], app_checkpoint, detector) == 0
    )

    predictor = Predictor(load(app_checkpoint), "cpu", flip_test=True)
    inputs = [(f, out / f"{f.stem}.json") for f in files] + [
        (nested / "wide.png", out / "sub" / "wide.json")
    ]
    assert sorted(out.rglob("*.json")) == sorted(p for _, p in inputs)
    assert [c[0] for c in detector.calls] == [len(inputs)]  # one detector pass for the batch of 5
    for src, path in inputs:
        doc = json.loads(path.read_text())
        ModelSummary.model_validate(doc["model"])
        result = ImageResult.model_validate(doc)
        pixels = np.asarray(Image.open(src).convert("RGB"))
        assert (result.width, result.height) == (pixels.shape[1], pixels.shape[0])
        boxes, _ = image_boxes(pixels)
        assert len(result.persons) == 2  # the 0.2 box is under --bbox-thr 0.3
        expected_boxes = boxes[[1, 0]]  # best box score first
        np.testing.assert_allclose([p.bbox for p in result.persons], expected_boxes, atol=1e-3)
        assert [p.bbox_score for p in result.persons] == pytest.approx([0.9, 0.6])
        assert [p.bbox_source for p in result.persons] == ["detector", "detector"]
        (direct,) = predictor.predict([pixels], [expected_boxes])
        for person, truth in zip(result.persons, direct, strict=True):
            assert [k.name for k in person.keypoints] == list(COCO_KEYPOINTS.names)
            xy = np.array([[k.x, k.y] for k in person.keypoints])
            np.testing.assert_allclose(xy, truth.keypoints, atol=0.1)  # batch composition
            np.testing.assert_allclose([k.score for k in person.keypoints], truth.scores, rtol=1e-3)
            assert person.heatmaps is None
            # visible: confident and inside the image (issue 22 §3)
            w, h = result.width, result.height
            assert [k.visible for k in person.keypoints] == [
                k.score >= 0.3 and 0 <= k.x <= w and 0 <= k.y <= h for k in person.keypoints
            ]


@pytest.mark.slow
def test_detector_file_and_none(
    dataset: tuple[Path, Path], app_checkpoint: Path, tmp_path: Path
) -> None:
    """``--detector FILE`` loads a real PersonDetector (random torchvision weights in the
    published layout): the JSON boxes are its boxes. ``--detector none``: the whole image."""
    import torch

    from models.detection.detector import PersonDetector
    from tests.models.detection.test_detector import published_state

    images, _ = dataset
    files = sorted(images.glob("*.jpg"))[:1]
    weights = tmp_path / "person-frcnn-mbv3.pth"
    torch.save(published_state("person-frcnn-mbv3"), weights)
    args = [*map(str, files), "--out", str(tmp_path / "det"), "--detector", str(weights)]
    assert run([*args, "--max-persons", "3"], app_checkpoint, None) == 0
    real = PersonDetector.from_file(weights, device="cpu")
    pixels = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    found = real.detect(pixels, score_thr=0.3, nms_thr=0.3, max_persons=3)
    assert sum(len(d.boxes) for d in found) > 0  # the perturbed person logit finds some
    for f, det in zip(files, found, strict=True):
        doc = json.loads((tmp_path / "det" / f"{f.stem}.json").read_text())
        boxes = np.array([p["bbox"] for p in doc["persons"]]).reshape(-1, 4)
        np.testing.assert_allclose(boxes, det.boxes, atol=1e-3)

    args = [*map(str, files), "--out", str(tmp_path / "none"), "--detector", "none"]
    assert run(args, app_checkpoint, None) == 0
    for f, im in zip(files, pixels, strict=True):
        doc = json.loads((tmp_path / "none" / f"{f.stem}.json").read_text())
        (whole,) = doc["persons"]
        assert whole["bbox"] == [0, 0, im.shape[1], im.shape[0]]
        assert (whole["bbox_source"], whole["bbox_score"]) == ("image", None)


def test_overlay_pngs_have_the_image_size(
    dataset: tuple[Path, Path], app_checkpoint: Path, tmp_path: Path
) -> None:
    images, _ = dataset
    files = sorted(images.glob("*.jpg"))[:2]
    out = tmp_path / "out"
    args = [*map(str, files), "--out", str(out), "--overlay", "--batch-size", "1"]
    assert run(args, app_checkpoint, StandInDetector.per_image(image_boxes)) == 0
    for f in files:
        png = cv2.imread(str(out / f"{f.stem}.overlay.png"))
        assert png is not None
        source = cv2.imread(str(f))
        assert png.shape == source.shape
        assert np.abs(png.astype(int) - source).mean() > 1.0  # something was drawn
        doc = json.loads((out / f"{f.stem}.json").read_text())
        assert [p["heatmaps"] for p in doc["persons"]] == [None, None]  # drawn, not written


def test_coco_format_loads_in_pycocotools(
    dataset: tuple[Path, Path], app_checkpoint: Path, tmp_path: Path
) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, gt_path = dataset
    out = tmp_path / "out"
    args = [str(images), "--out", str(out), "--format", "coco", "--coco-gt", str(gt_path)]
    assert run(args, app_checkpoint, StandInDetector.per_image(image_boxes)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["coco_results.json"]
    results = json.loads((out / "coco_results.json").read_text())
    gt = COCO(str(gt_path))
    assert len(results) == 2 * len(gt.imgs)
    dt = gt.loadRes(str(out / "coco_results.json"))
    assert set(dt.getImgIds()) == set(gt.getImgIds())
    for r, box_score in zip(results, [0.9, 0.6] * len(gt.imgs), strict=True):
        kp = np.array(r["keypoints"]).reshape(-1, 3)  # per image: best box first
        assert kp.shape == (17, 3)
        confident = kp[kp[:, 2] > 0.2, 2]
        expected = box_score * (confident.mean() if len(confident) else 0.0)
        assert r["score"] == pytest.approx(expected, rel=1e-3)  # keypoint scores are rounded
    ev = COCOeval(gt, dt, "keypoints")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert np.isfinite(ev.stats[0])


def matching_frame(video: SyntheticVideo) -> Callable[[np.ndarray], Boxes]:
    """The ground-truth boxes of the frame an image is nearest to (frames read back from an
    MP4 are not bit-exact), score 0.9 each."""
    stack = np.stack(video.frames).astype(np.int16)

    def lookup(image: np.ndarray) -> Boxes:
        i = int(np.abs(stack - image.astype(np.int16)).mean(axis=(1, 2, 3)).argmin())
        boxes = np.array([t.box for t in video.truth[i]], np.float64).reshape(-1, 4)
        return boxes, np.full(len(boxes), 0.9)

    return lookup


@pytest.fixture(scope="module")
def crossing(module_tmp: Callable[[str], Path]) -> tuple[SyntheticVideo, Path]:
    video = make_video("crossing")
    path = module_tmp("video") / "crossing.mp4"
    write_video(path, video.frames, video.fps)
    return video, path


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_video_keeps_track_ids_through_the_crossing(
    crossing: tuple[SyntheticVideo, Path], app_checkpoint: Path, tmp_path: Path
) -> None:
    video, path = crossing
    out = tmp_path / "out"
    args = [str(path), "--out", str(out), "--det-interval", "1", "--overlay", "--no-flip-test"]
    assert run(args, app_checkpoint, StandInDetector.per_image(matching_frame(video))) == 0
    lines = read_lines(out / "crossing.jsonl")
    assert [m["seq"] for m in lines] == list(range(len(video.frames)))
    ids: dict[int, set[int]] = {}  # ground-truth person -> the track ids it was given
    for m, truth in zip(lines, video.truth, strict=True):
        assert (m["width"], m["height"]) == (320, 240)
        assert m["ts_ms"] == pytest.approx(m["seq"] * 1000 / video.fps, abs=1e-2)
        assert len(m["persons"]) == len(truth)
        boxes = np.array([p["bbox"] for p in m["persons"]])
        iou = box_iou(np.array([t.box for t in truth], np.float64), boxes)
        for t, j in zip(truth, iou.argmax(axis=1), strict=True):
            ids.setdefault(t.person_id, set()).add(m["persons"][j]["track_id"])
        for p in m["persons"]:
            assert set(p) == {"track_id", "bbox", "bbox_score", "score", "keypoints"}
            assert p["bbox_score"] == pytest.approx(0.9)
            kps = p["keypoints"]
            assert [k["name"] for k in kps] == list(COCO_KEYPOINTS.names)
            inside = [0 <= k["x"] <= 320 and 0 <= k["y"] <= 240 for k in kps]
            assert all(
                k["visible"] == (k["score"] >= 0.3 and i) for k, i in zip(kps, inside, strict=True)
            )
    assert ids == {1: {1}, 2: {2}} or ids == {1: {2}, 2: {1}}  # one id each, never swapped

    cap = cv2.VideoCapture(str(out / "crossing.overlay.mp4"))
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == len(video.frames)
    assert int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 320


@pytest.mark.slow
def test_detector_runs_every_det_interval_frames(
    crossing: tuple[SyntheticVideo, Path], app_checkpoint: Path, tmp_path: Path
) -> None:
    """Detector frames: the detector's boxes. In between: each track's box from its keypoints
    in the frame before, enlarged 1.25x (``keypoints_to_box``), and its last detector score."""
    video, path = crossing
    detector = StandInDetector.per_image(matching_frame(video))
    args = [str(path), "--out", str(tmp_path), "--no-flip-test", "--kpt-thr", "0"]
    assert run([*args, "--smoothing", "none"], app_checkpoint, detector) == 0
    n = len(video.frames)
    assert [c[0] for c in detector.calls] == [1] * len(range(0, n, 5))
    lines = read_lines(tmp_path / "crossing.jsonl")
    assert len(lines) == n
    before: list[dict] = []
    detected: dict[int, float] = {}  # track id -> box score at its last detector frame
    for m, truth in zip(lines, video.truth, strict=True):
        assert len(m["persons"]) == 2  # kpt-thr 0: every track can be followed
        boxes = np.array([p["bbox"] for p in m["persons"]])
        if m["seq"] % 5 == 0:
            expected = np.array([t.box for t in truth], np.float64)
        else:  # (the random pose model's keypoints wander: the tracker may start new ids)
            kps = [np.array([[k["x"], k["y"]] for k in p["keypoints"]]) for p in before]
            expected = np.array(
                [keypoints_to_box(k, np.ones(17), kpt_thr=0, image_size=(320, 240)) for k in kps]
            )
        assert np.abs(boxes[:, None] - expected[None]).max(-1).min(1) == pytest.approx(
            [0, 0], abs=0.05
        )
        for p in m["persons"]:  # a followed track keeps its last detection's box score
            if m["seq"] % 5 == 0:
                detected[p["track_id"]] = 0.9
            carried = detected.get(p["track_id"])
            assert p["bbox_score"] == (None if carried is None else pytest.approx(carried))
        before = m["persons"]


@pytest.mark.slow
def test_savgol_smooths_each_track_of_the_raw_run(
    crossing: tuple[SyntheticVideo, Path], app_checkpoint: Path, tmp_path: Path
) -> None:
    video, path = crossing
    base = [str(path), "--det-interval", "1", "--no-flip-test"]
    detector = StandInDetector.per_image(matching_frame(video))
    assert (
        run(
            [*base, "--out", str(tmp_path / "raw"), "--smoothing", "none"], app_checkpoint, detector
        )
        == 0
    )
    args = [*base, "--out", str(tmp_path / "sg"), "--smoothing", "savgol", "--savgol-window", "7"]
    assert run(args, app_checkpoint, detector) == 0

    def tracks(path: Path) -> dict[int, np.ndarray]:
        out: dict[int, list] = {}
        for m in read_lines(path):
            for p in m["persons"]:
                out.setdefault(p["track_id"], []).append([[k["x"], k["y"]] for k in p["keypoints"]])
        return {t: np.array(v) for t, v in out.items()}

    raw, smooth = (
        tracks(tmp_path / "raw" / "crossing.jsonl"),
        tracks(tmp_path / "sg" / "crossing.jsonl"),
    )
    assert raw.keys() == smooth.keys() == {1, 2}
    for t in raw:  # both persons are in every frame: one run per track
        np.testing.assert_allclose(smooth[t], savgol(raw[t], 7, 2), atol=0.02)
        assert not np.allclose(smooth[t], raw[t], atol=0.05)


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["missing.jpg"], "missing.jpg"),
        (["notes.txt"], "notes.txt"),
        (["broken.mp4"], "broken.mp4"),
        (["clip.jpg", "--smoothing", "kalman"], "--smoothing"),
        (["clip.jpg", "--savgol-window", "4"], "--savgol-window"),
        (["clip.jpg", "--bbox-thr", "2"], "--bbox-thr"),
        (["clip.jpg", "--device", "tpu"], "--device"),
        (["clip.jpg", "--detector", "no-such-detector"], "no-such-detector"),
        (["clip.jpg", "--checkpoint", "no-such.safetensors"], "no-such.safetensors"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str],
    named: str,
    app_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    Image.new("RGB", (64, 64)).save(tmp_path / "clip.jpg")
    argv = ["--out", "out", "--checkpoint", str(app_checkpoint), "--device", "cpu", *args]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own checks
        code = e.code
    assert code == 2
    assert named in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_an_unreadable_image_is_named_and_skipped(
    dataset: tuple[Path, Path],
    app_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    images, _ = dataset
    folder = tmp_path / "in"
    folder.mkdir()
    good = sorted(images.glob("*.jpg"))[0]
    (folder / good.name).write_bytes(good.read_bytes())
    (folder / "truncated.jpg").write_bytes(good.read_bytes()[:300])
    out = tmp_path / "out"
    assert (
        run(
            [str(folder), "--out", str(out)], app_checkpoint, StandInDetector.per_image(image_boxes)
        )
        == 2
    )
    err = capsys.readouterr().err.splitlines()
    named = [line for line in err if "truncated.jpg" in line]  # among the progress bar's lines
    assert len(named) == 1 and "skipped" in named[0], err
    assert [p.name for p in out.iterdir()] == [f"{good.stem}.json"]
