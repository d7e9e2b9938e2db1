"""Backends: every forward runner gives the torch model's heatmaps, through the real Predictor."""

from __future__ import annotations

import copy
import os
import sys

import numpy as np
import pytest
import torch
from torch import nn

from models.inference.predictor import Predictor
from models.runtime.backends import BACKENDS, BackendError, create
from models.runtime.export import read_onnx_config
from models.weights.checkpoint import ModelBundle, load, save
from models.weights.weights_digest import weights_sha256


def _crops(batch: int, seed: int) -> np.ndarray:
    """``(B, 96, 64, 3)`` uint8 random crops (input px)."""
    return np.random.default_rng(seed).integers(0, 256, (batch, 96, 64, 3), dtype=np.uint8)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HEATPOSE_HOME", str(tmp_path))
    return tmp_path


@pytest.mark.slow
def test_onnxruntime_heatmaps_equal_torchs(lively_r18: ModelBundle, home) -> None:
    ref = Predictor(lively_r18, "cpu", flip_test=False)
    ort = Predictor(lively_r18, "cpu", flip_test=False, backend="onnxruntime")
    assert ort.forward.name == "onnxruntime"
    for batch, flip in [(1, False), (4, True), (9, np.arange(9) % 2 == 0)]:
        crops = _crops(batch, seed=batch)
        want = ref.heatmaps(crops, flip)
        got = ort.heatmaps(crops, flip)
        assert got.shape == want.shape == (batch, 17, 24, 16)
        assert (got - want).abs().max().item() <= 1e-4, batch
        assert want.std().item() > 0.1  # heatmaps of substance, not two zero maps
    # Built on first start and cached under HEATPOSE_HOME, keyed by the weights' sha256.
    (cached,) = (home / "backends").glob("*.onnx")
    assert cached.stem == weights_sha256(lively_r18.model, lively_r18.config)
    assert read_onnx_config(cached) == lively_r18.config


@pytest.mark.slow
def test_cache_is_reused_and_keyed_by_the_weights(lively_r18: ModelBundle, home, tmp_path) -> None:
    first = create("onnxruntime", lively_r18.model, lively_r18.config, device=torch.device("cpu"))
    (path,) = (home / "backends").glob("*.onnx")
    stamp = path.stat().st_mtime_ns
    os.utime(path, ns=(stamp - 10**9, stamp - 10**9))  # a rewrite would move the stamp again
    again = create("onnxruntime", lively_r18.model, lively_r18.config, device=torch.device("cpu"))
    assert path.stat().st_mtime_ns == stamp - 10**9
    x = torch.randn(2, 3, 96, 64)
    torch.testing.assert_close(first(x), again(x))
    # The key follows the content: a saved and reloaded checkpoint keeps it, one weight changes it.
    save(tmp_path / "m.safetensors", lively_r18.model, lively_r18.config)
    reloaded = load(tmp_path / "m.safetensors")
    key = weights_sha256(lively_r18.model, lively_r18.config)
    assert weights_sha256(reloaded.model, reloaded.config) == key
    changed = copy.deepcopy(lively_r18.model)
    with torch.no_grad():
        changed.final_layer.bias[3] += 1e-3
    assert weights_sha256(changed, lively_r18.config) != key


class TinyNet(nn.Module):
    """Two strided convolutions: 96x64 crops -> 17 maps of 24x16, enough to exercise compile."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 17, 3, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.mark.slow
def test_compile_heatmaps_equal_eager_and_warm_up_covers_every_batch(
    lively_r18: ModelBundle,
) -> None:
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    tiny = ModelBundle(TinyNet().eval(), lively_r18.config)
    eager = Predictor(tiny, "cpu", flip_test=True)
    compiled = Predictor(tiny, "cpu", flip_test=True, backend="compile")
    assert compiled.forward.name == "compile"
    counters.clear()
    for flip in (False, True):  # the service's warm-up: forward batches 1 and 2
        compiled.heatmaps(_crops(1, seed=0), flip)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs == 2
    for batch in (1, 2, 5):  # forward batches 2, 4, 10: no new graph after the warm-up
        crops = _crops(batch, seed=10 + batch)
        torch.testing.assert_close(
            compiled.heatmaps(crops), eager.heatmaps(crops), atol=1e-4, rtol=1e-4
        )
    assert counters["stats"]["unique_graphs"] == graphs


def test_unknown_backend_names_the_setting_and_the_choices(lively_r18: ModelBundle) -> None:
    with pytest.raises(BackendError, match="HEATPOSE_BACKEND") as e:
        Predictor(lively_r18, "cpu", backend="openvino")
    assert all(name in str(e.value) for name in BACKENDS)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the guard of a host without CUDA")
def test_tensorrt_without_cuda_is_a_clear_error(lively_r18: ModelBundle, home) -> None:
    with pytest.raises(BackendError, match=r"HEATPOSE_BACKEND=tensorrt\) needs a CUDA device"):
        Predictor(lively_r18, "cpu", backend="tensorrt")


@pytest.mark.parametrize("package", ["onnx", "onnxruntime"])
def test_missing_package_says_how_to_install_it(
    lively_r18: ModelBundle, home, monkeypatch, package: str
) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # import fails as if not installed
    with pytest.raises(BackendError, match=rf"the {package} package is not installed: pip install"):
        create("onnxruntime", lively_r18.model, lively_r18.config, device=torch.device("cpu"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("backend", "atol"), [("onnxruntime", 1e-3), ("tensorrt", 5e-2)])
def test_cuda_backends_match_torch(
    lively_r18: ModelBundle, home, backend: str, atol: float
) -> None:
    bundle = ModelBundle(copy.deepcopy(lively_r18.model), lively_r18.config)
    ref = Predictor(bundle, "cuda", flip_test=True, amp=False)
    try:
        other = Predictor(bundle, "cuda", flip_test=True, amp=False, backend=backend)
    except BackendError as e:
        pytest.skip(f"this CUDA host lacks the {backend} runtime: {e}")
    for batch in (1, 8, 40):
        crops = _crops(batch, seed=batch)
        diff = (other.heatmaps(crops) - ref.heatmaps(crops)).abs().max().item()
        assert diff <= atol * max(1.0, ref.heatmaps(crops).abs().max().item()), (batch, diff)
