"""One Euro filter and Savitzky-Golay smoothing on tracks made here (on the synthetic videos:
tests/training/test_tracking_on_synthetic_video.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.video.smoothing import OneEuroFilter, OneEuroParams, savgol


def _filter(samples: np.ndarray, times: np.ndarray, params: OneEuroParams | None = None):
    f = OneEuroFilter(params)
    return np.stack([f(s, t) for s, t in zip(samples, times, strict=True)])


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


def test_savgol_keeps_a_polynomial_trajectory_exactly() -> None:
    t = np.arange(40, dtype=np.float64)
    rng = np.random.default_rng(4)
    coef = rng.normal(size=(3, 17, 2))
    track = coef[0] + coef[1] * t[:, None, None] + 0.05 * coef[2] * t[:, None, None] ** 2
    np.testing.assert_allclose(savgol(track, window=9, order=2), track, atol=1e-8)
    line = track[:, :, :1] - 0.05 * coef[2, :, :1] * t[:, None, None] ** 2
    np.testing.assert_allclose(savgol(line, window=7, order=1), line, atol=1e-8)


def test_savgol_short_tracks_and_bad_arguments() -> None:
    x = np.arange(10.0).reshape(5, 1, 2)
    np.testing.assert_allclose(savgol(x, window=9, order=2), x, atol=1e-9)  # window 9 -> 5
    np.testing.assert_array_equal(savgol(x[:1], window=9, order=2), x[:1])
    for window, order in ((8, 2), (0, 0), (5, 5)):
        with pytest.raises(ValueError):
            savgol(x, window=window, order=order)
    with pytest.raises(ValueError):
        OneEuroParams(min_cutoff=0.0)
