"""RTMDet's test pipeline: letterbox against OpenCV, normalisation, post-processing against
torchvision's NMS, boxes mapped back into images of several sizes in one batch, the zoo."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch.utils.flop_counter import FlopCounterMode
from torchvision.ops import batched_nms

from heatpose_cli import weights as weights_cli
from models.detection.detector import load_detector
from models.detection.rtmdet import (
    ARCH_SPECS,
    RTMDET_ARCHS,
    RTMDetector,
    letterbox_cv2,
    letterbox_size,
    letterbox_torch,
)
from models.detection.rtmdet_net import RTMDetNet
from models.weights import zoo
from models.weights.checkpoint import DETECTOR_KEY, read_state_dict
from models.weights.zoo import ZooEntry, fetch
from tests.models.detection.test_rtmdet import published_state, save_published
from tests.models.weights.test_zoo import _Files, _serving

NANO = "person-rtmdet-nano"
# (h, w) -> the resized (h, w) inside 320 x 320: factor 320 / longest side, sides rounded
# half up (mmcv's rescale_size), at least one pixel
SIZES_320 = {
    (480, 640): (240, 320),
    (640, 480): (320, 240),
    (100, 300): (107, 320),  # 106.67
    (333, 1000): (107, 320),  # 106.56
    (50, 40): (320, 256),  # enlarged
    (320, 320): (320, 320),
    (1, 700): (1, 320),  # 0.46 rounds to 0: kept at one row
}


def _noise(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _detector(size: int = 320, nms_pre: int = 1000) -> RTMDetector:
    return RTMDetector(
        RTMDetNet(replace(ARCH_SPECS[NANO], input_size=size)), NANO, "cpu", nms_pre=nms_pre
    )


def test_letterbox_is_opencv_resize_and_114_padding() -> None:
    for i, ((h, w), (rh, rw)) in enumerate(SIZES_320.items()):
        assert letterbox_size(h, w, 320) == (rh, rw)
        image = _noise(h, w, i)
        resized = cv2.resize(image, (rw, rh), interpolation=cv2.INTER_LINEAR)
        expected = cv2.copyMakeBorder(
            resized, 0, 320 - rh, 0, 320 - rw, cv2.BORDER_CONSTANT, value=(114, 114, 114)
        )
        assert np.array_equal(letterbox_cv2(image, 320), expected)


def test_torch_letterbox_is_within_one_grey_level_of_opencv() -> None:
    """The device path's letterbox (run here on the CPU) against OpenCV's, noise images
    shrunk and enlarged: at most one level apart, padding exact."""
    worst = 0
    for i, (h, w) in enumerate([*SIZES_320, (481, 643), (97, 211)]):
        image = _noise(h, w, 10 + i)
        ours = letterbox_torch(torch.from_numpy(image), 320).permute(1, 2, 0).numpy()
        diff = np.abs(ours - letterbox_cv2(image, 320).astype(np.float32))
        worst = max(worst, float(diff.max()))
        rh, rw = letterbox_size(h, w, 320)
        assert (ours[rh:] == 114).all() and (ours[:, rw:] == 114).all()
    assert worst <= 1.0


def test_preprocess_is_bgr_normalised_letterboxes_with_resize_factors() -> None:
    detector = _detector()
    images = [_noise(480, 640, 1), _noise(100, 300, 2)]
    batch, scales, sizes = detector.preprocess([images[0], torch.from_numpy(images[1])])
    mean, std = np.array([103.53, 116.28, 123.675]), np.array([57.375, 57.12, 58.395])
    for b, image in enumerate(images):
        bgr = letterbox_cv2(image, 320)[..., ::-1].astype(np.float64)
        expected = ((bgr - mean) / std).transpose(2, 0, 1)
        np.testing.assert_allclose(batch[b].numpy(), expected, atol=1e-5)
    assert batch.shape == (2, 3, 320, 320) and batch.dtype == torch.float32
    np.testing.assert_array_equal(sizes, [[480, 640], [100, 300]])
    np.testing.assert_allclose(scales, [[0.5, 0.5], [320 / 300, 107 / 100]])


def _expected(scores, boxes, scales, sizes, thr, iou, top, nms_pre, levels) -> list:
    """The post-processing written out: per level the best ``nms_pre`` scores >= thr, boxes
    divided by the factors, clipped, empty ones dropped, torchvision's batched NMS, top."""
    out = []
    for b in range(len(scores)):
        idx = []
        for start, stop in levels:
            s = scores[b, start:stop]
            cand = [i for i in np.argsort(-s, kind="stable") if s[i] >= thr][:nms_pre]
            idx += [start + i for i in cand]
        (sx, sy), (h, w) = scales[b], sizes[b]
        found = boxes[b, idx] / np.array([sx, sy, sx, sy], np.float32)
        found = np.clip(found, 0, [w, h, w, h]).astype(np.float32)
        ok = (found[:, 2] > found[:, 0]) & (found[:, 3] > found[:, 1])
        found, s = found[ok], scores[b, idx][ok]
        keep = batched_nms(
            torch.from_numpy(found), torch.from_numpy(s), torch.zeros(len(s), dtype=torch.long), iou
        )[:top].numpy()
        out.append((found[keep], s[keep]))
    return out


