"""The smoothing and tracking of `models/` on the synthetic videos of `training/` (the truth of
every frame is known): One Euro jitter, lag and dropped frames, Savitzky-Golay, tracker ids
through a crossing and after leaving, one filter per track.

They are here, not in tests/models, because they need training's video generator: the core's
tests do not import `training`. The detections are the video's ground truth with noise (2 px
on boxes and keypoints) and shuffled order, standing in for the detector and pose model.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np
import pytest

from models.video.similarity import box_iou
from models.video.smoothing import OneEuroFilter, OneEuroParams, savgol
from models.video.tracking import Detection, Tracker
from tests.models.video.test_smoothing import _filter
from training.synthetic.synthetic_video import SyntheticVideo

RIGID = [0, 1, 2, 3, 4, 5, 6, 11, 12]  # head, shoulders, hips: they do not swing with the gait


def _truth(video: SyntheticVideo, ids: list[int] | None = None) -> np.ndarray:
    """``(T, K, 2)`` keypoints of person 1, image px."""
    k = np.stack([next(p for p in row if p.person_id == 1).keypoints for row in video.truth])
    return k if ids is None else k[:, ids]


def _rms_step(x: np.ndarray) -> float:
    return float(np.sqrt((np.diff(x, axis=0) ** 2).sum(-1).mean()))


def test_one_euro_cuts_jitter_at_rest_at_least_3x(synthetic_scene: Callable) -> None:
    video = synthetic_scene("static")
    truth = _truth(video)
    assert np.ptp(truth, axis=0).max() == 0  # the person really stands still
    rng = np.random.default_rng(1)
    raw = truth + rng.normal(0.0, 2.0, truth.shape)
    out = _filter(raw, video.timestamps)
    warm = int(video.fps)  # the first second is the filter's warm-up
    ratio = _rms_step(raw[warm:]) / _rms_step(out[warm:])
    assert ratio >= 3.0, ratio
    assert np.abs(out[warm:] - truth[warm:]).mean() < np.abs(raw - truth).mean()


def _lag_frames(video: SyntheticVideo, out: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Mean error along the motion over the rigid keypoints, in frames of motion, per frame."""
    step = np.diff(truth.mean(1), axis=0).mean(0)  # px per frame
    return ((truth - out).mean(1) @ step) / (step @ step)


def test_one_euro_lag_stays_under_2_frames_at_constant_speed(synthetic_scene: Callable) -> None:
    video = synthetic_scene("constant_speed")
    truth = _truth(video, RIGID)
    step = np.linalg.norm(np.diff(truth.mean(1), axis=0), axis=1)
    assert step.min() > 3.0 and np.ptp(step) < 1e-6  # moving, at one speed (3.2 px/frame)
    rng = np.random.default_rng(2)
    out = _filter(truth + rng.normal(0.0, 2.0, truth.shape), video.timestamps)
    lag = _lag_frames(video, out, truth)[int(video.fps) :]
    assert 0.0 < lag.mean() < 2.0, lag.mean()
    # Beta is what keeps the lag short: without it the same filter lags far more.
    slow = _filter(
        truth + rng.normal(0.0, 2.0, truth.shape), video.timestamps, OneEuroParams(beta=0.0)
    )
    assert _lag_frames(video, slow, truth)[int(video.fps) :].mean() > 4.0


def test_dropped_frames_are_a_longer_step_not_a_jump(synthetic_scene: Callable) -> None:
    """Frames lost in gaps: the filter, driven by timestamps, stays as close to the truth after
    a gap as in steady motion; counting frames instead (the gap seen as one step) does not."""
    video = synthetic_scene("constant_speed")
    truth = _truth(video, RIGID)
    rng = np.random.default_rng(3)
    raw = truth + rng.normal(0.0, 2.0, truth.shape)
    dropped = {*range(30, 40), 44, *range(48, 51)}
    keep = np.array([i for i in range(len(truth)) if i not in dropped])
    after_gap = np.isin(keep, [40, 45, 51])
    steady = _lag_frames(video, _filter(raw, video.timestamps), truth)[int(video.fps) :]
    step_px = np.linalg.norm(np.diff(truth.mean(1), axis=0), axis=1).mean()

    def errors(times: np.ndarray) -> np.ndarray:
        out = _filter(raw[keep], times)
        return _lag_frames(video, out, truth[keep])[after_gap] * step_px  # px behind

    bound = steady.max() * step_px + 1.0
    by_time = errors(video.timestamps[keep])
    assert np.abs(by_time).max() < bound, (by_time, bound)
    by_count = errors(np.arange(len(keep)) / video.fps)
    assert np.abs(by_count).max() > 2 * bound  # the glitch the timestamps avoid


def test_savgol_matches_a_polynomial_fit_per_window_and_reduces_noise(
    synthetic_scene: Callable,
) -> None:
    truth = _truth(synthetic_scene("constant_speed"), RIGID)
    rng = np.random.default_rng(5)
    noisy = truth + rng.normal(0.0, 2.0, truth.shape)
    out = savgol(noisy, window=11, order=2)
    for i in (0, 3, 5, 30, len(noisy) - 1):  # the ends use the first / last window's fit
        s = min(max(i - 5, 0), len(noisy) - 11)
        x = np.arange(s, s + 11)
        fit = np.polyval(np.polyfit(x, noisy[s : s + 11, 4, 1], 2), i)
        assert out[i, 4, 1] == pytest.approx(fit, abs=1e-8)
    rms = lambda e: float(np.sqrt((e**2).mean()))  # noqa: E731
    assert rms(out - truth) < 0.6 * rms(noisy - truth)


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
