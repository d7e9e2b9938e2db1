"""Fixtures shared by every test package."""

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Path]]:
    """``module_tmp(name)``: a new directory for a module-scoped fixture, removed when the module
    ends (checkpoints and resume files of one module run to hundreds of MB; kept until the session
    ends they filled CI's disk). Function-scoped ``tmp_path`` directories are removed after each
    passing test by ``tmp_path_retention_policy = "failed"`` in pyproject.toml."""
    made: list[Path] = []

    def mktemp(name: str) -> Path:
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield mktemp
    for path in made:
        shutil.rmtree(path, ignore_errors=True)
