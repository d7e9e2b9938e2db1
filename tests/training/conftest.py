"""Fixtures shared by the tests of `training/` (tests define their own where they are used once)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from heatpose_cli import synth as synthetic
from training.synthetic.synthetic_video import SyntheticVideo, make_video


@pytest.fixture(scope="session")
def make_synthetic(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    """``make_synthetic(name, "--train 3 --val 1 --seed 1 ...")`` writes a synthetic data set
    with those ``heatpose synth`` flags into a fresh temporary folder and returns its root."""

    def make(name: str, flags: str) -> Path:
        out = tmp_path_factory.mktemp(name) / "data"
        assert synthetic.main(["--out", str(out), *flags.split()]) == 0
        return out

    return make


@pytest.fixture(scope="session")
def synthetic_scene() -> Callable[[str], SyntheticVideo]:
    """``synthetic_scene(name)``: the synthetic video of one scene (320x240, 30 fps), made once."""
    cache: dict[str, SyntheticVideo] = {}

    def get(name: str) -> SyntheticVideo:
        if name not in cache:
            cache[name] = make_video(name)
        return cache[name]

    return get
