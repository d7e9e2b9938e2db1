"""Entry points: --help works; bad flags and paths are one line naming the flag or file, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from models.checkpoint import save
from models.model_config import ModelConfig
from models.network import PoseResNet
from training import evaluate, learning_curve, synthetic, train

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("main", [train.main, evaluate.main, synthetic.main, learning_curve.main])
def test_help(main, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "usage: python -m training." in out and "--" in out


def test_help_as_module() -> None:
    r = subprocess.run([sys.executable, "-m", "training.synthetic", "--help"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)  # fmt: skip
    assert r.returncode == 0 and "--out" in r.stdout


def _one_line_error(capsys: pytest.CaptureFixture[str], needle: str) -> None:
    err = capsys.readouterr().err.strip()
    assert needle in err, err
    assert "\n" not in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--data-path", "/no/such/dir"], "--data-path"),
        (["--data-path", ".", "--input-size", "100x7"], "--input-size"),
        (["--data-path", ".", "--batch-size", "many"], "--batch-size"),
        (["--data-path", ".", "--resume", "/no/such/resume.pt"], "/no/such/resume.pt"),
        (["--data-path", ".", "--test-only"], "--test-only"),
        (["--data-path", ".", "--depth", "19"], "--depth"),
    ],
)
def test_train_bad_flags(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        train.main(argv)
    assert e.value.code == 2
    _one_line_error(capsys, needle)


def test_train_missing_annotations_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--data-path", str(tmp_path), "--pretrained-backbone", "none", "--depth", "18",
            "--output-dir", str(tmp_path / "out"), "--device", "cpu"]  # fmt: skip
    assert train.main(argv) == 2
    _one_line_error(capsys, "person_keypoints_train2017.json")


def test_evaluate_bad_checkpoint_and_missing_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--checkpoint", str(tmp_path / "x.safetensors"), "--data-path", "."])
    assert e.value.code == 2
    _one_line_error(capsys, "x.safetensors")
    # A real model on a set whose image is gone: the error names the image file.
    data = tmp_path / "data"
    assert synthetic.main(["--out", str(data), "--train", "0", "--val", "1", "--width", "128",
                           "--height", "96"]) == 0  # fmt: skip
    capsys.readouterr()
    (data / "val" / "000000000001.jpg").unlink()
    ckpt = tmp_path / "m.safetensors"
    save(ckpt, PoseResNet(18, 17), ModelConfig(depth=18))
    argv = ["--checkpoint", str(ckpt), "--data-path", str(data), "--split", "val", "-j", "0",
            "--device", "cpu"]  # fmt: skip
    assert evaluate.main(argv) == 2
    _one_line_error(capsys, "000000000001.jpg")


def test_learning_curve_png(tmp_path: Path) -> None:
    lines = [
        {"type": "start", "step": 0},
        {"type": "train", "epoch": 0, "step": 5, "loss": 0.02, "lr": 1e-3},
        {"type": "epoch", "epoch": 1, "step": 10, "train_loss": 0.015, "lr": 1e-3},
        {"type": "eval", "epoch": 1, "step": 10, "AP": 0.2, "AP50": 0.5, "AP75": 0.1},
    ]
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    out = tmp_path / "curve.png"
    assert learning_curve.main([str(metrics), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(240)
def test_loader_workers_survive_evaluation_between_epochs(tmp_path: Path) -> None:
    """Regression: a worker forked after the evaluation ran OpenCV in the trainer process
    used to deadlock on OpenCV's thread-pool lock (the trainer now keeps OpenCV single-threaded).
    """
    data = tmp_path / "data"
    assert synthetic.main(["--out", str(data), "--train", "4", "--val", "2", "--seed", "1",
                           "--width", "256", "--height", "192"]) == 0  # fmt: skip
    argv = ["--data-path", str(data), "--train-split", "train", "--val-split", "val",
            "--depth", "18", "--input-size", "96x64", "-b", "4", "-j", "1", "--epochs", "2",
            "--eval-every", "1", "--pretrained-backbone", "none", "--no-progress",
            "--device", "cpu", "--output-dir", str(tmp_path / "out")]  # fmt: skip
    r = subprocess.run([sys.executable, "-m", "training.train", *argv], capture_output=True,
                       text=True, cwd=ROOT, timeout=200)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    evals = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().split("\n")
             if '"eval"' in x]  # fmt: skip
    assert [e["epoch"] for e in evals] == [1, 2]
