"""HeatmapCodec: encoding by hand, decode accuracy against known centres, DARK against a
per-keypoint numpy/OpenCV reference (mmpose's recipe), batching, dtypes and the flip test."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch

from models.pose.codec import HeatmapCodec, flip_heatmaps, flip_merge
from models.pose.keypoints import COCO_KEYPOINTS


def _codec(h: int, w: int) -> HeatmapCodec:
    """A stride-4 codec with heatmaps H x W."""
    return HeatmapCodec(input_size=(4 * w, 4 * h), heatmap_size=(w, h))


def _random_centres(rng: np.random.Generator, n: int, h: int, w: int, margin: float) -> np.ndarray:
    """(n, 2) sub-pixel centres, heatmap px, at least ``margin`` px inside an H x W map."""
    return np.stack(
        [rng.uniform(margin, w - 1 - margin, n), rng.uniform(margin, h - 1 - margin, n)], 1
    )


def _reference_dark(hm: np.ndarray, kernel: int = 11) -> np.ndarray:
    """Independent DARK for (K, H, W) maps -> (K, 2) heatmap px: a loop per keypoint with
    cv2.GaussianBlur on a zero-padded copy and a 2x2 matrix inverse (mmpose's recipe)."""
    k_count, h, w = hm.shape
    out = np.zeros((k_count, 2))
    b = kernel // 2
    for k in range(k_count):
        y, x = np.unravel_index(np.argmax(hm[k]), (h, w))
        out[k] = (x, y)
        padded = np.zeros((h + 2 * b, w + 2 * b), np.float32)
        padded[b:-b, b:-b] = hm[k]
        blurred = cv2.GaussianBlur(padded, (kernel, kernel), 0)[b:-b, b:-b]
        blurred = blurred * (hm[k].max() / blurred.max())
        L = np.log(np.maximum(blurred, 1e-10)).astype(np.float64)
        if not (2 <= x <= w - 3 and 2 <= y <= h - 3):
            continue
        g = np.array([L[y, x + 1] - L[y, x - 1], L[y + 1, x] - L[y - 1, x]]) / 2
        dxx = (L[y, x + 2] - 2 * L[y, x] + L[y, x - 2]) / 4
        dyy = (L[y + 2, x] - 2 * L[y, x] + L[y - 2, x]) / 4
        dxy = (L[y + 1, x + 1] - L[y - 1, x + 1] - L[y + 1, x - 1] + L[y - 1, x - 1]) / 4
        hess = np.array([[dxx, dxy], [dxy, dyy]])
        if np.linalg.det(hess) != 0:
            out[k] -= np.linalg.inv(hess) @ g
    return out


def test_stride_and_dict_round_trip() -> None:
    codec = HeatmapCodec(input_size=(192, 256), heatmap_size=(48, 32), sigma=3.0, blur_kernel=17)
    assert codec.stride == (4.0, 8.0)
    assert HeatmapCodec().stride == (4.0, 4.0)
    d = json.loads(json.dumps(codec.to_dict()))
    assert d == {
        "input_size": [192, 256],
        "heatmap_size": [48, 32],
        "sigma": 3.0,
        "blur_kernel": 17,
    }
    assert HeatmapCodec.from_dict(d) == codec
    with pytest.raises(ValueError, match="odd"):
        HeatmapCodec(blur_kernel=10)


def test_encode_gaussian_value_by_hand() -> None:
    # Stride (4, 8): input (50, 70) -> heatmap (12.5, 8.75); pixel (x=12, y=9) is (-0.5, 0.25) away.
    codec = HeatmapCodec(input_size=(192, 256), heatmap_size=(48, 32), sigma=2.0)
    hm, w = codec.encode(np.array([[50.0, 70.0]]), np.array([2]))
    assert hm.shape == (1, 32, 48) and hm.dtype == np.float32 and w.dtype == np.float32
    assert hm[0, 9, 12] == pytest.approx(math.exp(-(0.25 + 0.0625) / 8.0), rel=1e-6)
    assert hm[0, 0, 0] == pytest.approx(math.exp(-(12.5**2 + 8.75**2) / 8.0), abs=1e-12)
    # An integer centre reaches the amplitude 1 exactly there.
    hm2, _ = codec.encode(np.array([[40.0, 80.0]]), np.array([1]))
    assert hm2[0, 10, 10] == 1.0 and hm2.max() == 1.0


def test_round_trip_with_unequal_strides() -> None:
    codec = HeatmapCodec(input_size=(192, 256), heatmap_size=(48, 32))  # stride (4, 8)
    kps = np.array([[50.3, 70.9], [100.0, 201.7], [150.6, 33.3]])  # input px
    hm, _ = codec.encode(kps, np.ones(3))
    assert np.unravel_index(hm[0].argmax(), hm[0].shape) == (9, 13)  # (y, x) = (70.9/8, 50.3/4)
    kp, _ = codec.decode(torch.from_numpy(hm)[None], mode="dark")
    np.testing.assert_allclose(kp[0].numpy(), kps, atol=0.02 * 8)


def test_encode_weights() -> None:
    codec = HeatmapCodec()  # heatmap 48 x 64 (W x H), stride 4, 3 sigma = 6 heatmap px
    w_, h_ = 48, 64
    hm_xy = [
        (20.0, 30.0),  # labelled, inside
        (20.0, 30.0),  # not labelled
        (-5.9, 30.0),  # centre outside on the left, 3-sigma square reaches column 0
        (-6.1, 30.0),  # wholly outside on the left
        (w_ - 1 + 5.9, 10.0),  # right, reaches column W-1
        (w_ - 1 + 6.1, 10.0),  # wholly outside on the right
        (10.0, h_ - 1 + 6.1),  # wholly outside at the bottom
        (10.0, -5.5),  # top, reaches row 0
        (float("nan"), 3.0),  # not finite
    ]
    visible = np.array([2, 0, 1, 1, 1, 1, 1, 1, 1])
    hm, weights = codec.encode(np.array(hm_xy) * 4.0, visible)
    np.testing.assert_array_equal(weights, [1, 0, 1, 0, 1, 0, 0, 1, 0])
    channel_has_signal = hm.reshape(len(hm_xy), -1).max(axis=1) > 0
    np.testing.assert_array_equal(channel_has_signal, weights > 0)
    assert np.isfinite(hm).all()
    # The partially outside one peaks at column 0, with the Gaussian value there.
    assert hm[2, 30, 0] == pytest.approx(math.exp(-(5.9**2) / 8.0), rel=1e-5)


@pytest.mark.parametrize(("h", "w", "dark_max"), [(64, 48, 0.01), (32, 24, 0.01), (16, 12, 0.03)])
def test_decode_accuracy_on_clean_gaussians(h: int, w: int, dark_max: float) -> None:
    rng = np.random.default_rng(h)
    codec = _codec(h, w)
    centres = _random_centres(rng, 400, h, w, margin=3.0)
    hm, weights = codec.encode(centres * 4.0, np.ones(len(centres)))
    assert weights.all()
    errors = {}
    for mode in ("argmax", "shift", "dark"):
        kp, _ = codec.decode(torch.from_numpy(hm)[None], mode=mode)
        errors[mode] = np.linalg.norm(kp[0].numpy() / 4.0 - centres, axis=1).mean()
    assert errors["dark"] <= dark_max
    assert 0.14 <= errors["shift"] <= 0.24  # about 0.19
    assert 0.34 <= errors["argmax"] <= 0.42  # E|(u, v)| for u, v ~ U(-0.5, 0.5) = 0.383
    assert errors["dark"] < errors["shift"] < errors["argmax"]


def test_dark_matches_per_keypoint_reference_on_noisy_maps() -> None:
    rng = np.random.default_rng(7)
    codec = HeatmapCodec()
    centres = _random_centres(rng, 3 * 17, 64, 48, margin=0.0)
    hm, _ = codec.encode(centres * 4.0, np.ones(len(centres)))
    hm = hm * rng.uniform(0.1, 1.0, (len(hm), 1, 1)) + rng.normal(0, 0.03, hm.shape)
    # Tiny maps (peak 2e-10) exercise the rescale to the original maximum before the 1e-10 clamp.
    hm[:17] = codec.encode(centres[:17] * 4.0, np.ones(17))[0] * 2e-10
    hm = hm.astype(np.float32)
    maps = torch.from_numpy(hm).reshape(3, 17, 64, 48)
    kp, scores = codec.decode(maps, mode="dark")
    kp = kp.reshape(-1, 2).numpy() / 4.0
    expected = _reference_dark(hm)
    # mmpose's step is taken wherever it stays within 1 heatmap px of the argmax; where the
    # noise makes it longer (2 of 51 here), heatpose uses the quarter-pixel shift instead.
    argmax = codec.decode(maps, mode="argmax")[0].reshape(-1, 2).numpy() / 4.0
    near = (np.abs(expected - argmax) <= 1.0).all(axis=1)
    assert near.sum() >= 49
    np.testing.assert_allclose(kp[near], expected[near], atol=1e-3)
    shift = codec.decode(maps, mode="shift")[0].reshape(-1, 2).numpy() / 4.0
    np.testing.assert_array_equal(kp[~near], shift[~near])
    np.testing.assert_allclose(scores.reshape(-1).numpy(), hm.reshape(len(hm), -1).max(1))


def test_dark_refines_only_two_pixels_inside() -> None:
    codec = HeatmapCodec()
    hm, _ = codec.encode(np.array([[1.3, 20.2], [2.4, 20.2], [20.3, 61.6]]) * 4.0, np.ones(3))
    kp = codec.decode(torch.from_numpy(hm)[None], mode="dark")[0][0].numpy() / 4.0
    np.testing.assert_array_equal(kp[0], [1.0, 20.0])  # x = 1 < 2: integer argmax kept
    np.testing.assert_array_equal(kp[2], [20.0, 62.0])  # y = 62 > H-3 = 61: integer argmax kept
    # x = 2: refined; the zero-padded blur pulls such border peaks ~0.12 px inward (mmpose too).
    assert kp[1][0] != 2.0 and np.abs(kp[1] - [2.4, 20.2]).max() < 0.2


def test_shift_rule_by_hand() -> None:
    codec = _codec(12, 10)
    hm = torch.zeros(1, 3, 12, 10)
    hm[0, 0, 5, 5], hm[0, 0, 5, 6], hm[0, 0, 5, 4] = 1.0, 0.5, 0.2  # right higher: +x
    hm[0, 0, 4, 5], hm[0, 0, 6, 5] = 0.6, 0.1  # above higher: -y
    hm[0, 1, 7, 0], hm[0, 1, 7, 1], hm[0, 1, 8, 0] = 1.0, 0.9, 0.3  # x on the border: no x move
    hm[0, 2, 11, 1], hm[0, 2, 11, 0], hm[0, 2, 10, 1] = 1.0, 0.9, 0.3  # x = 1 moves; y = H-1 not
    kp, scores = codec.decode(hm, mode="shift")
    np.testing.assert_allclose(kp[0].numpy() / 4.0, [[5.25, 4.75], [0.0, 7.25], [0.75, 11.0]])
    np.testing.assert_allclose(scores[0].numpy(), [1.0, 1.0, 1.0])
    kp_arg, _ = codec.decode(hm, mode="argmax")
    np.testing.assert_allclose(kp_arg[0].numpy() / 4.0, [[5.0, 5.0], [0.0, 7.0], [1.0, 11.0]])


def test_decode_batch_matches_per_item() -> None:
    rng = np.random.default_rng(3)
    codec = HeatmapCodec()
    centres = _random_centres(rng, 4 * 17, 64, 48, margin=0.0)
    centres[:4] = [[0.0, 0.0], [47.0, 63.0], [1.2, 30.5], [24.5, 62.4]]  # corners and edges
    hm, _ = codec.encode(centres * 4.0, np.ones(len(centres)))
    amplitude = rng.uniform(0.2, 1.0, len(hm))
    batch = torch.from_numpy(hm * amplitude[:, None, None]).reshape(4, 17, 64, 48)
    for mode in ("argmax", "shift", "dark"):
        kp, scores = codec.decode(batch, mode=mode)
        assert kp.shape == (4, 17, 2) and scores.shape == (4, 17)
        for i in range(4):
            kp_i, scores_i = codec.decode(batch[i : i + 1], mode=mode)
            torch.testing.assert_close(kp[i : i + 1], kp_i, atol=1e-5, rtol=0)
            torch.testing.assert_close(scores[i : i + 1], scores_i)
    kp, scores = codec.decode(batch, mode="dark")
    np.testing.assert_allclose(scores.reshape(-1).numpy(), batch.reshape(68, -1).amax(1).numpy())
    errors = np.linalg.norm(kp.reshape(-1, 2).numpy() / 4.0 - centres, axis=1)
    assert errors.max() < 0.75 and np.median(errors) < 0.01


def test_decode_rejects_bad_mode_and_shape() -> None:
    codec = HeatmapCodec()
    with pytest.raises(ValueError, match=r"argmax.*shift.*dark"):
        codec.decode(torch.zeros(1, 17, 64, 48), mode="softargmax")
    with pytest.raises(ValueError, match="64, 48"):
        codec.decode(torch.zeros(1, 17, 48, 64))


def test_decode_half_and_double_return_float32() -> None:
    rng = np.random.default_rng(5)
    codec = HeatmapCodec()
    hm, _ = codec.encode(_random_centres(rng, 17, 64, 48, margin=3.0) * 4.0, np.ones(17))
    base = torch.from_numpy(hm)[None]
    kp32, _ = codec.decode(base)
    for dtype, tol in ((torch.float64, 1e-4), (torch.float16, 0.2)):
        kp, scores = codec.decode(base.to(dtype))
        assert kp.dtype == torch.float32 and scores.dtype == torch.float32
        assert (kp - kp32).abs().max().item() < tol  # input px


def test_flip_heatmaps_mirrors_and_swaps() -> None:
    hm = torch.zeros(1, 17, 64, 48)
    hm[0, 1, 7, 3] = 1.0  # left_eye at (x=3, y=7)
    hm[0, 0, 2, 0] = 1.0  # nose at (0, 2)
    out = flip_heatmaps(hm, COCO_KEYPOINTS)
    assert out[0, 2, 7, 44] == 1.0 and out[0, 0, 2, 47] == 1.0  # right_eye, nose
    assert out.sum() == 2.0


def test_flip_merge_against_numpy() -> None:
    rng = np.random.default_rng(11)
    a = rng.normal(size=(2, 17, 8, 6)).astype(np.float32)
    b = rng.normal(size=(2, 17, 8, 6)).astype(np.float32)
    back = b[:, list(COCO_KEYPOINTS.flip_indices), :, ::-1]
    shifted = np.concatenate([back[..., :1], back[..., :-1]], axis=-1)
    out = flip_merge(torch.from_numpy(a), torch.from_numpy(b), COCO_KEYPOINTS)
    np.testing.assert_allclose(out.numpy(), (a + shifted) / 2, rtol=1e-6)


def test_flip_merge_of_mirrored_person() -> None:
    """A person and its mirror image (input width w = 192, stride 4). The mirror puts input x at
    w - 1 - x, i.e. heatmap (w - 1 - x) / 4; flipping the map back puts it at W - 1 - that =
    x / 4 - 0.75; the 1 px shift gives x / 4 + 0.25. Averaged with the peak at x / 4, the merged
    peak is symmetric about x / 4 + 0.125 heatmap px = x + 0.5 input px; y is unchanged."""
    rng = np.random.default_rng(2)
    codec = HeatmapCodec()
    kps = _random_centres(rng, 17, 64, 48, margin=6.0) * 4.0  # input px
    mirrored = np.stack([191.0 - kps[:, 0], kps[:, 1]], 1)[list(COCO_KEYPOINTS.flip_indices)]
    hm, _ = codec.encode(kps, np.ones(17))
    hm_flip, _ = codec.encode(mirrored, np.ones(17))
    merged = flip_merge(torch.from_numpy(hm)[None], torch.from_numpy(hm_flip)[None], COCO_KEYPOINTS)
    kp, _ = codec.decode(merged, mode="dark")
    np.testing.assert_allclose(kp[0, :, 0].numpy(), kps[:, 0] + 0.5, atol=0.02)
    np.testing.assert_allclose(kp[0, :, 1].numpy(), kps[:, 1], atol=0.02)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_decode_on_cuda_matches_cpu() -> None:
    rng = np.random.default_rng(9)
    codec = HeatmapCodec()
    hm, _ = codec.encode(_random_centres(rng, 34, 64, 48, margin=0.0) * 4.0, np.ones(34))
    batch = torch.from_numpy(hm).reshape(2, 17, 64, 48)
    for mode in ("argmax", "shift", "dark"):
        kp_gpu, scores_gpu = codec.decode(batch.cuda(), mode=mode)
        assert kp_gpu.device.type == "cuda"
        kp_cpu, scores_cpu = codec.decode(batch, mode=mode)
        torch.testing.assert_close(kp_gpu.cpu(), kp_cpu, atol=1e-3, rtol=0)
        torch.testing.assert_close(scores_gpu.cpu(), scores_cpu)


def test_for_input_is_stride_4_and_refuses_sizes_the_network_cannot_keep() -> None:
    codec = HeatmapCodec.for_input((192, 256))
    assert codec.heatmap_size == (48, 64) and codec.stride == (4.0, 4.0)
    assert HeatmapCodec.for_input((96, 128), sigma=1.5).heatmap_size == (24, 32)
    with pytest.raises(ValueError, match="multiples of 32"):
        HeatmapCodec.for_input((48, 64))
