"""House rules as tests: ruff lint, ruff format and mypy over the code base, the layering, the
marker on every CUDA test."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_ruff_lint() -> None:
    r = _run("ruff", "check", ".")
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
def test_ruff_format() -> None:
    r = _run("ruff", "format", "--check", ".")
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_mypy_models_and_app() -> None:
    r = _run("mypy", "models", "app")
    assert r.returncode == 0, r.stdout + r.stderr


def test_layering_models_import_neither_app_nor_training() -> None:
    """House rule: models/ imports neither app nor training; app and training never meet."""
    offenders = []
    never = {"models": ("app", "training"), "app": ("training",), "training": ("app",)}
    for pkg, banned in never.items():
        for f in (ROOT / pkg).rglob("*.py"):
            for line in f.read_text().splitlines():
                s = line.strip()
                if any(s.startswith((f"import {b}", f"from {b}")) for b in banned):
                    offenders.append(f"{f.relative_to(ROOT)}: {s}")
    assert not offenders, offenders


def test_the_core_tests_do_not_import_training() -> None:
    """tests/models tests the core on its own: no ``training`` import (tests that need
    training's synthetic data live in tests/training). ``not_yet`` are the files that still do,
    until their tests move; no other file may start to."""
    not_yet = {"test_offline_messages.py", "test_quantize.py", "test_video_tracking.py"}
    offenders = []
    for f in sorted((ROOT / "tests" / "models").rglob("*.py")):
        for line in f.read_text().splitlines():
            s = line.strip()
            imports = s.startswith(("import training", "from training", "from tests.training"))
            if imports and f.name not in not_yet:
                offenders.append(f"{f.relative_to(ROOT)}: {s}")
    assert not offenders, offenders


def test_every_real_server_test_is_in_the_slow_tier() -> None:
    """A test that starts the service as a process (the ``server_process`` fixture or
    ``wait_ready``) is marked ``slow`` (or its module is): the default ``pytest`` run, the quick
    tier, never starts one."""
    import ast

    unmarked = []
    for f in sorted((ROOT / "tests").rglob("test_*.py")):
        text = f.read_text()
        slow_module = re.search(r"^pytestmark = .*pytest\.mark\.slow", text, flags=re.M)
        if slow_module or f == Path(__file__):
            continue
        for node in ast.parse(text).body:
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            source = ast.get_source_segment(text, node) or ""
            starts = "server_process" in source or "wait_ready(" in source
            marked = any("mark.slow" in ast.unparse(d) for d in node.decorator_list)
            if node.name.startswith("test_") and starts and not marked:
                unmarked.append(f"{f.relative_to(ROOT)}::{node.name}")
    assert not unmarked, unmarked


def test_every_cuda_test_is_marked_gpu() -> None:
    """A test that needs CUDA carries ``@pytest.mark.gpu``: ``pytest -m gpu`` (what
    benchmarks/gpu_session.sh runs on a lent GPU) then finds every one of them."""
    import ast

    unmarked = []
    for f in sorted((ROOT / "tests").rglob("test_*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            decorators = [ast.unparse(d) for d in node.decorator_list]
            if any("needs CUDA" in d for d in decorators) and "pytest.mark.gpu" not in decorators:
                unmarked.append(f"{f.relative_to(ROOT)}::{node.name}")
    assert not unmarked, unmarked
