"""``auto`` names RTMDet: m on CUDA, nano on the CPU, the same for the service, predict and eval."""

from __future__ import annotations

import pytest
import torch

from app.engine.startup import detector_name
from models.detection.detector_choice import auto_detector


@pytest.mark.parametrize(
    ("device", "name"),
    [
        ("cpu", "person-rtmdet-nano"),
        (torch.device("cpu"), "person-rtmdet-nano"),
        ("cuda", "person-rtmdet-m"),
        ("cuda:1", "person-rtmdet-m"),
        (torch.device("cuda", 0), "person-rtmdet-m"),
    ],
)
def test_auto_is_rtmdet_m_on_cuda_and_nano_on_the_cpu(device, name: str) -> None:
    assert auto_detector(device) == name


@pytest.mark.parametrize(
    ("cuda", "name"), [(True, "person-rtmdet-m"), (False, "person-rtmdet-nano")]
)
def test_auto_device_follows_cuda_availability(monkeypatch, cuda: bool, name: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert auto_detector(None) == name
    assert detector_name("auto", None) == name


def test_the_service_setting_maps_through_the_same_choice() -> None:
    assert detector_name("auto", "cpu") == "person-rtmdet-nano"
    assert detector_name("auto", "cuda:0") == "person-rtmdet-m"
    assert detector_name("none", "cpu") is None
    for named in ("person-frcnn-mbv3", "person-rcnn-r50-fpn", "person-rtmdet-m", "/w/det.pth"):
        assert detector_name(named, "cpu") == named  # names stay what they say
