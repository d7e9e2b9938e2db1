"""The service's warm-up (app/engine/warmup.py): one forward per batch bucket before /ready."""

from __future__ import annotations

import pytest
import torch

from models.runtime import backends
from tests.helpers.images import encode, noise

pytestmark = pytest.mark.anyio


class Counting:
    """Stands in for the backend: records each forward call's input shape, then runs it."""

    def __init__(self, inner: backends.Backend) -> None:
        self.inner, self.name, self.shapes = inner, inner.name, []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return self.inner(x)


@pytest.fixture
def counted(monkeypatch) -> list[Counting]:
    """Every backend the service creates, behind a :class:`Counting` (in creation order)."""
    made: list[Counting] = []
    create = backends.create

    def counting_create(*args, **kwargs) -> Counting:
        made.append(Counting(create(*args, **kwargs)))
        return made[-1]

    monkeypatch.setattr(backends, "create", counting_create)
    return made


def png(seed: int) -> bytes:
    return encode(noise(140, 110, seed))


async def test_start_up_forwards_once_per_bucket_and_exposes_the_times(serve_app, counted) -> None:
    async with serve_app(batch_buckets="2,4,8", max_batch_size=4, warmup=True) as (client, _):
        (forward,) = counted
        # 128x96 (h x w) input: each bucket once at its shape, then the self-check's request
        # (app/engine/selfcheck.py: two persons, flip-tested, each at the smallest bucket, for the
        # backend check and the configured path), nothing else before /ready
        assert forward.shapes[:3] == [(2, 3, 128, 96), (4, 3, 128, 96), (8, 3, 128, 96)]
        assert forward.shapes[3:] == [(2, 3, 128, 96)] * 4
        assert (await client.get("/ready")).status_code == 200
        metrics = (await client.get("/metrics")).text
        lines = [ln for ln in metrics.splitlines() if ln.startswith("heatpose_warmup_seconds{")]
        assert sorted(ln.split('batch="')[1].split('"')[0] for ln in lines) == ["2", "4", "8"]
        assert all('device="cpu"' in ln and float(ln.split()[-1]) > 0 for ln in lines)
        r = await client.post("/predict", files=[("files", ("a.png", png(1), "image/png"))])
        assert r.status_code == 200, r.text
        assert forward.shapes[7:] == [(2, 3, 128, 96)]  # one crop + its flip: bucket 2


async def test_warmup_false_runs_one_crop_only(serve_app, counted) -> None:
    async with serve_app(batch_buckets="2,4,8", max_batch_size=4, warmup=False) as (client, _):
        (forward,) = counted
        # the NaN check (one crop, padded to 2), then the self-check's four calls
        assert forward.shapes == [(2, 3, 128, 96)] * 5
        assert "heatpose_warmup_seconds{" not in (await client.get("/metrics")).text


@pytest.mark.slow
async def test_compile_service_compiles_nothing_for_its_first_requests(serve_app) -> None:
    from torch._dynamo.utils import counters

    counters.clear()
    # forward batches up to 4: the ladder 1, 2, 4 compiles batch 1 and the 2..15 graph
    async with serve_app(backend="compile", max_batch_size=2, warmup=True) as (client, _):
        graphs = counters["stats"]["unique_graphs"]
        assert graphs == 2
        for n, flip in [(1, "true"), (1, "false"), (2, "true"), (2, "false")]:
            files = [("files", (f"{i}.png", png(i), "image/png")) for i in range(n)]
            r = await client.post("/predict", files=files, params={"flip_test": flip})
            assert r.status_code == 200, r.text
        assert counters["stats"]["unique_graphs"] == graphs
