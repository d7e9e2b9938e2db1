"""PersonDetector: torchvision's published layouts load; detect() is torchvision's own model
(person class, same thresholds), one forward pass a batch, no keypoint head."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torchvision.models import WeightsEnum
from torchvision.models.detection import (
    FasterRCNN_MobileNet_V3_Large_FPN_Weights,
    KeypointRCNN_ResNet50_FPN_Weights,
    fasterrcnn_mobilenet_v3_large_fpn,
    keypointrcnn_resnet50_fpn,
)

from models.detection.detector import (
    COCO_PROTOCOL,
    PersonDetector,
    build_torchvision_model,
    guess_arch,
)
from models.weights.checkpoint import CheckpointError

SIZES = {"min_size": 160, "max_size": 320, "rpn_post_nms_top_n_test": 150}
"""Small images and few proposals: cheap on a CPU, the same code paths."""

# arch -> (torchvision builder, its published weights, builder args for those weights)
TORCHVISION: dict[str, tuple[Callable[..., Any], WeightsEnum, dict[str, int]]] = {
    "person-rcnn-r50-fpn": (
        keypointrcnn_resnet50_fpn,
        KeypointRCNN_ResNet50_FPN_Weights.COCO_V1,
        {"num_classes": 2, "num_keypoints": 17},
    ),
    "person-frcnn-mbv3": (
        fasterrcnn_mobilenet_v3_large_fpn,
        FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1,
        {"num_classes": 91},
    ),
}


PERSON_LOGIT = {"person-rcnn-r50-fpn": (1.0, 6.0), "person-frcnn-mbv3": (100.0, 4.5)}


def published_state(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict with the keys and shapes of torchvision's published file for
    ``arch`` (frozen BatchNorm: no ``num_batches_tracked``), BN statistics and the person
    logit's weights perturbed so that the model finds persons and BN handling matters."""
    builder, _, classes = TORCHVISION[arch]
    torch.manual_seed(seed)
    model = builder(weights=None, weights_backbone=None, **classes)
    state = {k: v for k, v in model.state_dict().items() if "num_batches_tracked" not in k}
    gen = torch.Generator().manual_seed(seed)
    for k, v in state.items():
        if k.endswith("running_var"):
            v.uniform_(0.7, 1.3, generator=gen)
        elif k.endswith("running_mean"):
            v.normal_(0.0, 0.05, generator=gen)
    gain, shift = PERSON_LOGIT[arch]
    state["roi_heads.box_predictor.cls_score.weight"][1] *= gain  # scores that differ
    state["roi_heads.box_predictor.cls_score.bias"][1] += shift  # and persons above 0.3
    return state


def torchvision_reference(
    arch: str, state: dict[str, torch.Tensor], monkeypatch: pytest.MonkeyPatch, **kwargs: Any
) -> torch.nn.Module:
    """torchvision's builder given its published weights enum, as a user of torchvision would
    call it; the download is replaced by ``state`` (a strict load: the layout must match)."""
    builder, weights, _ = TORCHVISION[arch]
    with monkeypatch.context() as m:
        m.setattr(WeightsEnum, "get_state_dict", lambda self, *a, **k: state)
        return builder(weights=weights, **kwargs).eval()


