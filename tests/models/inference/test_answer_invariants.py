"""What no answer may contain (issue 22 §3): a box of zero or negative width or height, a
``visible`` keypoint outside the image; and without a detector a video keeps one track id
instead of starting a new one whenever the whole image is looked at."""

from __future__ import annotations

import numpy as np

from models.detection.detector import Detections
from models.inference.pipeline import detections_to_boxes, keypoint_visible
from models.pose.persons import PersonResult
from models.video.tracking import keypoints_to_box
from models.video.video_tracking import TrackingOptions, VideoTracker


def test_detections_without_area_are_dropped() -> None:
    boxes = np.array(
        [[50, 0, 77, 0], [10, 10, 60, 90], [5, 5, 3, 9], [0, 0, np.nan, 4], [1, 1, 2, 2]],
        np.float32,
    )
    scores = np.array([0.99, 0.5, 0.9, 0.95, 0.4], np.float32)
    out = detections_to_boxes(Detections(boxes, scores), max_persons=10)
    np.testing.assert_array_equal(out.boxes, [[10, 10, 60, 90], [1, 1, 2, 2]])
    np.testing.assert_allclose(out.scores, [0.5, 0.4])
    # the cap counts the persons answered, not the dropped boxes
    assert len(detections_to_boxes(Detections(boxes, scores), max_persons=1)) == 1


def test_a_keypoint_outside_the_image_is_never_visible() -> None:
    pts = np.array([[5, 5], [-0.5, 5], [5, -14], [100, 5], [5, 48.5], [100, 48]], np.float64)
    scores = np.full(6, 0.9)
    np.testing.assert_array_equal(
        keypoint_visible(scores, 0.3, keypoints=pts, image_size=(100, 48)),
        [True, False, False, True, False, True],
    )
    assert keypoint_visible(scores, 0.3).all()  # without the image: the score alone


def person(box: list[float], keypoints: np.ndarray, scores: np.ndarray) -> PersonResult:
    b = np.asarray(box, np.float64)
    centre, size = (b[:2] + b[2:]) / 2, b[2:] - b[:2]
    return PersonResult(b, keypoints.astype(np.float32), scores.astype(np.float32), centre, size)


def test_without_a_detector_the_whole_image_person_continues_its_track() -> None:
    """One person, no detector: followed from its keypoints while they are confident; when the
    pose model loses them the whole image is looked at again, and that person keeps its id
    (before: a new id each time, 23 ids for one person in 81 frames)."""
    w, h = 320, 240
    tracker = VideoTracker(TrackingOptions(det_interval=5, smoothing=None), has_detector=False)
    rng = np.random.default_rng(0)
    confident = np.full(17, 0.9)
    lost = np.full(17, 0.05)
    ids = []
    for frame in range(12):
        plan = tracker.plan(w, h)
        box = [0, 0, w, h] if plan.boxes is None else plan.boxes[0].tolist()
        kps = np.array([140, 100]) + rng.uniform(0, 40, (17, 2))  # a small person
        scores = lost if frame % 3 == 2 else confident
        (out,) = tracker.update(plan, [person(box, kps, scores)], timestamp_s=frame / 10)
        ids.append(out.track_id)
        assert keypoints_to_box(kps, scores, image_size=(w, h)) is not None or frame % 3 == 2
    assert ids == [1] * 12