def test_postprocess_is_topk_per_level_rescale_clip_and_torchvision_nms() -> None:
    detector = _detector(size=64, nms_pre=7)  # priors 8x8 + 4x4 + 2x2 = 84
    rng = np.random.default_rng(0)
    scores = rng.random((3, 84), dtype=np.float32)
    xy = rng.uniform(-10, 70, (3, 84, 2))
    wh = rng.uniform(-2, 30, (3, 84, 2))  # some empty boxes
    boxes = np.concatenate([xy, xy + wh], -1).astype(np.float32)
    scores[0, 82], boxes[0, 82] = 0.25, [1, 1, 10, 10]  # exactly the threshold: kept
    scales = np.array([[0.5, 0.5], [2.0, 1.9], [64 / 100, 40 / 61]])
    sizes = np.array([[128, 128], [30, 32], [61, 100]])
    levels = [(0, 64), (64, 80), (80, 84)]
    for thr, iou, top in [(0.25, 0.3, 100), (0.0, 0.6, 5), (0.9, 0.5, 100), (0.5, 0.0, 100)]:
        got = detector.postprocess(
            torch.from_numpy(scores),
            boxes,
            scales,
            sizes,
            score_thr=thr,
            nms_thr=iou,
            max_persons=top,
        )
        want = _expected(scores, boxes, scales, sizes, thr, iou, top, 7, levels)
        for d, (wb, ws) in zip(got, want, strict=True):
            np.testing.assert_allclose(d.boxes, wb, rtol=1e-6)
            np.testing.assert_array_equal(d.scores, ws)
            assert d.boxes.dtype == d.scores.dtype == np.float32
            assert (np.diff(d.scores) <= 0).all() and len(d.scores) <= top
    kept = detector.postprocess(
        scores, boxes, scales, sizes, score_thr=0.25, nms_thr=1.0, max_persons=999
    )
    assert 0.25 in kept[0].scores and [2, 2, 20, 20] in kept[0].boxes.tolist()
    assert len(kept[0].scores) <= 3 * 7  # nms_pre per level


class _FindsTheBrightRectangle(torch.nn.Module):
    """A network stand-in: one detection per image, the bounding box (input px) of the
    pixels brighter than mid-grey in the normalised BGR input, score 0.9 at prior 0."""

    def __init__(self, priors: int) -> None:
        super().__init__()
        self.priors = priors

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor([103.53, 116.28, 123.675]).reshape(1, 3, 1, 1)
        std = torch.tensor([57.375, 57.12, 58.395]).reshape(1, 3, 1, 1)
        bright = ((x * std + mean) > 128).all(dim=1)
        scores = torch.zeros(len(x), self.priors)
        boxes = torch.zeros(len(x), self.priors, 4)
        for b, mask in enumerate(bright):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            boxes[b, 0] = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
            scores[b, 0] = 0.9
        return scores, boxes


