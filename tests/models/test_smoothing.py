"""One Euro filter and Savitzky-Golay smoothing, on keypoints of the synthetic video."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from models.smoothing import OneEuroFilter, OneEuroParams, savgol
from training.synthetic_video import SyntheticVideo

RIGID = [0, 1, 2, 3, 4, 5, 6, 11, 12]  # head, shoulders, hips: they do not swing with the gait


def _truth(video: SyntheticVideo, ids: list[int] | None = None) -> np.ndarray:
    """``(T, K, 2)`` keypoints of person 1, image px."""
    k = np.stack([next(p for p in row if p.person_id == 1).keypoints for row in video.truth])
    return k if ids is None else k[:, ids]


def _filter(samples: np.ndarray, times: np.ndarray, params: OneEuroParams | None = None):
    f = OneEuroFilter(params)
    return np.stack([f(s, t) for s, t in zip(samples, times, strict=True)])


def _rms_step(x: np.ndarray) -> float:
    return float(np.sqrt((np.diff(x, axis=0) ** 2).sum(-1).mean()))


def test_one_euro_matches_the_papers_scalar_algorithm() -> None:
    """Against a scalar transcription of Casiez et al.'s pseudo-code (x moves, y constant, so
    the 2-D speed equals |dx|), with irregular time steps."""
    rng = np.random.default_rng(0)
    p = OneEuroParams(min_cutoff=0.7, beta=0.05, d_cutoff=1.3)
    times = np.cumsum(rng.uniform(0.01, 0.1, 200))
    xs = np.cumsum(rng.normal(0, 3, 200))

    def alpha(cutoff: float, dt: float) -> float:
        r = 2 * math.pi * cutoff * dt
        return r / (r + 1)

    ref, x_prev, dx_prev, t_prev = [], None, 0.0, 0.0
    for x, t in zip(xs, times, strict=True):
        if x_prev is None:
            x_prev = x
        else:
            dt = t - t_prev
            dx = (x - x_prev) / dt
            dx_prev = alpha(p.d_cutoff, dt) * dx + (1 - alpha(p.d_cutoff, dt)) * dx_prev
            a = alpha(p.min_cutoff + p.beta * abs(dx_prev), dt)
            x_prev = a * x + (1 - a) * x_prev
        t_prev = t
        ref.append(x_prev)
    got = _filter(np.stack([xs, np.full_like(xs, 5.0)], -1)[:, None], times, p)
    np.testing.assert_allclose(got[:, 0, 0], ref, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(got[:, 0, 1], 5.0)


def test_first_sample_passes_and_a_repeated_timestamp_changes_nothing() -> None:
    f = OneEuroFilter()
    a = np.array([[10.0, 20.0], [30.0, 40.0]])
    np.testing.assert_array_equal(f(a, 1.0), a)
    b = f(a + 5.0, 1.1)
    np.testing.assert_array_equal(f(a + 50.0, 1.1), b)  # same time again
    assert np.all((b > a) & (b < a + 5.0))


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


def test_savgol_keeps_a_polynomial_trajectory_exactly() -> None:
    t = np.arange(40, dtype=np.float64)
    rng = np.random.default_rng(4)
    coef = rng.normal(size=(3, 17, 2))
    track = coef[0] + coef[1] * t[:, None, None] + 0.05 * coef[2] * t[:, None, None] ** 2
    np.testing.assert_allclose(savgol(track, window=9, order=2), track, atol=1e-8)
    line = track[:, :, :1] - 0.05 * coef[2, :, :1] * t[:, None, None] ** 2
    np.testing.assert_allclose(savgol(line, window=7, order=1), line, atol=1e-8)


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


def test_savgol_short_tracks_and_bad_arguments() -> None:
    x = np.arange(10.0).reshape(5, 1, 2)
    np.testing.assert_allclose(savgol(x, window=9, order=2), x, atol=1e-9)  # window 9 -> 5
    np.testing.assert_array_equal(savgol(x[:1], window=9, order=2), x[:1])
    for window, order in ((8, 2), (0, 0), (5, 5)):
        with pytest.raises(ValueError):
            savgol(x, window=window, order=order)
    with pytest.raises(ValueError):
        OneEuroParams(min_cutoff=0.0)
