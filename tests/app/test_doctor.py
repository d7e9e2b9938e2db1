"""``heatpose doctor`` (heatpose_cli/doctor.py): the self-check printed, and its exit status;
and the exit status of ``heatpose serve`` when a named acceleration fails its self-check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import heatpose_cli
from tests.app.engine.test_selfcheck import auto_accelerates, break_cropper  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(monkeypatch) -> None:
    """No HEATPOSE_* from the caller's environment; a one-crop warm-up (faster)."""
    for name in [k for k in os.environ if k.startswith("HEATPOSE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HEATPOSE_WARMUP", "false")
    monkeypatch.chdir(ROOT / "tests")  # no .env file is read


def doctor(app_checkpoint: Path, *flags: str) -> int:
    return heatpose_cli.main(["doctor", str(app_checkpoint), "--detector", "none", *flags])


def test_help_is_fast_and_imports_no_torch() -> None:
    code = (
        "import sys, heatpose_cli\n"
        "try:\n    heatpose_cli.main(['doctor', '--help'])\n"
        "except SystemExit as e:\n    print('EXIT', e.code)\n"
        "print([m for m in ('torch', 'torchvision', 'cv2') if m in sys.modules])\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert r.stdout.startswith("usage: heatpose doctor "), r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-2:] == ["EXIT 0", "[]"], r.stdout[-500:]


def test_plain_cpu_serves_as_configured(env, app_checkpoint, capsys) -> None:
    assert doctor(app_checkpoint) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"heatpose doctor: {app_checkpoint} on cpu"
    rows = {ln.split()[0]: ln.split()[1] for ln in out[1:] if ln and not ln.startswith(" ")}
    assert rows["plain"] == "on" and rows["crop"] == "unused" and rows["amp"] == "unused"
    assert "         answered:   2 images, 2 persons" in out
    assert out[-1] == "heatpose doctor: the configured path serves"


@pytest.mark.usefixtures("auto_accelerates")
def test_a_failing_auto_acceleration_is_exit_1(env, app_checkpoint, capsys, monkeypatch) -> None:
    break_cropper(monkeypatch, "shift")
    assert doctor(app_checkpoint) == 1
    out = capsys.readouterr().out
    crop = out.split("\ncrop ")[1].split("\nbackend ")[0]  # its block
    assert crop.lstrip().startswith("off ") and "\ndecode   on " in out
    assert "answered:   disagrees" in crop and "difference: keypoints" in crop
    assert out.rstrip().endswith("turned off, serving on the plain path: crop")


def test_a_failing_named_acceleration_is_exit_2_in_one_line(
    env, app_checkpoint, capsys, monkeypatch
) -> None:
    break_cropper(monkeypatch, "raise")
    assert doctor(app_checkpoint, "--crop", "device") == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("heatpose doctor: cannot start: HEATPOSE_CROP=device: the start-up")
    assert "raised Raising: cropper stand-in" in line and "HEATPOSE_CROP=cv2" in line
    assert "\ncrop     failed " in captured.out


def test_a_missing_checkpoint_is_exit_2(env, tmp_path, capsys) -> None:
    assert heatpose_cli.main(["doctor", str(tmp_path / "nope.safetensors")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("heatpose doctor: cannot start: HEATPOSE_CHECKPOINT=")


@pytest.mark.slow
def test_serve_exits_2_when_a_named_acceleration_fails(app_checkpoint) -> None:
    """A real ``heatpose serve`` with HEATPOSE_CROP=device and a cropper that raises."""
    code = (
        "import sys\n"
        "from models.pose import geometry\n"
        "def broken(*a, **k):\n    raise RuntimeError('cropper stand-in')\n"
        "geometry.crop_persons_batched = broken\n"
        "from heatpose_cli.serve import main\n"
        "sys.exit(main(['--port', '0']))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEATPOSE_")}
    env |= {"HEATPOSE_CHECKPOINT": str(app_checkpoint), "HEATPOSE_DETECTOR": "none"}
    env |= {"HEATPOSE_CROP": "device", "HEATPOSE_WARMUP": "false", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env
    )
    assert r.returncode == 2, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.splitlines() if "cannot start" in ln]
    assert len(lines) == 1 and "HEATPOSE_CROP=device: the start-up self-check failed" in lines[0]
    errors = [ln for ln in r.stderr.splitlines() if " ERROR " in ln]
    assert "Traceback" not in r.stderr and len(errors) == 2, r.stderr  # + uvicorn's "Exiting."


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_doctor_on_cuda_serves_as_configured(env, app_checkpoint, capsys) -> None:
    """The real check of the CUDA defaults (nvJPEG, device crops, buckets, AMP) on this GPU."""
    code = doctor(app_checkpoint, "--device", "cuda")
    out = capsys.readouterr().out
    print(out)  # the rows, for the GPU session's log
    assert code == 0, out
    rows = {ln.split()[0]: ln.split()[1] for ln in out.splitlines()[1:] if ln[:1].isalpha()}
    assert [rows[f] for f in ("decode", "crop", "backend", "amp", "path")] == ["on"] * 5, out
