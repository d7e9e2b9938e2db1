"""The RTMDet detector exported (static input, NMS outside the graph) and served on ONNX Runtime
gives PyTorch's boxes; batches padded to buckets and warmed up give the same boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from heatpose_cli import export as export_cli
from models.detection.detector_backends import ServedDetector, detector_buckets, served_detector
from models.detection.detector_export import (
    BOXES,
    DETECTOR_KEY,
    SCORES,
    export_detector_onnx,
    read_detector_meta,
)
from models.detection.rtmdet import RTMDetector
from models.runtime import export
from models.runtime.backends import BackendError
from tests.models.lively_rtmdet import SQUARE, lively_state, photos, write_rtmdet

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

ARCH = "person-rtmdet-nano"


@pytest.fixture(scope="module")
def nano() -> RTMDetector:
    return RTMDetector.from_state_dict(lively_state(ARCH), ARCH, "cpu")


def assert_same_detections(got, want, *, px: float = 0.5, score: float = 1e-3) -> None:
    """The same persons: one box of ``got`` within ``px`` (every side) and ``score`` of each box
    of ``want``, one to one (the order of scores closer than ``score`` may differ)."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert len(w.scores) > 0  # real boxes are compared
        assert g.boxes.shape == w.boxes.shape
        free = np.ones(len(g.scores), bool)
        for box, s in zip(w.boxes, w.scores, strict=True):
            near = (
                free & (np.abs(g.boxes - box).max(axis=1) <= px) & (np.abs(g.scores - s) <= score)
            )
            assert near.any(), (box, s)
            free[np.flatnonzero(near)[0]] = False


def untied_threshold(scores: torch.Tensor) -> float:
    """A score threshold above every score that two priors share (random weights saturate:
    the letterbox's constant padding and dead channels give many priors exactly equal scores,
    whose NMS order a 1e-6 difference may swap: a tie, not a disagreement)."""
    values, counts = torch.unique(scores, return_counts=True)
    ties = values[counts > 1]
    return float(ties.max()) + 1e-4 if len(ties) else 0.0


def test_graph_is_static_input_dynamic_batch_without_nms(nano: RTMDetector, tmp_path) -> None:
    path = export_detector_onnx(nano.network, tmp_path / "d.onnx", arch=ARCH, input_size=320)
    graph = onnx.load(str(path)).graph
    dims = [d.dim_value or d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 320, 320]
    assert [o.name for o in graph.output] == [SCORES, BOXES]
    n = sum((320 // s) ** 2 for s in (8, 16, 32))  # one prior a cell of each level
    shapes = [
        [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim] for o in graph.output
    ]
    assert shapes == [["batch", n], ["batch", n, 4]]
    assert not [node for node in graph.node if "NonMaxSuppression" in node.op_type]
    meta = read_detector_meta(path)
    assert meta["arch"] == ARCH and meta["input_size"] == 320 and "outside" in meta["nms"]
    assert DETECTOR_KEY != export.METADATA_KEY  # a detector is never read as a pose model


def test_onnxruntime_detector_gives_torchs_boxes(nano: RTMDetector, tmp_path: Path) -> None:
    """The graph's outputs on a letterboxed batch of several sizes and aspect ratios, then the
    detections (boxes in image px) above the tied scores."""
    served = served_detector(
        nano, backend="onnxruntime", bucket_setting="none", max_batch_size=8, cache_dir=tmp_path
    )
    assert isinstance(served, ServedDetector) and served.backend == "onnxruntime"
    batch, _, _ = nano.preprocess(photos())
    with torch.inference_mode():
        ref_scores, ref_boxes = nano.network(batch)
    scores, boxes = served.forward(batch)
    assert (boxes - ref_boxes).abs().max().item() <= 0.5  # input px
    assert (scores - ref_scores).abs().max().item() <= 1e-3  # float32 sums in another order
    thr = untied_threshold(ref_scores)
    images = photos()
    want = nano.detect(images, score_thr=thr)
    assert_same_detections(served.detect(images, score_thr=thr), want)
    assert_same_detections(served.detect(images[1:2], score_thr=thr), want[1:2])
    assert len(list(tmp_path.glob("*.onnx"))) == 1  # cached by the weights' hash
    again = served_detector(
        nano, backend="onnxruntime", bucket_setting="none", max_batch_size=8, cache_dir=tmp_path
    )
    assert_same_detections(again.detect(images[:1], score_thr=thr), want[:1])
    assert len(list(tmp_path.glob("*.onnx"))) == 1  # reused, not exported again


def test_buckets_pad_the_batch_and_warm_up_reaches_each(nano: RTMDetector) -> None:
    seen: list[int] = []
    nano.network.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[0]))
    served = served_detector(nano, backend="torch", bucket_setting="1,2,4", max_batch_size=3)
    assert served.buckets == (1, 2, 4)
    images = photos(sizes=SQUARE)
    want = RTMDetector.from_state_dict(lively_state(ARCH), ARCH, "cpu").detect(images)
    assert_same_detections(served.detect(images), want, px=0.05)  # padded to 4: rows alone
    assert seen == [4]
    seen.clear()
    assert [size for size, _ in served.warm_up(3)] == [1, 2, 4]
    assert seen == [1, 2, 4]


