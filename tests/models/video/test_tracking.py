"""Tracker: max_missing, pose similarity, boxes from keypoints, motion prediction.

Ids through a crossing and after leaving, on the synthetic videos:
tests/training/test_tracking_on_synthetic_video.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.video.tracking import Detection, Tracker, keypoints_to_box


def _box_at(x: float) -> Detection:
    return Detection(np.array([x, 10.0, x + 40.0, 110.0]), 0.9)


@pytest.mark.parametrize("max_missing", [0, 3, 7])
def test_max_missing_is_respected_and_ids_are_never_reused(max_missing: int) -> None:
    tr = Tracker(max_missing=max_missing)
    t = iter(np.arange(100) / 30.0)
    first = tr.update([_box_at(50.0)], next(t))[0].track_id
    for _ in range(max_missing):  # unseen for exactly max_missing frames: still the same track
        assert tr.update([], next(t)) == []
    assert tr.update([_box_at(50.0)], next(t))[0].track_id == first
    for _ in range(max_missing + 1):  # one frame more: the track is gone
        tr.update([], next(t))
    assert tr.tracks == []
    second = tr.update([_box_at(50.0)], next(t))[0].track_id
    assert second != first
    # A third person elsewhere and the second again: ids keep counting up, none comes back.
    ids = [r.track_id for r in tr.update([_box_at(50.0), _box_at(200.0)], next(t))]
    assert ids[0] == second and ids[1] > second


def test_pose_similarity_tells_apart_people_in_the_same_box() -> None:
    """Same box, different poses: IoU alone is a tie, OKS decides."""
    rng = np.random.default_rng(0)
    box = np.array([0.0, 0.0, 100.0, 200.0])
    pose_a, pose_b = rng.uniform(0, 100, (17, 2)), rng.uniform(0, 100, (17, 2))
    pose_b[:, 1] += 100
    tr = Tracker(smoothing=None)
    ones = np.ones(17)
    first = tr.update([Detection(box, 0.9, pose_a, ones), Detection(box, 0.8, pose_b, ones)], 0.0)
    later = tr.update(
        [Detection(box, 0.9, pose_b + 1, ones), Detection(box, 0.8, pose_a - 1, ones)], 0.1
    )
    assert [r.track_id for r in later] == [first[1].track_id, first[0].track_id]


def test_keypoints_to_box_spans_the_confident_keypoints_enlarged() -> None:
    k = np.array([[10.0, 20.0], [50.0, 100.0], [30.0, 60.0], [400.0, 400.0]])
    s = np.array([0.9, 0.8, 0.5, 0.1])  # the far point is not confident
    np.testing.assert_allclose(keypoints_to_box(k, s), [5.0, 10.0, 55.0, 110.0])  # 1.25x of 40x80
    np.testing.assert_allclose(
        keypoints_to_box(k, s, image_size=(52, 300)), [5.0, 10.0, 52.0, 110.0]
    )
    assert keypoints_to_box(k, np.array([0.9, 0.1, 0.1, 0.1])) is None  # one point is no box
    assert keypoints_to_box(k + 1000, s, image_size=(320, 240)) is None  # outside the image


def test_next_boxes_come_from_the_keypoints_of_tracks_seen_last_frame() -> None:
    tr = Tracker(smoothing=None, max_missing=5, sigmas=(0.079, 0.079))  # two keypoints
    k = np.array([[10.0, 20.0], [50.0, 100.0]])
    a = tr.update([Detection(np.array([0, 0, 60, 120.0]), 0.9, k, np.ones(2))], 0.0)[0]
    tr.update([Detection(np.array([200, 0, 260, 120.0]), 0.9, k + 200, np.ones(2))], 0.1)
    boxes = dict(tr.next_boxes())
    assert a.track_id not in boxes  # unseen last frame: left to the detector
    (box,) = boxes.values()
    np.testing.assert_allclose(box, [205.0, 210.0, 255.0, 310.0])


@pytest.mark.parametrize("use_motion", [True, False])
def test_motion_prediction_carries_same_size_boxes_through_a_crossing(use_motion: bool) -> None:
    """Two equal boxes (no keypoints) meet head-on at 10 px/frame: where they overlap most, only
    the predicted positions tell them apart; without motion the ids swap."""
    tr = Tracker(use_motion=use_motion)
    ids = []
    for f in range(11):
        a, b = _box_at(10.0 * f), _box_at(105.0 - 10.0 * f)
        b.score = 0.95  # on a tie b picks first, and the first track is a's
        ids.append([r.track_id for r in tr.update([a, b], f / 30.0)])
    kept = all(i == ids[0] for i in ids)
    assert kept == use_motion, ids
