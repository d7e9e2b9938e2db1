"""Fixtures shared by the tests of `models/` (tests define their own where they are used once)."""

from collections.abc import Callable

import pytest

from training.synthetic_video import SyntheticVideo, make_video


@pytest.fixture(scope="session")
def synthetic_scene() -> Callable[[str], SyntheticVideo]:
    """``synthetic_scene(name)``: the synthetic video of one scene (320x240, 30 fps), made once."""
    cache: dict[str, SyntheticVideo] = {}

    def get(name: str) -> SyntheticVideo:
        if name not in cache:
            cache[name] = make_video(name)
        return cache[name]

    return get