def images() -> list[np.ndarray]:
    """Three smooth random RGB images of different sizes, ``(H, W, 3)`` uint8."""
    rng = np.random.default_rng(3)
    out = []
    for h, w in ((160, 224), (208, 160), (176, 176)):
        coarse = rng.integers(0, 256, (h // 16, w // 16, 3)).astype(np.float32)
        big = np.kron(coarse, np.ones((16, 16, 1), np.float32))
        out.append((big * 0.8 + rng.integers(0, 50, (h, w, 3))).clip(0, 255).astype(np.uint8))
    return out


@pytest.fixture(scope="module", params=list(TORCHVISION))
def published(
    request, module_tmp: Callable[[str], Path]
) -> tuple[str, dict[str, torch.Tensor], Path]:
    """(arch, state dict, the state dict saved as a ``.pth`` the way torchvision's are)."""
    arch = request.param
    state = published_state(arch)
    path = module_tmp(arch) / f"{arch}.pth"
    torch.save(state, path)
    return arch, state, path


@pytest.mark.slow
def test_detect_is_torchvision_on_the_person_class(published, monkeypatch) -> None:
    arch, state, path = published
    thr, nms_thr, max_persons = 0.3, 0.3, 8
    thresholds = {"box_score_thresh": thr, "box_nms_thresh": nms_thr}
    reference = torchvision_reference(
        arch, state, monkeypatch, **SIZES, **thresholds, box_detections_per_img=1000
    )
    batch = images()
    with torch.no_grad():
        expected = reference([torch.from_numpy(im).permute(2, 0, 1) / 255.0 for im in batch])
    detector = PersonDetector.from_file(path, arch, "cpu", **SIZES)
    backbone_batches: list[int] = []
    detector.model.backbone.register_forward_hook(
        lambda mod, args, out: backbone_batches.append(args[0].shape[0])
    )
    got = detector.detect(batch, score_thr=thr, nms_thr=nms_thr, max_persons=max_persons)
    assert backbone_batches == [3]  # the three sizes in one forward pass
    assert len(got) == 3
    for det, ref in zip(got, expected, strict=True):
        person = ref["labels"] == 1
        boxes, scores = ref["boxes"][person][:max_persons], ref["scores"][person][:max_persons]
        assert len(scores) > 0  # real detections are compared
        assert det.boxes.dtype == det.scores.dtype == np.float32
        np.testing.assert_allclose(det.boxes, boxes.numpy(), atol=1e-3)
        np.testing.assert_allclose(det.scores, scores.numpy(), atol=1e-5)
    assert max(len(d.scores) for d in got) == max_persons  # the cap was reached somewhere


@pytest.mark.slow
def test_safetensors_file_detects_the_same(published, tmp_path: Path) -> None:
    arch, state, path = published
    st = tmp_path / "det.safetensors"
    save_file(state, str(st))
    batch = images()[:1]
    a = PersonDetector.from_file(path, None, "cpu", **SIZES).detect(batch)
    b = PersonDetector.from_file(st, arch, "cpu", **SIZES).detect(batch)
    assert len(a[0].scores) > 0
    np.testing.assert_array_equal(a[0].boxes, b[0].boxes)
    np.testing.assert_array_equal(a[0].scores, b[0].scores)
    assert guess_arch(list(state)) == arch


@pytest.mark.slow
def test_keypoint_head_is_loaded_but_not_run(published) -> None:
    arch, _, path = published
    detector = PersonDetector.from_file(path, arch, "cpu", **SIZES)
    heads = detector.model.roi_heads
    assert not heads.has_keypoint()  # torchvision's RoIHeads skips the keypoint branch
    outputs: list[list[dict]] = []
    detector.model.register_forward_hook(lambda mod, args, out: outputs.append(out))
    detector.detect(images()[:2], score_thr=0.0)
    assert [sorted(o) for o in outputs[0]] == [["boxes", "labels", "scores"]] * 2  # no keypoints


def test_thresholds_mean_what_they_say() -> None:
    """score >= thr, greedy NMS among persons at nms_thr, at most max_persons, best first:
    checked against an independent numpy NMS over all of the model's person boxes."""
    arch = "person-frcnn-mbv3"
    detector = _detector(arch, published_state(arch, seed=1), "cpu")
    image = images()[:1]
    everything = detector.detect(image, score_thr=0.0, nms_thr=1.0, max_persons=10_000)[0]
    assert np.all(np.diff(everything.scores) <= 0)
    for thr, nms_thr, cap in ((0.3, 0.3, 5), (0.5, 0.5, 100), (0.0, 0.7, 3)):
        got = detector.detect(image, score_thr=thr, nms_thr=nms_thr, max_persons=cap)[0]
        keep = _greedy_nms(everything.boxes, everything.scores, thr, nms_thr)[:cap]
        assert len(keep) > 0
        np.testing.assert_allclose(got.boxes, everything.boxes[keep], atol=1e-4)
        np.testing.assert_allclose(got.scores, everything.scores[keep], atol=1e-6)
    assert detector.detect(image, score_thr=1.01)[0].boxes.shape == (0, 4)
    assert detector.detect([]) == []
    assert COCO_PROTOCOL["score_thr"] == 0.0


def test_read_only_images_detect_the_same_without_warnings(monkeypatch) -> None:
    """The service's intake images are read-only: detect takes them without torch's "not
    writable" warning (an error here; torch warns once a process, so every array handed to
    torch.from_numpy is checked too), leaves them untouched and finds the same boxes."""
    given: list[bool] = []
    from_numpy = torch.from_numpy

    def recording(array: np.ndarray) -> torch.Tensor:
        given.append(array.flags.writeable)
        return from_numpy(array)

    monkeypatch.setattr(torch, "from_numpy", recording)
    arch = "person-frcnn-mbv3"
    detector = _detector(arch, published_state(arch, seed=1), "cpu")
    batch = images()[:2]
    frozen = [im.copy() for im in batch]
    for im in frozen:
        im.flags.writeable = False
    mirrored = batch[0][:, ::-1]  # a view that is not C-contiguous
    expected = detector.detect([*batch, mirrored.copy()], score_thr=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = detector.detect([*frozen, mirrored], score_thr=0.0)
    assert len(expected[0].scores) > 0 and given and all(given)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.scores, b.scores)
    for im, original in zip(frozen, batch, strict=True):
        assert not im.flags.writeable
        np.testing.assert_array_equal(im, original)


def _detector(arch: str, state: dict[str, torch.Tensor], device: str) -> PersonDetector:
    model = build_torchvision_model(arch, **SIZES)
    model.load_state_dict(state)
    return PersonDetector(model, device)


def _greedy_nms(boxes: np.ndarray, scores: np.ndarray, thr: float, iou_thr: float) -> list[int]:
    order = [i for i in np.argsort(-scores, kind="stable") if scores[i] >= thr]
    keep: list[int] = []
    for i in order:
        if all(_iou(boxes[i], boxes[j]) <= iou_thr for j in keep):
            keep.append(int(i))
    return keep


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return float(w * h / (area - w * h))


def test_wrong_files_are_refused_with_a_message(published, tmp_path: Path) -> None:
    arch, _, path = published
    other = next(a for a in TORCHVISION if a != arch)
    with pytest.raises(CheckpointError, match=rf"not a {other} state dict: missing keys"):
        PersonDetector.from_file(path, other, "cpu", **SIZES)
    with pytest.raises(CheckpointError, match="unknown detector arch 'yolo'"):
        PersonDetector.from_file(path, "yolo", "cpu")
    with pytest.raises(CheckpointError, match="file not found"):
        PersonDetector.from_file(tmp_path / "nope.pth", arch)
    garbage = tmp_path / "g.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        PersonDetector.from_file(garbage, arch)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_amp_matches_float32_on_strong_detections() -> None:
    arch = "person-frcnn-mbv3"
    cpu, gpu = (
        _detector(arch, published_state(arch), device).detect(images(), score_thr=0.5)
        for device in ("cpu", "cuda")
    )
    for a, b in zip(cpu, gpu, strict=True):
        assert len(a.scores) > 0 and b.boxes.dtype == np.float32
        np.testing.assert_allclose(b.boxes[0], a.boxes[0], atol=2.0)
        np.testing.assert_allclose(b.scores[0], a.scores[0], atol=0.02)


def test_tensor_images_detect_as_numpy_ones() -> None:
    """``(H, W, 3)`` uint8 tensors (the service's device-decoded images; a permuted view, as
    ``decode_jpeg``'s ``(3, H, W)`` output becomes) find the same boxes as numpy images."""
    arch = "person-frcnn-mbv3"
    detector = _detector(arch, published_state(arch, seed=1), "cpu")
    batch = images()
    views = [torch.from_numpy(im).permute(2, 0, 1).contiguous().permute(1, 2, 0) for im in batch]
    assert not views[0].is_contiguous()
    want = detector.detect(batch, score_thr=0.0)
    got = detector.detect(views, score_thr=0.0)
    for a, b in zip(want, got, strict=True):
        assert len(a.scores) > 0
        np.testing.assert_array_equal(b.boxes, a.boxes)
        np.testing.assert_array_equal(b.scores, a.scores)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensor_images_are_read_where_they_are(monkeypatch) -> None:
    """CUDA tensors go into the CUDA detector without a host round trip (no numpy image is
    made) and find the boxes the numpy images do on the same device."""
    arch = "person-frcnn-mbv3"
    detector = _detector(arch, published_state(arch), "cuda")
    want = detector.detect(images(), score_thr=0.5)
    made: list[object] = []
    from_numpy = torch.from_numpy
    monkeypatch.setattr(torch, "from_numpy", lambda a: made.append(a) or from_numpy(a))
    got = detector.detect([torch.from_numpy(im).cuda() for im in images()], score_thr=0.5)
    assert len(made) == len(images())  # only the three made by this test
    for a, b in zip(want, got, strict=True):
        assert len(a.scores) > 0
        np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-3)
        np.testing.assert_allclose(b.scores, a.scores, atol=1e-4)
