"""``heatpose eval --boxes detector`` takes the names the service takes: ``auto`` (RTMDet-nano
on the CPU) and an RTMDet weights file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from heatpose_cli import eval as evaluate_module
from heatpose_cli import synth as synthetic
from models.pose.network import PoseResNet
from models.weights.checkpoint import save
from models.weights.model_config import ModelConfig
from tests.models.lively_rtmdet import write_rtmdet
from tests.training.test_eval_detector import GroundTruthDetector


@pytest.fixture(scope="module")
def data(module_tmp: Callable[[str], Path]) -> Path:
    """A synthetic COCO-format split of 4 small images."""
    out = module_tmp("evrtm") / "data"
    sizes = ["--width", "160", "--height", "128"]
    synthetic.main(["--out", str(out), "--train", "0", "--val", "4", *sizes])
    return out


CODEC = {"input_size": [64, 96], "heatmap_size": [16, 24], "sigma": 2.0, "blur_kernel": 11}


def eval_args(data: Path, tmp_path: Path, detector: str) -> list[str]:
    ckpt = tmp_path / "m.safetensors"
    save(ckpt, PoseResNet(18, 17), ModelConfig(depth=18, codec_params=CODEC))
    args = ["--checkpoint", str(ckpt), "--data-path", str(data), "--split", "val", "-j", "0"]
    out = tmp_path / "out" / "kps.json"
    return [*args, "--boxes", "detector", "--detector", detector, "--output", str(out)]


def test_auto_is_rtmdet_nano_on_the_cpu(data: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    asked: list[str] = []

    def load(name: str, device: object) -> GroundTruthDetector:
        asked.append(name)
        return GroundTruthDetector(data, "val", noise=0.06)

    monkeypatch.setattr("training.evaluate.load_detector", load)
    assert evaluate_module.main([*eval_args(data, tmp_path, "auto"), "--device", "cpu"]) == 0
    assert asked == ["person-rtmdet-nano"]
    assert "AR100" in capsys.readouterr().out


@pytest.mark.slow
def test_an_rtmdet_file_detects_the_split(data: Path, tmp_path: Path, capsys) -> None:
    weights = write_rtmdet(tmp_path / "rtmdet_nano.pth")
    args = [*eval_args(data, tmp_path, str(weights)), "--device", "cpu"]
    assert evaluate_module.main(args) == 0
    printed = capsys.readouterr().out
    assert f"person boxes ({weights}):" in printed and "AR100" in printed
    assert (tmp_path / "out" / "kps_person_boxes.json").stat().st_size > 2  # boxes were found
