"""`training/__init__.py` states the public API; importing the package stays torch-free."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import training


def test_every_public_name_resolves_to_its_owners_object() -> None:
    assert len(training.__all__) == len(set(training.__all__)) >= 10
    for name in training.__all__:
        owner = importlib.import_module(training._OWNERS[name])
        assert getattr(training, name) is getattr(owner, name), name
    assert set(training.__all__) <= set(dir(training))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        training.no_such_name  # noqa: B018


def test_importing_the_package_imports_no_torch() -> None:
    code = "import sys, training; print(sorted(m for m in ('torch', 'cv2') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr
