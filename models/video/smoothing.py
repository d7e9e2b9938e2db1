"""Keypoint smoothing over time: the causal One Euro filter and an offline Savitzky-Golay filter.

One Euro (Casiez, Roussel, Vogel, CHI 2012) is an adaptive low-pass filter for live streams:
its cutoff frequency rises with the speed of the signal, so a point at rest is smoothed hard
(little jitter) and a moving point lightly (little lag). It is driven by timestamps in seconds,
not frame counts, so a dropped frame is a longer step, not a jump. Savitzky-Golay is the
non-causal filter for whole tracks read from a file: a least-squares polynomial fitted to a
sliding window, which removes noise but keeps any polynomial trajectory up to its order.

Coordinates are ``(x, y)`` image pixels; speeds are image pixels per second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OneEuroParams:
    """One Euro parameters (defaults measured in docs/streaming.md, for image pixels).

    Attributes:
        min_cutoff: cutoff (Hz) at rest; lower means less jitter and more lag when slow.
        beta: cutoff increase per unit speed (Hz per px/s); higher means less lag in motion.
        d_cutoff: cutoff (Hz) of the low-pass filter on the speed estimate.
    """

    min_cutoff: float = 0.5
    beta: float = 0.03
    d_cutoff: float = 1.0

    def __post_init__(self) -> None:
        if self.min_cutoff <= 0 or self.d_cutoff <= 0 or self.beta < 0:
            raise ValueError("One Euro needs min_cutoff > 0, d_cutoff > 0 and beta >= 0")


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray:
    """Smoothing factor of an exponential low-pass filter with ``cutoff`` Hz at step ``dt`` s."""
    tau = 1.0 / (2.0 * np.pi * np.asarray(cutoff, dtype=np.float64))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One Euro filter over an array of points ``(..., 2)``, e.g. one person's ``(K, 2)``.

    Each coordinate has its own state; the cutoff of a point follows the magnitude of its
    2-D velocity (so diagonal and horizontal motion are smoothed alike). ``reset()`` forgets
    the history (the next sample passes through unchanged).
    """

    def __init__(self, params: OneEuroParams | None = None) -> None:
        self.params = params or OneEuroParams()
        self.reset()

    def reset(self) -> None:
        """Forget the state; the next sample is returned as is."""
        self._x: np.ndarray | None = None  # last estimate (..., 2)
        self._dx: np.ndarray | None = None  # last smoothed velocity (..., 2), px/s
        self._t = 0.0

    def __call__(self, x: np.ndarray, timestamp: float) -> np.ndarray:
        """Filter the sample ``x (..., 2)`` taken at ``timestamp`` (seconds) -> ``(..., 2)``.

        A timestamp not after the previous one (a repeated frame) returns the previous estimate
        unchanged. A change of shape restarts the filter.
        """
        x = np.asarray(x, dtype=np.float64)
        t = float(timestamp)
        if self._x is None or self._dx is None or self._x.shape != x.shape:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = t - self._t
        if dt <= 0:
            return self._x.copy()
        p = self.params
        a_d = _alpha(p.d_cutoff, dt)
        self._dx = self._dx + a_d * ((x - self._x) / dt - self._dx)
        speed = np.linalg.norm(self._dx, axis=-1, keepdims=True)
        a = _alpha(p.min_cutoff + p.beta * speed, dt)
        self._x = self._x + a * (x - self._x)
        self._t = t
        return self._x.copy()


def savgol_coefficients(window: int, order: int) -> np.ndarray:
    """``(window, window)`` matrix ``P``: row ``j`` maps a window of samples to the value at
    position ``j`` of the least-squares polynomial of degree ``order`` fitted to them."""
    pos = np.arange(window, dtype=np.float64) - (window - 1) / 2.0
    vander = np.vander(pos / max((window - 1) / 2.0, 1.0), order + 1, increasing=True)
    return vander @ np.linalg.pinv(vander)


def savgol(x: np.ndarray, window: int = 9, order: int = 2) -> np.ndarray:
    """Savitzky-Golay smoothing of a regularly sampled track along axis 0 (non-causal).

    Args:
        x: ``(T, ...)`` samples, e.g. ``(T, K, 2)`` keypoints in image px, one row per frame.
        window: odd window length in samples (> ``order``); shortened to the longest odd
            length <= T for short tracks.
        order: degree of the fitted polynomial; a polynomial trajectory of this degree or lower
            is returned unchanged.

    Returns:
        ``(T, ...)`` float64. Inside, each sample is the centre of the polynomial fitted to the
        window around it; the first and last ``window // 2`` samples take the first and last
        window's polynomial (as scipy's ``mode="interp"``), so the ends are not padded.
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd number, got {window}")
    if order < 0 or order >= window:
        raise ValueError(f"order must be in 0..window-1, got order {order}, window {window}")
    x = np.asarray(x, dtype=np.float64)
    t = x.shape[0]
    if t < window:
        window = t if t % 2 else t - 1
        order = min(order, window - 1)
    if window <= 1:
        return x.copy()
    half = window // 2
    p = savgol_coefficients(window, order)
    flat = x.reshape(t, -1)  # (T, D)
    out = np.empty_like(flat)
    windows = np.lib.stride_tricks.sliding_window_view(flat, window, axis=0)  # (T-w+1, D, w)
    out[half : t - half] = windows @ p[half]
    out[:half] = p[:half] @ flat[:window]
    out[t - half :] = p[half + 1 :] @ flat[t - window :]
    return out.reshape(x.shape)
