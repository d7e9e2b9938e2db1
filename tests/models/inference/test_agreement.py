"""models/inference/agreement.py: the measures two runs of one request are compared by."""

from __future__ import annotations

import math

import numpy as np

from models.inference.agreement import REQUEST_PATH, Run, Tolerance, clear_keypoints, compare


def gaussian(h: int, w: int, centres: list[tuple[float, float, float]]) -> np.ndarray:
    """``(h, w)`` sum of Gaussians (sigma 2) ``(x, y, height)``."""
    ys, xs = np.mgrid[0:h, 0:w]
    out = np.zeros((h, w))
    for x, y, a in centres:
        out += a * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / 8.0)
    return out.astype(np.float32)


def maps() -> np.ndarray:
    """One person, four keypoints: a single peak, two equal peaks far apart, a peak 5% above
    another, nothing."""
    return np.stack(
        [
            gaussian(32, 24, [(10, 12, 0.9)]),
            gaussian(32, 24, [(5, 5, 0.8), (18, 25, 0.8)]),
            gaussian(32, 24, [(5, 5, 0.84), (18, 25, 0.8)]),
            np.zeros((32, 24), np.float32),
        ]
    )[None]


def test_clear_keypoints_are_single_peaks() -> None:
    np.testing.assert_array_equal(clear_keypoints(maps()), [[True, False, False, False]])
    # a peak 20% above the other one is clear
    strong = gaussian(32, 24, [(5, 5, 1.0), (18, 25, 0.8)])[None, None]
    assert clear_keypoints(strong).all()


def run(keypoints: np.ndarray, scores: np.ndarray, heatmaps: np.ndarray) -> Run:
    return Run(keypoints.astype(np.float32), scores.astype(np.float32), heatmaps)


def test_only_clear_keypoints_are_measured_by_position() -> None:
    hm = maps()
    kp = np.array([[[10.0, 12.0], [5.0, 5.0], [5.0, 5.0], [0.0, 0.0]]])
    sc = hm.reshape(1, 4, -1).max(-1)
    ref = run(kp, sc, hm)
    jumped = kp.copy()
    jumped[0, 1] = [18.0, 25.0]  # the two-peak keypoint jumps: not measured
    d = compare(ref, run(jumped, sc, hm))
    assert (d.keypoints_px, d.compared, d.scores, d.heatmaps) == (0.0, 1, 0.0, 0.0)
    assert d.within(REQUEST_PATH)
    moved = kp.copy()
    moved[0, 0] += [0.3, -1.0]  # the clear one moves by one pixel
    d = compare(ref, run(moved, sc, hm))
    assert math.isclose(d.keypoints_px, 1.0, rel_tol=1e-6) and not d.within(REQUEST_PATH)
    assert d.within(Tolerance(px=1.0)) and d.within(Tolerance(score=0.0))


def test_scores_and_heatmaps_are_relative_to_the_peak_above_one() -> None:
    hm = maps()
    kp = np.zeros((1, 4, 2))
    sc = hm.reshape(1, 4, -1).max(-1)
    bumped = hm.copy()
    bumped[0, 3, 0, 0] = 0.02  # peak below 1: absolute
    d = compare(run(kp, sc, hm), run(kp, sc + np.array([[0, 0, 0, 0.02]]), bumped))
    assert math.isclose(d.heatmaps, 0.02, rel_tol=1e-5) and math.isclose(
        d.scores, 0.02, rel_tol=1e-5
    )
    assert not d.within(Tolerance(score=0.01)) and d.within(Tolerance(heatmap=0.03))
    big = hm * 10  # peak 9: divided by it
    d = compare(run(kp, sc * 10, big), run(kp, sc * 10 + 0.09, big + 0.09))
    assert math.isclose(d.scores, 0.01, rel_tol=1e-4) and math.isclose(
        d.heatmaps, 0.01, rel_tol=1e-4
    )


def test_a_different_number_of_persons_never_agrees() -> None:
    hm = maps()
    one = run(np.zeros((1, 4, 2)), np.zeros((1, 4)), hm)
    two = run(np.zeros((2, 4, 2)), np.zeros((2, 4)), np.concatenate([hm, hm]))
    d = compare(one, two)
    assert math.isinf(d.keypoints_px) and not d.within(Tolerance())
    assert str(d) == "different numbers of persons"
    assert not d.within(Tolerance(heatmap=1.0))


def test_nan_keypoints_disagree() -> None:
    hm = maps()
    kp = np.array([[[10.0, 12.0], [5.0, 5.0], [5.0, 5.0], [0.0, 0.0]]])
    nan = kp.copy()
    nan[0, 0] = np.nan
    d = compare(run(kp, np.ones((1, 4)), hm), run(nan, np.ones((1, 4)), hm))
    assert math.isinf(d.keypoints_px)
