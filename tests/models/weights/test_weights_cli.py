"""``heatpose weights import``: conversion through the CLI, and one-line errors with exit 2."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from heatpose_cli.weights import main
from models.pose.network import PoseResNet
from models.weights.checkpoint import load, read_config


@pytest.fixture(scope="module")
def simplebaselines_file(module_tmp: Callable[[str], Path]) -> tuple[PoseResNet, Path]:
    """A random ResNet-18 saved as an original SimpleBaselines bare state dict."""
    torch.manual_seed(0)
    model = PoseResNet(18, 17).eval()
    path = module_tmp("src") / "pose_resnet_18_256x192.pth.tar"
    torch.save(model.state_dict(), path)
    return model, path


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def test_import_writes_a_loadable_model(tmp_path: Path, simplebaselines_file, capsys) -> None:
    model, src = simplebaselines_file
    out = tmp_path / "sb.safetensors"
    assert main(["import", str(src), "--out", str(out), "--name", "sb", "--decode", "dark"]) == 0
    assert str(out) in capsys.readouterr().out
    config = read_config(out)
    assert (config.name, config.depth, config.color_order) == ("sb", 18, "BGR")
    assert (config.decode_mode, config.provenance["layout"]) == ("dark", "simplebaselines")
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        assert torch.equal(load(out).model(x), model(x))


def test_import_defaults_to_shift_decode_and_the_file_stem(
    tmp_path: Path, simplebaselines_file
) -> None:
    out = tmp_path / "m.safetensors"
    assert main(["import", str(simplebaselines_file[1]), "--out", str(out)]) == 0
    config = read_config(out)
    assert (config.name, config.decode_mode) == ("pose_resnet_18_256x192", "shift")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["import", "model.pth"], "--out"),
        (["import", "model.pth", "--out", "x.safetensors", "--layout", "detectron"], "--layout"),
        (["import", "model.pth", "--out", "x.safetensors", "--decode", "soft"], "--decode"),
        (["frobnicate"], "frobnicate"),
        ([], "command"),
    ],
)
def test_usage_errors_are_one_line_exit_2(argv: list[str], expected: str, capsys) -> None:
    assert main(argv) == 2
    assert expected in _one_line_error(capsys)


def test_missing_or_bad_file_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "missing.pth"
    assert main(["import", str(missing), "--out", str(tmp_path / "x.safetensors")]) == 2
    line = _one_line_error(capsys)
    assert line.startswith("heatpose weights import: error:") and str(missing) in line
    bad = tmp_path / "bad.pth"
    bad.write_text("not a checkpoint")
    assert main(["import", str(bad), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert str(bad) in _one_line_error(capsys)
    assert not (tmp_path / "x.safetensors").exists()


def test_unwritable_output_is_one_line_exit_2(tmp_path: Path, simplebaselines_file, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = blocker / "sub" / "m.safetensors"  # a directory cannot be made under a file
    assert main(["import", str(simplebaselines_file[1]), "--out", str(out)]) == 2
    assert str(blocker) in _one_line_error(capsys)