def test_buckets_follow_the_pose_setting() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert detector_buckets("auto", cpu, max_batch_size=8) == ()
    assert detector_buckets("auto", cuda, max_batch_size=8) == (1, 2, 4, 8)
    assert detector_buckets("auto", cuda, max_batch_size=5) == (1, 2, 4, 8)
    assert detector_buckets("none", cuda, max_batch_size=8) == ()
    assert detector_buckets("8,16,32,64", cpu, max_batch_size=8) == (8,)
    assert detector_buckets("2,4,16,64", cpu, max_batch_size=5) == (2, 4, 16)


def test_tensorrt_without_cuda_is_a_clear_error(nano: RTMDetector, tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="needs a CUDA device"):
        served_detector(nano, backend="tensorrt", bucket_setting="auto", max_batch_size=8)


@pytest.mark.slow
def test_heatpose_export_writes_a_detector(tmp_path: Path, capsys) -> None:
    weights = write_rtmdet(tmp_path / "rtmdet_nano.pth")
    out = tmp_path / "detector.onnx"
    assert export_cli.main([str(weights), "--detector", "--format", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "person-rtmdet-nano detector, input 320x320" in printed and "NMS outside" in printed
    boxes_diff = float(printed.split("boxes ")[-1].split()[0])
    assert 0 <= boxes_diff < 2.0  # random weights; the 0.5 px parity: the test above
    assert read_detector_meta(out)["arch"] == ARCH


def test_exporting_a_two_stage_detector_is_one_clear_line(tmp_path: Path, capsys) -> None:
    from models.detection.detector import build_torchvision_model

    weights = tmp_path / "frcnn.pth"
    torch.save(build_torchvision_model("person-frcnn-mbv3").state_dict(), weights)
    out = tmp_path / "x.onnx"
    assert export_cli.main([str(weights), "--detector", "--format", "onnx", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "only RTMDet detectors" in err[0]
    assert not out.exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", ["onnxruntime", "tensorrt", "compile"])
def test_cuda_backends_give_torchs_boxes(backend: str, tmp_path: Path) -> None:
    cpu = RTMDetector.from_state_dict(lively_state(ARCH), ARCH, "cpu")
    images = photos(sizes=SQUARE)
    want = cpu.detect(images)
    gpu = RTMDetector.from_state_dict(lively_state(ARCH), ARCH, "cuda")
    try:
        served = served_detector(
            gpu, backend=backend, bucket_setting="auto", max_batch_size=4, cache_dir=tmp_path
        )
    except BackendError as e:  # onnxruntime-gpu / TensorRT not installed on this host
        pytest.skip(str(e))
    served.warm_up(4)
    px = 2.0 if backend == "tensorrt" else 0.5  # fp16 engines; letterbox on the device
    assert_same_detections(served.detect(images), want, px=px)
