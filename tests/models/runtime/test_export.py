"""`heatpose export`: a checked, self-describing ONNX file computing what the torch model does."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import heatpose_cli
from models.runtime.export import ExportError, export_onnx, read_onnx_config
from models.weights.checkpoint import save


@pytest.fixture(scope="module")
def exported(lively_r18, module_tmp: Callable[[str], Path]):
    """The lively R18 as a checkpoint, exported through the CLI."""
    root = module_tmp("export")
    save(root / "m.safetensors", lively_r18.model, lively_r18.config)
    out = root / "m.onnx"
    rc = heatpose_cli.main(
        ["export", str(root / "m.safetensors"), "--format", "onnx", "--out", str(out)]
    )
    assert rc == 0
    return lively_r18, out


def test_onnx_file_is_checked_and_self_describing(exported) -> None:
    bundle, path = exported
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert read_onnx_config(path) == bundle.config  # rebuilt from the file alone
    (inp,) = proto.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 96, 64]


@pytest.mark.parametrize("batch", [1, 2, 7])
def test_onnxruntime_matches_torch_within_1e4(exported, batch: int) -> None:
    bundle, path = exported
    model = bundle.model
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(batch, 3, 96, 64, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        ref = model(x).numpy()
    (got,) = session.run(None, {"input": x.numpy()})
    assert got.shape == ref.shape == (batch, 17, 24, 16)
    assert np.abs(got - ref).max() <= 1e-4
    assert np.abs(ref).std() > 0.1  # the comparison is not between two zero maps


def test_cli_prints_parity_and_errors_name_the_file(exported, tmp_path, capsys) -> None:
    bundle, _ = exported
    save(tmp_path / "m.safetensors", bundle.model, bundle.config)
    rc = heatpose_cli.main(
        [
            "export",
            str(tmp_path / "m.safetensors"),
            "--format",
            "onnx",
            "--out",
            str(tmp_path / "x.onnx"),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "max |diff|" in out
    diff = float(out.split("max |diff| ")[1].split()[0])
    assert diff <= 1e-4
    rc = heatpose_cli.main(
        [
            "export",
            str(tmp_path / "nope.safetensors"),
            "--format",
            "onnx",
            "--out",
            str(tmp_path / "y.onnx"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "nope.safetensors" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert heatpose_cli.main(["export", "m.safetensors", "--format", "tflite", "--out", "x"]) == 2
    assert "--format" in capsys.readouterr().err
    assert (
        heatpose_cli.main(
            ["export", "m.safetensors", "--format", "onnx", "--out", "x", "--opset", "99"]
        )
        == 2
    )
    assert "--opset" in capsys.readouterr().err


def test_read_config_refuses_a_foreign_onnx(tmp_path) -> None:
    plain = tmp_path / "plain.onnx"
    h = onnx.helper
    io = [h.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1]) for n in ("x", "y")]
    graph = h.make_graph([h.make_node("Identity", ["x"], ["y"])], "g", io[:1], io[1:])
    onnx.save(h.make_model(graph), str(plain))
    with pytest.raises(ExportError, match="no 'heatpose' metadata"):
        read_onnx_config(plain)
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(ExportError, match=r"junk\.onnx"):
        read_onnx_config(tmp_path / "junk.onnx")


def test_export_leaves_the_model_as_it_was(exported, tmp_path) -> None:
    bundle, _ = exported
    model = bundle.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model, bundle.config, tmp_path / "again.onnx")
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_export_help_imports_neither_torch_nor_onnx() -> None:
    code = (
        "import sys, heatpose_cli\n"
        "try:\n    heatpose_cli.main(['export', '--help'])\n"
        "except SystemExit:\n    pass\n"
        "bad = [m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "--format" in r.stdout
