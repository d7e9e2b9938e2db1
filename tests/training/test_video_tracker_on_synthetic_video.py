"""The per-frame logic of streams and video files
(:class:`models.video.video_tracking.VideoTracker`) on synthetic video, with a stand-in pose model
that knows the true poses.

Here, not in tests/models, because the videos come from training's generator: the core's tests
do not import `training`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from models.pose.persons import PersonResult
from models.video.similarity import box_iou
from models.video.tracking import keypoints_to_box
from models.video.video_tracking import TrackingOptions, VideoTracker
from training.synthetic.synthetic_video import make_video


def truth_results(
    frame_truth: list[Any], boxes: np.ndarray | None
) -> tuple[list[PersonResult], list[int]]:
    """A stand-in pose model that knows the truth: on a detector frame (``boxes`` None) every
    visible person with its true box; for given boxes, the person each box overlaps most."""
    people = [t for t in frame_truth if (t.flags > 0).sum() >= 4]
    truth_boxes = np.stack([t.box for t in people]) if people else np.zeros((0, 4))
    if boxes is None:
        chosen, out_boxes, det = people, truth_boxes, 0.9
    else:
        iou = box_iou(np.asarray(boxes), truth_boxes)
        chosen = [people[int(i)] for i in iou.argmax(1)] if people else []
        out_boxes, det = np.asarray(boxes), None
    results = [
        PersonResult(
            box=b,
            keypoints=t.keypoints.astype(np.float32),
            scores=np.where(t.flags > 0, 0.9, 0.1).astype(np.float32),
            center=(b[:2] + b[2:]) / 2,
            scale=b[2:] - b[:2],
            box_score=det,
            box_source="detector" if det else "client",
        )
        for t, b in zip(chosen, out_boxes, strict=True)
    ]
    return results, [t.person_id for t in chosen]


@pytest.mark.parametrize("det_interval", [1, 5])
def test_two_people_crossing_keep_their_track_ids(det_interval: int) -> None:
    video = make_video("crossing")
    tracker = VideoTracker(TrackingOptions(det_interval=det_interval), has_detector=True)
    pairs: set[tuple[int, int]] = set()  # (true person id, track id)
    followed = 0
    for frame, truth, ts in zip(video.frames, video.truth, video.timestamps, strict=True):
        h, w = frame.shape[:2]
        plan = tracker.plan(w, h)
        assert plan.detect == ("auto" if plan.boxes is None else "false")
        followed += plan.boxes is not None
        results, true_ids = truth_results(truth, plan.boxes)
        tracked = tracker.update(plan, results, timestamp_s=float(ts))
        for p, true_id in zip(tracked, true_ids, strict=True):
            pairs.add((true_id, p.track_id))
            assert p.person.box_score == 0.9  # followed: the track's last detector score
    assert pairs == {(1, 1), (2, 2)} or pairs == {(1, 2), (2, 1)}, pairs
    assert followed == (0 if det_interval == 1 else pytest.approx(len(video.frames) * 0.8, abs=3))


@pytest.mark.parametrize("has_detector", [True, False])
def test_followed_boxes_come_from_the_last_keypoints_best_tracks_first(has_detector: bool) -> None:
    """Between detector frames: each track's raw keypoints of the frame before, their box
    enlarged 1.25x and clipped to the image, the best-scoring ``max_persons`` tracks; without a
    detector the image is looked at whole only while no track can be followed."""
    video = make_video("crossing")
    options = TrackingOptions(det_interval=4, max_persons=1, smoothing=None)
    tracker = VideoTracker(options, has_detector=has_detector)
    h, w = video.frames[0].shape[:2]
    detector_frames = []
    for i, (truth, ts) in enumerate(zip(video.truth, video.timestamps, strict=True)):
        plan = tracker.plan(w, h)
        if plan.boxes is None:
            detector_frames.append(i)
            results, _ = truth_results(truth, None)
            results[0].box_score = 0.95  # the better box: its track is followed
        else:
            assert plan.boxes.shape == (1, 4)
            seen = [t for t in tracker.tracker.tracks if t.missing == 0]
            best = max(seen, key=lambda t: t.score)
            assert plan.track_ids == (best.track_id,)
            expected = keypoints_to_box(
                best.keypoints, best.keypoint_scores, kpt_thr=0.3, image_size=(w, h)
            )
            np.testing.assert_allclose(plan.boxes[0], expected)
            results, _ = truth_results(truth, plan.boxes)
        tracker.update(plan, results, timestamp_s=float(ts))
    assert detector_frames == (list(range(0, len(video.frames), 4)) if has_detector else [0])
