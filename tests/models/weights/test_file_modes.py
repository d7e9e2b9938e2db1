"""Files heatpose writes get the process umask's mode (0644 with the usual 022), not a
temporary file's 0600: a checkpoint or ONNX file copied into a read-only container mount must be
readable by the service's user (uid 10001 in the Dockerfile)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from models.pose.network import PoseResNet
from models.runtime.export import export_onnx
from models.weights.atomic_file import process_umask
from models.weights.checkpoint import save, save_state_dict
from models.weights.model_config import ModelConfig

CODEC = {"input_size": [32, 32], "heatmap_size": [8, 8], "sigma": 2.0, "blur_kernel": 11}


@pytest.fixture(params=[0o022, 0o027])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_process_umask_reads_the_umask(umask: int) -> None:
    assert process_umask() == umask


def test_checkpoints_and_onnx_files_get_the_umask_mode(umask: int, tmp_path: Path) -> None:
    expected = 0o666 & ~umask
    model, config = PoseResNet(18, 17), ModelConfig(depth=18, codec_params=CODEC)
    save(tmp_path / "best.safetensors", model, config)  # the trainer's best/last
    save_state_dict(tmp_path / "det.safetensors", {"w": torch.zeros(2)}, {"arch": "x"})
    export_onnx(model, config, tmp_path / "model.onnx")
    for name in ("best.safetensors", "det.safetensors", "model.onnx"):
        assert mode(tmp_path / name) == expected, (name, oct(mode(tmp_path / name)))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.safetensors",
        "det.safetensors",
        "model.onnx",
    ]  # no temporary file left


@pytest.mark.slow
@pytest.mark.parametrize("umask", [0o027], indirect=True)
def test_int8_onnx_gets_the_umask_mode(umask: int, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from models.inference.quantize import quantize_onnx

    model, config = PoseResNet(18, 17), ModelConfig(depth=18, codec_params=CODEC)
    fp32 = export_onnx(model, config, tmp_path / "model.onnx")
    crops = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    quantize_onnx(fp32, tmp_path / "int8.onnx", crops, batch=2)
    assert mode(tmp_path / "int8.onnx") == 0o666 & ~umask
