"""``heatpose predict`` offline: ``--detector auto`` (the default) goes on without a detector and
says so once; a named detector or checkpoint that cannot be had is one line naming this CLI's
own flags (``--detector none``, ``--checkpoint``), never the service's HEATPOSE_* settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from heatpose_cli.predict import main


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No cached weights, the weight host a closed loopback port; an image at ``photo.jpg``."""
    monkeypatch.setenv("HEATPOSE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HEATPOSE_WEIGHTS_URL", "http://127.0.0.1:9")
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (64, 48), (90, 120, 30)).save(tmp_path / "photo.jpg")
    return tmp_path


def stderr_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_auto_detector_offline_goes_on_without_one(
    offline: Path, app_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["photo.jpg", "--out", "out", "--checkpoint", str(app_checkpoint), "--device", "cpu"]
    assert main(args) == 0
    said = [line for line in stderr_lines(capsys) if "person detection is off" in line]
    assert len(said) == 1 and "--detector none" in said[0] and "cannot download" in said[0]
    (person,) = json.loads((offline / "out" / "photo.json").read_text())["persons"]
    assert person["bbox_source"] == "image"


def test_named_detector_offline_is_one_line_suggesting_detector_none(
    offline: Path, app_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["photo.jpg", "--out", "out", "--checkpoint", str(app_checkpoint), "--device", "cpu"]
    assert main([*args, "--detector", "person-frcnn-mbv3"]) == 2
    (line,) = stderr_lines(capsys)
    assert line.startswith("heatpose predict: error: --detector person-frcnn-mbv3:")
    assert "--detector none" in line and "HEATPOSE_DETECTOR" not in line
    assert not (offline / "out").exists()


def test_default_checkpoint_offline_names_the_checkpoint_flag(
    offline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["photo.jpg", "--out", "out", "--device", "cpu", "--detector", "none"]) == 2
    (line,) = stderr_lines(capsys)
    assert "--checkpoint" in line and "cannot download" in line
    assert "HEATPOSE_CHECKPOINT" not in line
