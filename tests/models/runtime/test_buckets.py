"""Batch-size buckets (models.runtime.backends.Bucketed): fixed forward sizes, the same heatmaps."""

from __future__ import annotations

import copy

import numpy as np
import torch

from models.inference.predictor import Predictor
from models.runtime.backends import Bucketed
from models.weights.checkpoint import ModelBundle


class Recorder:
    """A backend that records its batch sizes and returns each row's mean, per row."""

    name = "recorder"

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.shape[0])
        return x.mean(dim=(1, 2, 3)).view(-1, 1, 1, 1)


def test_inputs_run_at_the_smallest_bucket_holding_them_and_the_padding_is_dropped() -> None:
    inner = Recorder()
    padded = Bucketed(inner, (16, 8))  # any order
    for n in (1, 8, 9, 16, 17):
        x = torch.rand(n, 3, 4, 4).contiguous(memory_format=torch.channels_last)
        out = padded(x)
        assert out.shape == (n, 1, 1, 1)
        torch.testing.assert_close(out.view(-1), x.mean(dim=(1, 2, 3)))
    assert inner.sizes == [8, 8, 16, 16, 17]  # above every bucket: as it is


def test_padded_forwards_give_the_heatmaps_of_unpadded_ones(lively_r18: ModelBundle) -> None:
    plain = Predictor(ModelBundle(copy.deepcopy(lively_r18.model), lively_r18.config), "cpu")
    bucketed = Predictor(
        ModelBundle(copy.deepcopy(lively_r18.model), lively_r18.config),
        "cpu",
        batch_buckets=(8, 16),
    )
    assert isinstance(bucketed.forward, Bucketed) and bucketed.forward.name == "torch"
    w, h = plain.input_size
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (5, h, w, 3), dtype=np.uint8)
    flip = np.array([True, False, True, False, False])  # 5 + 2 flipped rows -> one bucket of 8
    want = plain.heatmaps(crops, flip)
    got = bucketed.heatmaps(crops, flip)
    assert got.shape == want.shape == (5, 17, 24, 16)
    assert float(want.abs().max()) > 1e-3  # the heatmaps are not all zero
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # each row alone: the padding (and the other rows) never changed a row
    for i in range(5):
        one = plain.heatmaps(crops[i : i + 1], flip[i : i + 1])
        torch.testing.assert_close(got[i : i + 1], one, atol=1e-5, rtol=1e-5)