def test_boxes_come_back_in_each_images_pixels() -> None:
    """Images of several sizes and aspect ratios in one batch (numpy and torch), a bright
    rectangle drawn in each at known pixels: the box comes back where it was drawn, within
    the blur of one input pixel."""
    detector = _detector()
    detector.network = _FindsTheBrightRectangle(40**2 + 20**2 + 10**2)
    drawn = {  # (h, w) -> rectangle x1, y1, x2, y2 (image px, end exclusive)
        (480, 640): (100, 50, 300, 400),
        (640, 480): (10, 300, 470, 630),
        (200, 900): (700, 20, 880, 190),
        (90, 60): (5, 7, 30, 80),  # enlarged 3.6x
        (320, 320): (0, 0, 64, 32),
    }
    images: list = []
    for i, ((h, w), (x1, y1, x2, y2)) in enumerate(drawn.items()):
        image = np.random.default_rng(i).integers(0, 60, (h, w, 3), dtype=np.uint8)
        image[y1:y2, x1:x2] = 250
        images.append(torch.from_numpy(image) if i % 2 else image)
    found = detector.detect(images, score_thr=0.5)
    for (h, w), rect, d in zip(drawn, drawn.values(), found, strict=True):
        factor = 320 / max(h, w)
        np.testing.assert_allclose(d.boxes[0], rect, atol=1.0 / factor + 0.5)
        np.testing.assert_allclose(d.scores, [0.9])


def test_no_images_and_wrong_images() -> None:
    detector = _detector(size=64)
    assert detector.detect([]) == []
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8 RGB"):
        detector.detect([np.zeros((8, 8), np.uint8)])
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8 RGB"):
        detector.detect([np.zeros((8, 8, 3), np.float32)])
    empty = detector.detect([_noise(20, 30, 0)], score_thr=1.01)  # nothing reaches it
    assert empty[0].boxes.shape == (0, 4) and empty[0].scores.shape == (0,)


@pytest.mark.parametrize(("arch", "gflops"), [(RTMDET_ARCHS[0], 0.31), (RTMDET_ARCHS[1], 38.95)])
def test_network_costs_the_published_gflops(arch: str, gflops: float) -> None:
    """Multiply-adds of one forward pass (on the meta device: nothing computed) match the
    FLOPS mmpose publishes, counted as mmengine counts (a multiply-add is one)."""
    with torch.device("meta"):
        network = RTMDetNet(ARCH_SPECS[arch])
        x = torch.empty(1, 3, ARCH_SPECS[arch].input_size, ARCH_SPECS[arch].input_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        network(x)
    assert counter.get_total_flops() / 2e9 == pytest.approx(gflops, rel=0.01)


def test_zoo_entries_are_the_published_files() -> None:
    """mmpose's projects/rtmpose/README.md: file (its sha256 prefix in the name), person AP,
    input, GFLOPs."""
    base = "https://download.openmmlab.com/mmpose/v1/projects/rtmpose"
    published = {
        "person-rtmdet-nano": (
            "rtmdet_nano_8xb32-100e_coco-obj365-person-05d8511e.pth",
            0.403,
            320,
            0.31,
        ),
        "person-rtmdet-m": (
            "rtmdet_m_8xb32-100e_coco-obj365-person-235e8209.pth",
            0.625,
            640,
            38.95,
        ),
    }
    for name, (filename, ap, size, gflops) in published.items():
        e = zoo.ENTRIES[name]
        assert (e.base_url, e.filename, e.coco_val_ap, e.input_size, e.gflops) == (
            base,
            filename,
            ap,
            size,
            gflops,
        )
        assert (
            e.kind == "detector" and e.arch == name and filename.endswith(f"-{e.sha256_prefix}.pth")
        )
        assert ARCH_SPECS[name].input_size == size


def test_zoo_fetches_converts_and_loads_an_rtmdet(tmp_path: Path, monkeypatch, capsys) -> None:
    """A published-layout nano .pth from a loopback server: hash checked, converted once to
    .safetensors (tensors as published), loaded by name as the .pth itself loads."""
    state = published_state(NANO, seed=5)
    data = save_published(tmp_path / "src.pth", state).read_bytes()
    prefix = hashlib.sha256(data).hexdigest()[:8]
    filename = f"rtmdet_nano_test-person-{prefix}.pth"
    served = _Files(files={filename: data})
    entry = ZooEntry(
        NANO,
        filename,
        prefix,
        0.403,
        layout="mmdet",
        base_url="http://127.0.0.1:9/x",
        kind="detector",
        arch=NANO,
        gflops=0.31,
        input_size=320,
    )
    home = tmp_path / "home"
    with _serving(served) as url:
        path = fetch(NANO, home, base_url=url, progress=False, entries={NANO: entry})
        assert path == home / f"{NANO}.safetensors"
        by_name = load_detector(NANO, "cpu", home=home, entries={NANO: entry})
    assert len(served.requests) == 1
    with safe_open(str(path), framework="pt") as f:
        source = json.loads(f.metadata()[DETECTOR_KEY])
    assert source["arch"] == NANO and source["sha256"] == hashlib.sha256(data).hexdigest()
    cached = read_state_dict(path)
    assert set(cached) == set(state) and all(torch.equal(cached[k], v) for k, v in state.items())
    by_file = RTMDetector.from_file(tmp_path / "src.pth", device="cpu")
    assert isinstance(by_name, RTMDetector) and by_name.arch == NANO
    by_path = load_detector(path, "cpu")  # the cached file given as a file (the service's way)
    assert isinstance(by_path, RTMDetector) and by_path.arch == NANO
    ours, theirs = by_name.network.state_dict(), by_file.network.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    monkeypatch.setenv("HEATPOSE_HOME", str(home))
    assert weights_cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert re.search(
        r"^person-rtmdet-nano +0\.403 +- +yes +detector +rtmdet_nano_\S+ +320x320 +0\.31$",
        out,
        re.M,
    )
    assert re.search(
        r"^person-rtmdet-m +0\.625 +- +no +detector +rtmdet_m_\S+ +640x640 +38\.95$", out, re.M
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_letterbox_and_detections_match_the_cpu() -> None:
    """On CUDA the letterbox runs on the device from the image tensor: within one grey level
    of OpenCV; the detections match the CPU path's (same weights)."""
    state = published_state(NANO, seed=1)
    cpu = RTMDetector.from_state_dict(state, device="cpu")
    gpu = RTMDetector.from_state_dict(state, device="cuda")
    images = [_noise(480, 640, 3), _noise(200, 900, 4), _noise(90, 60, 5)]
    for image in images:
        on_device = letterbox_torch(torch.from_numpy(image).cuda(), 320).permute(1, 2, 0).cpu()
        assert np.abs(on_device.numpy() - letterbox_cv2(image, 320)).max() <= 1
    batch_cpu, scales, sizes = cpu.preprocess(images)
    batch_gpu, scales_gpu, sizes_gpu = gpu.preprocess(
        [torch.from_numpy(im).cuda() for im in images]
    )
    np.testing.assert_array_equal(scales, scales_gpu)
    np.testing.assert_array_equal(sizes, sizes_gpu)
    assert (batch_gpu.cpu() - batch_cpu).abs().max() <= 1.01 / 57.12
    with torch.inference_mode():
        s_cpu, b_cpu = cpu.network(batch_cpu)
        s_gpu, b_gpu = gpu.network(batch_cpu.cuda())
    torch.testing.assert_close(s_gpu.cpu(), s_cpu, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(b_gpu.cpu(), b_cpu, atol=1e-2, rtol=1e-3)
    for a, b in zip(
        gpu.detect(images, 0.0),
        gpu.detect([torch.from_numpy(im).cuda() for im in images], 0.0),
        strict=True,
    ):
        np.testing.assert_array_equal(a.boxes, b.boxes)
