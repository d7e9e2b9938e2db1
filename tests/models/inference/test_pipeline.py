"""Pipeline: a stand-in detector's boxes become persons with their keypoints in the right place.

The pose network is the forced-heatmap spot network of ``test_predictor.py`` (every keypoint
lands on the bright spot inside the crop), so each person's keypoints are known; the detector
is a test double behind ``PersonDetector.detect``'s interface returning known boxes.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.detection.detector import Detections
from models.inference.pipeline import (
    PipelineError,
    PipelineOptions,
    PosePipeline,
    detections_to_boxes,
    keypoint_visible,
    needs_detection,
    sort_persons,
)
from models.inference.predictor import Predictor
from models.pose.persons import PersonBoxes
from models.weights.checkpoint import ModelBundle
from tests.helpers.detectors import StandInDetector
from tests.models.inference.test_predictor import INPUT, SpotDetector, _config, _scene

# Three people: a bright spot (the "person") inside each box; detector scores not sorted.
SPOTS = [(700.3, 400.7), (210.8, 655.2), (1000.0, 200.0)]
BOXES = np.array([[600, 250, 800, 550], [150, 560, 290, 760], [930, 100, 1080, 330]], np.float32)
SCORES = np.array([0.6, 0.9, 0.75], np.float32)


def _pipeline(detector: StandInDetector | None, **kw) -> tuple[PosePipeline, SpotDetector]:
    pred = Predictor(
        ModelBundle(SpotDetector(17), _config()), "cpu", flip_test=False, decode_mode="dark"
    )
    net = pred.model  # the Predictor's own copy: its forward calls are counted there
    assert isinstance(net, SpotDetector)
    return PosePipeline(pred, detector, **kw), net


def test_detected_people_come_back_in_place_sorted_by_score() -> None:
    image = _scene(SPOTS, (255, 0, 0))
    det = StandInDetector(BOXES, SCORES)
    pipe, net = _pipeline(det)
    (people,) = pipe([image])
    assert det.calls == [(1, 0.3, 0.3, 20)]
    assert net.calls == 1  # all three crops in one pose pass
    order = np.argsort(-SCORES)
    assert [p.box_score for p in people] == pytest.approx(SCORES[order].tolist())
    for person, i in zip(people, order, strict=True):
        assert person.box_source == "detector"
        np.testing.assert_allclose(person.box, BOXES[i])
        zoom = person.scale[0] / INPUT[0]
        assert np.abs(person.keypoints - SPOTS[i]).max() < 0.35 * zoom


def test_client_boxes_auto_true_false_and_no_detector() -> None:
    image = _scene(SPOTS, (255, 0, 0))
    h, w = image.shape[:2]
    det = StandInDetector(BOXES, SCORES)
    pipe, _ = _pipeline(det)
    client = [[150, 560, 290, 760]]
    # auto: the image with client boxes is not detected, the one without is
    with_boxes, without = pipe([image, image], [np.array(client), None])
    assert det.calls == [(1, 0.3, 0.3, 20)]
    assert [p.box_source for p in with_boxes] == ["client"]
    assert with_boxes[0].box_score is None
    assert np.abs(with_boxes[0].keypoints - SPOTS[1]).max() < 2.0
    assert [p.box_source for p in without] == ["detector"] * 3
    # true: every image goes to the detector, in one pass
    det.calls.clear()
    a, b = pipe([image, image], [np.array(client), None], PipelineOptions(detect="true"))
    assert det.calls == [(2, 0.3, 0.3, 20)]
    assert [p.box_source for p in a] == [p.box_source for p in b] == ["detector"] * 3
    # false: no detector call; no boxes = the whole image
    det.calls.clear()
    (whole,) = pipe([image], None, PipelineOptions(detect="false"))
    assert det.calls == [] and len(whole) == 1
    assert whole[0].box_source == "image" and whole[0].box_score is None
    np.testing.assert_allclose(whole[0].box, [0, 0, w, h])
    # no detector: auto = whole image, true = an error
    bare, _ = _pipeline(None)
    assert [p.box_source for p in bare([image])[0]] == ["image"]
    with pytest.raises(PipelineError, match="no person detector"):
        bare([image], None, PipelineOptions(detect="true"))


def test_poses_of_persons_found_apart_are_the_whole_calls() -> None:
    """person_boxes then poses (how evaluation batches the two stages apart) gives what one
    call gives; poses detects nothing itself, and sorts by box score."""
    image = _scene(SPOTS, (255, 0, 0))
    det = StandInDetector(BOXES, SCORES)
    pipe, net = _pipeline(det)
    options = PipelineOptions(bbox_thr=0.0)
    persons = pipe.person_boxes([image], None, options)
    assert [p.source for p in persons] == ["detector"] and len(det.calls) == 1
    reversed_boxes = PersonBoxes(persons[0].boxes[::-1], persons[0].scores[::-1], "detector")
    (apart,) = pipe.poses([image], [reversed_boxes], options)
    assert len(det.calls) == 1 and net.calls == 1
    (whole,) = pipe([image], None, options)
    best_first = sorted(SCORES.tolist(), reverse=True)
    assert [p.box_score for p in apart] == [p.box_score for p in whole] == best_first
    for a, w in zip(apart, whole, strict=True):
        np.testing.assert_allclose(a.keypoints, w.keypoints, atol=1e-4)
        assert a.box_source == w.box_source == "detector"
    with pytest.raises(ValueError, match="2 images but 1 person box lists"):
        pipe.poses([image, image], persons, options)


def test_nobody_and_too_many_people() -> None:
    image = _scene(SPOTS, (255, 0, 0))
    pipe, net = _pipeline(StandInDetector(np.zeros((0, 4), np.float32), np.zeros(0, np.float32)))
    assert pipe([image, image]) == [[], []]
    assert net.calls == 0
    # 30 detections, max_persons 20 (and 2): the best scores are kept, best first
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1000, 30)
    y = rng.uniform(0, 700, 30)
    many = np.stack([x, y, x + 150, y + 200], 1).astype(np.float32)
    scores = rng.permutation(np.linspace(0.31, 0.99, 30)).astype(np.float32)
    det = StandInDetector(many, scores)
    pipe, net = _pipeline(det, max_batch_size=8)
    (people,) = pipe([image])
    best = np.sort(scores)[::-1]
    assert [p.box_score for p in people] == pytest.approx(best[:20].tolist())
    assert net.calls == 3  # 20 crops in batches of 8
    (two,) = pipe([image], None, PipelineOptions(max_persons=2, bbox_thr=0.5))
    assert det.calls[-1] == (1, 0.5, 0.3, 2)
    assert [p.box_score for p in two] == pytest.approx(best[:2].tolist())


def test_detections_to_boxes_caps_after_sorting() -> None:
    det = Detections(BOXES, SCORES)
    pb = detections_to_boxes(det, max_persons=2)
    assert pb.source == "detector"
    np.testing.assert_allclose(pb.scores, [0.9, 0.75])
    np.testing.assert_allclose(pb.boxes, BOXES[[1, 2]])
    assert len(detections_to_boxes(det, max_persons=0)) == 0


def test_needs_detection_visibility_and_sorting() -> None:
    box = PersonBoxes.from_client([[0, 0, 10, 10]], 20, 20)
    assert needs_detection(None, "auto", has_detector=True)
    assert not needs_detection(box, "auto", has_detector=True)
    assert not needs_detection(None, "auto", has_detector=False)
    assert needs_detection(box, "true", has_detector=True)
    assert not needs_detection(None, "false", has_detector=True)
    with pytest.raises(PipelineError):
        needs_detection(None, "maybe", has_detector=True)  # type: ignore[arg-type]
    np.testing.assert_array_equal(
        keypoint_visible(np.array([0.1, 0.3, 0.9, np.nan]), 0.3), [False, True, True, False]
    )
    image = _scene(SPOTS, (255, 0, 0))
    pipe, _ = _pipeline(None)
    (client,) = pipe([image], [BOXES[[2, 0, 1]]])  # client boxes keep their order
    np.testing.assert_allclose([p.box for p in client], BOXES[[2, 0, 1]])
    assert sort_persons(client) == client
