"""DARK's Newton step is taken only where it is trustworthy; elsewhere the quarter-pixel shift.

Degenerate heatmaps (plateaus, saddles, ridges, near-singular Hessians, garbage from an untrained
or broken model) gave steps of many pixels, once x = 3529 on a 480-wide image. Each test here
fails without the fallback (the old moves are in the comments).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.pose.codec import HeatmapCodec

H, W = 64, 48  # heatmap px of the default 256x192 codec
_YY, _XX = np.mgrid[:H, :W]


def _plateau() -> np.ndarray:
    """A 12x12 square of equal maxima: argmax is its top-left corner; DARK went +2.3 px."""
    m = np.zeros((H, W))
    m[20:32, 15:27] = 1.0
    return m


def _saddle() -> np.ndarray:
    """A one-pixel spike between two wide blobs: a saddle of the blurred log-map, where the
    Newton step (+0.75 px toward one blob) is not a move toward a maximum."""
    m = 0.9 * np.exp(-((_XX - 18) ** 2 + (_YY - 30) ** 2) / 8.0)
    m += 0.95 * np.exp(-((_XX - 31) ** 2 + (_YY - 29) ** 2) / 8.0)
    m[30, 24] = 1.0
    return m


def _spike_next_to_ridge() -> np.ndarray:
    """A spike two columns from a bright vertical ridge; DARK went +1.8 px toward the ridge."""
    m = np.zeros((H, W))
    m[:, 26] = 0.8
    m[30, 24] = 1.0
    return m


def _near_singular() -> np.ndarray:
    """A flat vertical ridge with a barely higher pixel: the Hessian is nearly singular along
    the ridge (finite, no NaN); DARK went -9.2 px along it."""
    m = np.zeros((H, W))
    m[:, 24] = 0.8
    m[31:, 24] = 0.7995
    m[30, 24] = 0.80001
    return m


CASES = {
    "plateau": _plateau,
    "saddle": _saddle,
    "spike_next_to_ridge": _spike_next_to_ridge,
    "near_singular": _near_singular,
}


def _decode(maps: np.ndarray, mode: str) -> np.ndarray:
    """Keypoints (..., 2) in heatmap px of maps (B, K, H, W)."""
    kp, _ = HeatmapCodec().decode(torch.from_numpy(maps.astype(np.float32)), mode=mode)
    return kp.numpy() / 4.0


@pytest.mark.parametrize("name", CASES)
def test_degenerate_maps_decode_within_one_pixel_of_the_argmax(name: str) -> None:
    maps = CASES[name]()[None, None]
    dark, argmax, shift = (_decode(maps, m)[0, 0] for m in ("dark", "argmax", "shift"))
    assert np.isfinite(dark).all()
    assert np.abs(dark - argmax).max() <= 1.0
    np.testing.assert_array_equal(dark, shift)  # the fallback is exactly the shift decode


def test_garbage_maps_never_move_more_than_one_pixel() -> None:
    """Untrained-model-like outputs: Gaussian noise, all-negative maps, tiny values near the
    1e-10 log clamp. Before the fix these moved by up to tens of thousands of px."""
    rng = np.random.default_rng(0)
    maps = np.concatenate(
        [
            rng.normal(0.0, 1.0, (1, 300, H, W)),
            rng.normal(-1.0, 0.3, (1, 300, H, W)),
            rng.normal(-0.01, 0.003, (1, 300, H, W)),
        ],
        axis=1,
    )
    dark, argmax, shift = (_decode(maps, m)[0] for m in ("dark", "argmax", "shift"))
    assert np.isfinite(dark).all()
    assert np.abs(dark - argmax).max() <= 1.0
    # Not a blanket fallback: the Newton step is still taken where it is a short step to a
    # maximum, so some keypoints differ from the shift result.
    assert (dark != shift).any(axis=1).sum() > 10


def test_only_the_bad_keypoint_of_a_mixed_batch_falls_back() -> None:
    codec = HeatmapCodec()
    centres = np.array([[10.3, 20.7], [30.6, 41.2], [24.2, 12.9]])  # heatmap px
    good, _ = codec.encode(centres * 4.0, np.ones(3))  # (3, H, W)
    mixed = np.stack([good, good.copy()])  # (2, 3, H, W)
    mixed[1, 1] = _near_singular()
    dark = _decode(mixed, "dark")
    shift = _decode(mixed, "shift")
    alone = _decode(good[None], "dark")[0]  # the good maps without the bad one
    np.testing.assert_array_equal(dark[0], alone)
    np.testing.assert_array_equal(dark[1, [0, 2]], alone[[0, 2]])
    np.testing.assert_allclose(alone, centres, atol=0.02)  # DARK proper: sub-pixel accurate
    assert np.abs(shift[0] - centres).max() > 0.1  # ... which the shift is not
    np.testing.assert_array_equal(dark[1, 1], shift[1, 1])
    assert np.abs(dark[1, 1] - [24.0, 30.0]).max() <= 1.0
