"""`heatpose export --int8`: a QDQ INT8 ONNX file, calibrated on synthetic people, servable."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import heatpose_cli
from heatpose_cli import synth as synthetic
from models.inference.predictor import Predictor, normalize_crops
from models.inference.quantize import calibration_crops, quantized_op_types
from models.runtime.backends import BackendError, create
from models.runtime.export import export_onnx, read_onnx_config
from models.weights.checkpoint import ModelBundle, save
from models.weights.model_config import ModelConfig


@pytest.fixture(scope="module")
def people(module_tmp: Callable[[str], Path]) -> Path:
    """A small synthetic COCO-format set (``heatpose synth``): 8 train images of people."""
    out = module_tmp("people") / "data"
    flags = "--train 8 --val 0 --seed 2 --width 192 --height 160"
    assert synthetic.main(["--out", str(out), *flags.split()]) == 0
    return out


@pytest.fixture(scope="module")
def int8(
    lively_r18: ModelBundle, people: Path, module_tmp: Callable[[str], Path]
) -> tuple[Path, Path]:
    """The lively R18 checkpoint and its INT8 export through the CLI (16 calibration crops)."""
    root = module_tmp("int8")
    save(root / "m.safetensors", lively_r18.model, lively_r18.config)
    out = root / "m.int8.onnx"
    argv = ["export", str(root / "m.safetensors"), "--format", "onnx", "--out", str(out)]
    argv += ["--int8", "--calibration-data", str(people), "--calibration", "16"]
    assert heatpose_cli.main(argv) == 0
    return root / "m.safetensors", out


def test_calibration_crops_are_the_services_crops(lively_r18: ModelBundle, people: Path) -> None:
    import json

    import cv2

    crops = calibration_crops(lively_r18, people, count=5, seed=1)
    assert crops.shape == (5, 3, 96, 64) and crops.dtype == np.float32
    # each is one annotated person cut and normalised by the Predictor: find it among all
    doc = json.loads((people / "annotations" / "person_keypoints_train.json").read_text())
    files = {im["id"]: im["file_name"] for im in doc["images"]}
    predictor = Predictor(lively_r18, "cpu")
    every = []
    for a in doc["annotations"]:
        if a["num_keypoints"] == 0:
            continue
        x, y, w, h = a["bbox"]
        image = cv2.cvtColor(cv2.imread(str(people / "train" / files[a["image_id"]])), 4)
        cut = predictor.crop(image, np.array([[x, y, x + w, y + h]])).images
        every.append(normalize_crops(cut, lively_r18.config, torch.device("cpu")).numpy()[0])
    for crop in crops:
        assert min(np.abs(crop - e).max() for e in every) == 0.0


def test_int8_file_is_quantized_keeps_the_config_and_stays_close(
    lively_r18: ModelBundle, int8: tuple[Path, Path], people: Path, tmp_path: Path
) -> None:
    _, path = int8
    assert read_onnx_config(path) == lively_r18.config
    ops = quantized_op_types(path)
    # every convolution reads int8 weights through a DequantizeLinear; activations are quantized
    convs = ops["Conv"] + ops.get("ConvTranspose", 0)
    assert ops["QuantizeLinear"] >= convs and ops["DequantizeLinear"] >= 2 * convs
    fp32 = export_onnx(lively_r18.model, lively_r18.config, tmp_path / "fp32.onnx")
    assert "QuantizeLinear" not in quantized_op_types(fp32)
    x = calibration_crops(lively_r18, people, count=12, seed=7)  # other draws than calibration
    a, q = (
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
        for p in (fp32, path)
    )
    scale = float(np.abs(a).max())
    assert scale > 0.1  # heatmaps of substance
    diff = np.abs(a - q)
    assert diff.max() > 1e-3 * scale  # quantized: not the fp32 computation (fp32 ORT: 1e-7)
    assert diff.max() <= 0.05 * scale and diff.mean() <= 0.01 * scale  # the stated tolerance
    assert np.corrcoef(a.ravel(), q.ravel())[0, 1] >= 0.99


def test_the_onnxruntime_backend_serves_a_given_file(
    lively_r18: ModelBundle, int8: tuple[Path, Path], tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("HEATPOSE_HOME", str(tmp_path))
    _, path = int8
    cpu = torch.device("cpu")
    backend = create("onnxruntime", lively_r18.model, lively_r18.config, device=cpu, onnx_path=path)
    x = torch.randn(3, 3, 96, 64)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = session.run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(backend(x).numpy(), want, atol=1e-6)
    assert not (tmp_path / "backends").exists()  # nothing exported
    with pytest.raises(BackendError, match=r"HEATPOSE_ONNX=.*onnxruntime only, not torch"):
        create("torch", lively_r18.model, lively_r18.config, device=cpu, onnx_path=path)
    other = ModelConfig(name="other", depth=18, codec_params=lively_r18.config.codec_params)
    with pytest.raises(BackendError, match=r"HEATPOSE_ONNX=.*stores the config of 'lively-r18'"):
        create("onnxruntime", lively_r18.model, other, device=cpu, onnx_path=path)
    changed = ModelBundle(Predictor(lively_r18, "cpu").model, lively_r18.config)
    import copy

    model = copy.deepcopy(changed.model)
    with torch.no_grad():
        model.final_layer.bias[0] += 1.0
    with pytest.raises(BackendError, match="other weights than HEATPOSE_CHECKPOINT"):
        create("onnxruntime", model, lively_r18.config, device=cpu, onnx_path=path)
    with pytest.raises(BackendError, match=r"HEATPOSE_ONNX=.*no such file"):
        create("onnxruntime", lively_r18.model, lively_r18.config, device=cpu, onnx_path="x.onnx")


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--format", "onnx", "--int8"], "--calibration-data"),
        (["--format", "onnx", "--int8", "--calibration-data", "MISSING"], "--calibration-data"),
        (["--format", "onnx", "--calibration-data", "PEOPLE"], "--calibration-data"),
        (["--format", "onnx", "--reduce-range"], "--reduce-range"),
        (["--int8", "--calibration-data", "PEOPLE"], "--format"),
        (["--format", "onnx", "--int8", "--calibration-data", "EMPTY"], "--calibration-data"),
        (
            ["--format", "onnx", "--int8", "--calibration-data", "PEOPLE", "--calibration", "0"],
            "--calibration",
        ),
    ],
)
def test_int8_cli_errors_are_one_line_naming_the_flag(
    int8: tuple[Path, Path], people: Path, tmp_path: Path, capsys, flags, named
) -> None:
    checkpoint, _ = int8
    (tmp_path / "empty").mkdir()
    where = {
        "MISSING": str(tmp_path / "nope"),
        "PEOPLE": str(people),
        "EMPTY": str(tmp_path / "empty"),
    }
    argv = ["export", str(checkpoint), "--out", str(tmp_path / "x.onnx")]
    assert heatpose_cli.main(argv + [where.get(f, f) for f in flags]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x.onnx").exists()
