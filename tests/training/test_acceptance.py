"""Issue 3 acceptance: a small run learns (loss falls, AP beats the untrained model) and a
resumed run continues exactly where it stopped (same step, same LR, same losses and weights).

ResNet-18 at 96x64 on 8 synthetic images (16 persons) gone over 10 times an epoch, batch 16,
6 epochs = 60 steps; then epoch 6 again, resumed from the epoch-5 file. About 20 s on two idle
cores. A few dozen steps from scratch cannot generalise yet, so the AP compared is measured on
the training images themselves (the model starts to fit them); held-out AP needs the longer
run of docs/training.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from heatpose_cli import train as train_cli
from heatpose_cli.train import parse_args
from models.pose.network import PoseResNet
from models.weights.checkpoint import load, read_config
from training import train
from training.loop.engine import evaluate_model
from training.loop.resume import load_resume

# a training run; the timeout is generous: the CPUs are shared with other jobs
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
EPOCHS = 6


def _argv(data: Path, out: Path) -> list[str]:
    flags = (
        "--train-split train --val-split train --depth 18 --input-size 96x64 -b 16 -j 0"
        f" --epochs {EPOCHS} --repeat-dataset 10 --lr 1e-3 --lr-steps 5 --lr-gamma 0.3"
        f" --warmup-iters 3 --pretrained-backbone none --eval-every {EPOCHS} --print-freq 1"
        " --no-progress --seed 5 --rotate-factor 0 --scale-range 1 1 --shift-factor 0"
        " --half-body-prob 0 --flip-prob 0"
    )
    return ["--data-path", str(data), *flags.split(), "--output-dir", str(out)]


def _records(out: Path, kind: str) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


@pytest.fixture(scope="module")
def runs(module_tmp: Callable[[str], Path], make_synthetic) -> dict[str, Path]:
    root = module_tmp("accept")
    data = make_synthetic("accept-data", "--train 8 --val 0 --seed 11 --width 256 --height 192")
    full, resumed = root / "full", root / "resumed"
    assert train_cli.main([*_argv(data, full), "--keep-resume"]) == 0
    saved = full / f"resume_epoch{EPOCHS - 1}.pt"
    assert train_cli.main([*_argv(data, resumed), "--resume", str(saved)]) == 0
    return {"data": data, "full": full, "resumed": resumed, "saved": saved}


def test_loss_falls(runs: dict[str, Path]) -> None:
    steps = _records(runs["full"], "train")
    assert len(steps) == 60
    first = sum(r["loss"] for r in steps[:5]) / 5
    last = sum(r["loss"] for r in steps[-5:]) / 5
    assert last < 0.6 * first, (first, last)


def test_ap_beats_the_untrained_model(runs: dict[str, Path]) -> None:
    args = parse_args(_argv(runs["data"], runs["full"]))
    torch.manual_seed(args.seed)  # the trainer's own initial weights
    untrained = PoseResNet(18, 17)
    before = evaluate_model(
        untrained,
        train.build_config(args),
        data_path=runs["data"],
        split="train",
        device=torch.device("cpu"),
        batch_size=32,
    )
    (after,) = _records(runs["full"], "eval")
    assert after["AP"] > before["AP"] + 0.005, (before, after)
    assert after["AP50"] > before["AP50"] + 0.02, (before, after)


def test_resume_continues_at_the_same_step_and_lr(runs: dict[str, Path]) -> None:
    saved = load_resume(runs["saved"])
    assert saved["epoch"] == EPOCHS - 1 and saved["step"] == 50
    (start,) = _records(runs["resumed"], "start")
    full = _records(runs["full"], "train")
    assert start["step"] == 50
    assert start["lr"] == pytest.approx(full[49]["lr"] * 0.3)  # the milestone after epoch 5
    assert start["lr"] == pytest.approx(saved["optimizer"]["param_groups"][0]["lr"])
    resumed = _records(runs["resumed"], "train")
    assert [r["step"] for r in resumed] == list(range(51, 61))
    for a, b in zip(full[50:], resumed, strict=True):
        assert a["lr"] == b["lr"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    wa = load_file(runs["full"] / "last.safetensors")
    wb = load_file(runs["resumed"] / "last.safetensors")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-7)
    (ea,) = _records(runs["full"], "eval")
    (eb,) = _records(runs["resumed"], "eval")
    assert ea["AP"] == pytest.approx(eb["AP"], abs=1e-3)


def test_exports_are_service_ready_with_metrics(runs: dict[str, Path]) -> None:
    for name in ("last", "best"):
        config = read_config(runs["full"] / f"{name}.safetensors")
        assert config.depth == 18 and config.input_size == (64, 96)
        assert config.metrics["epoch"] == EPOCHS and "val_AP" in config.metrics
        assert config.metrics["train_loss"] > 0
    bundle = load(runs["full"] / "last.safetensors")
    assert not bundle.model.training
    assert (runs["full"] / "tb").is_dir()
