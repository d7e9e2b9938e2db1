"""Tracker: ids through a crossing, a new id after leaving, max_missing, boxes from keypoints.

The detections are the synthetic video's ground truth with noise (2 px on boxes and keypoints)
and shuffled order, standing in for the detector and pose model.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np
import pytest

from models.similarity import box_iou
from models.smoothing import OneEuroFilter, OneEuroParams
from models.tracking import Detection, Tracker, keypoints_to_box
from training.synthetic_video import SyntheticVideo


def _detections(
    video: SyntheticVideo, seed: int, keypoints: bool = True
) -> list[tuple[list[Detection], list[int]]]:
    """Per frame: noisy shuffled detections and the person id of each (the answer key).

    As a detector would, it misses people with fewer than 5 visible keypoints (a hand or a
    sliver at the image border)."""
    rng = np.random.default_rng(seed)
    out = []
    for row in video.truth:
        dets, ids = [], []
        for i in rng.permutation(len(row)):
            p = row[i]
            if (p.flags == 2).sum() < 5:
                continue
            scores = np.select([p.flags == 2, p.flags == 1], [0.9, 0.5], 0.05)
            kp = p.keypoints + rng.normal(0.0, 2.0, p.keypoints.shape) if keypoints else None
            box = p.box + rng.normal(0.0, 2.0, 4)
            dets.append(Detection(box, 0.9, kp, scores if keypoints else None))
            ids.append(p.person_id)
        out.append((dets, ids))
    return out


def _run(video: SyntheticVideo, tracker: Tracker, **kw) -> list[list[tuple[int, int]]]:
    """Per frame ``(person_id, track_id)`` pairs."""
    frames = []
    for (dets, ids), ts in zip(_detections(video, **kw), video.timestamps, strict=True):
        frames.append(
            [(pid, r.track_id) for pid, r in zip(ids, tracker.update(dets, ts), strict=True)]
        )
    return frames


@pytest.mark.parametrize("keypoints", [True, False], ids=["iou+oks", "iou"])
def test_two_people_crossing_keep_their_ids(synthetic_scene: Callable, keypoints: bool) -> None:
    video = synthetic_scene("crossing")
    # The crossing is real: the two boxes overlap heavily and the people swap sides.
    ious = [box_iou(r[0].box, r[1].box)[0, 0] for r in video.truth]
    assert max(ious) > 0.4
    x = np.array([[p.box[0] for p in r] for r in video.truth])
    assert x[0, 0] < x[0, 1] and x[-1, 0] > x[-1, 1]
    for seed in range(3):
        frames = _run(video, Tracker(), seed=seed, keypoints=keypoints)
        tracks = defaultdict(set)
        for pid, tid in (pair for f in frames for pair in f):
            tracks[pid].add(tid)
        assert tracks == {1: {1}, 2: {2}} or tracks == {1: {2}, 2: {1}}, (seed, dict(tracks))


def test_a_person_who_leaves_and_comes_back_gets_a_new_id(synthetic_scene: Callable) -> None:
    video = synthetic_scene("leave_and_return")
    present = np.array([len(r) > 0 for r in video.truth])
    gone = np.flatnonzero(~present)
    assert present[0] and present[-1] and len(gone) > 10  # out of the picture for a while
    frames = _run(video, Tracker(max_missing=10), seed=0)
    before = {tid for f in frames[: gone[0]] for _, tid in f}
    after = {tid for f in frames[gone[-1] + 1 :] for _, tid in f}
    assert len(before) == 1 and len(after) == 1 and before != after
    assert min(after) > max(before)


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


def test_each_track_has_its_own_one_euro_filter_on_its_timestamps(
    synthetic_scene: Callable,
) -> None:
    video = synthetic_scene("crossing")
    params = OneEuroParams(min_cutoff=0.5, beta=0.03)
    dets = _detections(video, seed=4)
    tr = Tracker(smoothing=params)
    filters = {1: OneEuroFilter(params), 2: OneEuroFilter(params)}
    for (frame, ids), ts in zip(dets, video.timestamps, strict=True):
        for pid, d, r in zip(ids, frame, tr.update(frame, ts), strict=True):
            np.testing.assert_allclose(r.keypoints, filters[pid](d.keypoints, ts))
            np.testing.assert_array_equal(r.box, d.box)


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
