"""A torchvision state dict saved with ordinary BatchNorm (``num_batches_tracked`` buffers, as
every model trained with it saves) loads as torchvision's ``FrozenBatchNorm2d`` loads it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn

from models.detection.detector import PersonDetector
from models.weights.checkpoint import CheckpointError
from tests.models.detection.test_detector import (
    SIZES,
    images,
    published_state,
    torchvision_reference,
)

ARCH = "person-frcnn-mbv3"


def with_counters() -> dict[str, torch.Tensor]:
    """The published layout plus the counters an ordinary-BatchNorm model of the same
    architecture saves (names taken from that model, not from ours)."""
    trained = fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=91
    )  # no weights: torchvision builds it with ordinary BatchNorm
    counters = {
        k: torch.tensor(5000 + i)
        for i, k in enumerate(trained.state_dict())
        if k.endswith("num_batches_tracked")
    }
    state = published_state(ARCH)
    assert len(counters) > 10 and not set(counters) & set(state)
    return {**state, **counters}


def test_num_batches_tracked_is_ignored_as_torchvision_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = with_counters()
    path = tmp_path / "trained.pth"
    torch.save(state, path)
    reference = torchvision_reference(
        ARCH, state, monkeypatch, **SIZES, box_score_thresh=0.3, box_nms_thresh=0.3
    )  # torchvision's own strict load of the same dict
    batch = images()[:2]
    with torch.no_grad():
        expected = reference([torch.from_numpy(im).permute(2, 0, 1) / 255.0 for im in batch])
    got = PersonDetector.from_file(path, None, "cpu", **SIZES).detect(batch, max_persons=1000)
    for det, ref in zip(got, expected, strict=True):
        person = ref["labels"] == 1
        assert person.sum() > 0
        np.testing.assert_allclose(det.boxes, ref["boxes"][person].numpy(), atol=1e-3)
        np.testing.assert_allclose(det.scores, ref["scores"][person].numpy(), atol=1e-5)


def test_a_counter_without_a_batchnorm_is_still_refused(tmp_path: Path) -> None:
    state = with_counters()
    state["roi_heads.box_head.fc6.num_batches_tracked"] = torch.tensor(1)  # fc6 is a Linear
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\).*fc6.num_batches_tracked"):
        PersonDetector.from_file(path, ARCH, "cpu", **SIZES)
