"""Warm-up (models/inference/warmup.py): every forward batch size a server meets runs before
serving."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from models.inference.predictor import Predictor
from models.inference.warmup import warm_up, warmup_sizes
from models.runtime.backends import Bucketed
from models.weights.checkpoint import ModelBundle


class Recorder:
    """Stands in for a backend: records each call's input shape, then runs ``inner``."""

    def __init__(self, inner, name: str = "torch") -> None:
        self.inner, self.name, self.shapes = inner, name, []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return self.inner(x)


def reachable(forward: Bucketed, max_forward: int) -> set[int]:
    """Every forward batch size a server can run: its batches of 1 .. max_forward, padded."""
    return {
        forward.size_for(n) if isinstance(forward, Bucketed) else n
        for n in range(1, 65)[:max_forward]
    }


@pytest.mark.parametrize(
    ("buckets", "max_forward"), [((2, 4, 8), 8), ((8, 16, 32, 64), 64), ((8, 16, 32), 20)]
)
@pytest.mark.parametrize("backend", ["torch", "compile"])
def test_bucketed_warm_up_runs_every_reachable_bucket(buckets, max_forward, backend) -> None:
    forward = Bucketed(Recorder(None, backend), buckets)
    assert set(warmup_sizes(forward, max_forward)) == reachable(forward, max_forward)


def test_unbucketed_sizes_per_backend() -> None:
    assert warmup_sizes(Recorder(None, "torch"), 64) == (1, 2)
    assert warmup_sizes(Recorder(None, "onnxruntime"), 64) == (1, 2)
    assert warmup_sizes(Recorder(None, "compile"), 64) == (1, 2, 4, 8, 16, 32, 64)
    assert warmup_sizes(Recorder(None, "compile"), 20) == (1, 2, 4, 8, 16, 20)
    # above every bucket sizes run as they are: compile warms the ladder there too
    assert warmup_sizes(Bucketed(Recorder(None, "compile"), (2, 4)), 20) == (2, 4, 8, 16, 20)
    assert warmup_sizes(Bucketed(Recorder(None, "torch"), (2, 4)), 20) == (2, 4)


def test_each_bucket_is_forwarded_once_at_its_shape(lively_r18: ModelBundle) -> None:
    predictor = Predictor(lively_r18, "cpu", batch_buckets=(2, 4, 8))
    assert isinstance(predictor.forward, Bucketed)
    recorder = Recorder(predictor.forward.inner)
    predictor.forward.inner = recorder
    ticks = iter(range(100))
    times = warm_up(predictor, max_forward=8, clock=lambda: float(next(ticks)))
    assert recorder.shapes == [(2, 3, 96, 64), (4, 3, 96, 64), (8, 3, 96, 64)]
    assert times == [(2, 1.0), (4, 1.0), (8, 1.0)]  # one clock reading before and after each


class OneByOne(nn.Module):
    """96x64 crops -> 17 maps of 24x16 with a 1x1 convolution: on the CPU torch runs it with
    oneDNN from batch 16 on only, so a compiled graph for batches 2.. stops at 15."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 17, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def every_forward_size(predictor: Predictor, max_forward: int) -> None:
    """Every forward batch size 1 .. max_forward, each as the service may form it: crops
    without flip test (up to half the largest size), and half the crops flip-tested."""
    w, h = predictor.input_size
    rng = np.random.default_rng(0)
    for s in range(1, max_forward + 1):
        n = (s + 1) // 2
        crops = rng.integers(0, 256, (s, h, w, 3), dtype=np.uint8)
        predictor.heatmaps(crops[:n], np.arange(n) < s - n)
        if s <= max_forward // 2:
            predictor.heatmaps(crops, False)


@pytest.mark.slow
def test_after_compile_warm_up_no_batch_size_compiles(lively_r18: ModelBundle) -> None:
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    tiny = ModelBundle(OneByOne().eval(), lively_r18.config)
    compiled = Predictor(tiny, "cpu", backend="compile")
    counters.clear()
    warm_up(compiled, max_forward=16)
    graphs = counters["stats"]["unique_graphs"]
    # batch 1, 2..15 and 16..: a warm-up of batches 1 and 2 only would leave one to compile
    assert graphs == 3
    every_forward_size(compiled, 16)
    assert counters["stats"]["unique_graphs"] == graphs


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", ["torch", "compile"])
def test_cuda_bucketed_warm_up(lively_r18: ModelBundle, backend: str) -> None:
    import copy

    from torch._dynamo.utils import counters

    bundle = ModelBundle(copy.deepcopy(lively_r18.model), lively_r18.config)
    predictor = Predictor(bundle, "cuda", backend=backend, batch_buckets=(8, 16, 32))
    assert isinstance(predictor.forward, Bucketed)
    recorder = Recorder(predictor.forward.inner, backend)
    predictor.forward.inner = recorder
    counters.clear()
    times = warm_up(predictor, max_forward=32)
    assert [s for s, _ in times] == [8, 16, 32]
    assert [shape[0] for shape in recorder.shapes] == [8, 16, 32]
    graphs = counters["stats"]["unique_graphs"]
    every_forward_size(predictor, 32)
    assert counters["stats"]["unique_graphs"] == graphs
    assert {shape[0] for shape in recorder.shapes} == {8, 16, 32}
