"""The numpy decode path (small CPU batches) against the torch path: the same answers.

``HeatmapCodec.decode(..., engine=)`` runs the same float32 arithmetic in numpy or torch;
both are checked here on random maps, on well-formed Gaussians, and on degenerate maps
(constant, zero, NaN-free plateaus, maxima on the border, ties). The mmpose-style reference
tests in ``test_codec.py`` cover the arithmetic itself (small batches now take the numpy path).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.pose.codec import DECODE_MODES, NUMPY_DECODE_MAPS, HeatmapCodec

CODEC = HeatmapCodec((192, 256), (48, 64))
K = 17


def _gaussians(rng: np.random.Generator, b: int) -> torch.Tensor:
    """Targets at random centres, some near or on the border, with noise and random peaks."""
    centres = rng.uniform([-2, -2], [194, 258], size=(b, K, 2))
    maps = np.stack([CODEC.encode(c, np.ones(K))[0] for c in centres])
    maps *= rng.uniform(0.05, 1.0, size=(b, K, 1, 1))
    maps += rng.normal(0, 0.01, size=maps.shape)
    return torch.from_numpy(maps.astype(np.float32))


def _degenerate(rng: np.random.Generator) -> torch.Tensor:
    """(8, K, 64, 48) maps that stress every branch: zeros, constants, negative constants,
    a single hot pixel (Newton step through a clamped log), plateaus (ties: the first
    maximum), ridges (singular Hessian), maxima in the corners and on each border, saddles,
    huge and tiny amplitudes, and heavy-tailed noise."""
    m = np.zeros((8, K, 64, 48), np.float32)
    m[1] = 0.7
    m[2] = -3.0
    m[3, :, 30, 20] = 1.0
    m[3, 1:, 0, 0] = 2.0
    m[3, 2:, 63, 47] = 2.5
    m[3, 3:, 10, 1] = 3.0
    m[4, :, 10:20, 10:30] = 0.5  # plateau
    m[4, 1, 31, :] = 1.0  # ridge along x
    m[4, 2, :, 23] = 1.0  # ridge along y
    y, x = np.mgrid[0:64, 0:48].astype(np.float32)
    m[5] = ((x - 24) ** 2 - (y - 32) ** 2)[None] * 1e-3  # saddle
    m[6] = (rng.standard_cauchy((K, 64, 48)) * 1e-3).astype(np.float32)
    m[7] = _gaussians(rng, 1)[0].numpy() * np.float32(1e30)
    m[7, ::2] *= np.float32(1e-36)  # denormal-scale peaks
    return torch.from_numpy(m)


@pytest.mark.parametrize("mode", DECODE_MODES)
@pytest.mark.parametrize("kind", ["random", "gaussians", "degenerate"])
def test_numpy_and_torch_decodes_agree(mode: str, kind: str) -> None:
    rng = np.random.default_rng(7)
    if kind == "random":
        hm = torch.from_numpy(rng.random((6, K, 64, 48), np.float32) ** 8)
    elif kind == "gaussians":
        hm = _gaussians(rng, 12)
    else:
        hm = _degenerate(rng)
    kp_t, s_t = CODEC.decode(hm, mode, engine="torch")
    kp_n, s_n = CODEC.decode(hm, mode, engine="numpy")
    assert kp_n.dtype == kp_t.dtype == torch.float32 and kp_n.shape == kp_t.shape
    assert torch.equal(s_n, s_t)
    # Stated tolerance 1e-5 input px; the two paths run the same float32 operations (the blur
    # and the log are torch in both), so they are in fact equal.
    np.testing.assert_allclose(kp_n.numpy(), kp_t.numpy(), rtol=0, atol=1e-5)
    if mode != "argmax":  # the refinements did move keypoints: the check is not vacuous
        base, _ = CODEC.decode(hm, "argmax", engine="torch")
        assert (kp_t - base).abs().amax() > 0


def test_auto_picks_numpy_for_small_cpu_batches_only(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = HeatmapCodec._decode_numpy

    def spy(self: HeatmapCodec, maps: torch.Tensor, mode: str):  # type: ignore[no-untyped-def]
        calls.append(maps.shape[0])
        return real(self, maps, mode)

    monkeypatch.setattr(HeatmapCodec, "_decode_numpy", spy)
    small = torch.zeros(2, K, 64, 48)
    CODEC.decode(small)
    big_b = NUMPY_DECODE_MAPS // K + 1
    CODEC.decode(torch.zeros(big_b, K, 64, 48))
    CODEC.decode(small, engine="torch")
    assert calls == [2 * K]


def test_numpy_engine_refuses_device_heatmaps() -> None:
    meta = torch.zeros(1, K, 64, 48, device="meta")
    with pytest.raises(ValueError, match="CPU heatmaps"):
        CODEC.decode(meta, engine="numpy")
