"""Resuming: a refused ``--resume`` file is one line in our words naming the flag and the file
(exit 2), and ``--trace-steps`` keeps the stopped run's trace, marks where the resumed run
starts and appends its steps."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from heatpose_cli import train
from models.pose.network import PoseResNet
from models.weights.checkpoint import save
from models.weights.model_config import ModelConfig
from training.loop.resume import ResumeError, load_resume, restore_model


class Payload:
    """Not a type that ``torch.load(weights_only=True)`` accepts."""


def _argv(data: Path, out: Path, *extra: str) -> list[str]:
    flags = (
        "--train-split train --val-split val --depth 18 --input-size 64x64 -b 2 -j 0"
        " --epochs 2 --eval-every 0 --print-freq 1 --pretrained-backbone none --no-progress"
        " --device cpu --seed 4 --lr 1e-3 --warmup-iters 2"
    )
    return ["--data-path", str(data), *flags.split(), "--output-dir", str(out), *extra]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(make_synthetic, module_tmp: Callable[[str], Path]) -> dict[str, Path]:
    """Two epochs with a step trace and every epoch's resume file; the trace as it was then
    ("the run was stopped during epoch 2"); then epoch 2 again, resumed from the epoch-1 file
    into the same trace directory."""
    data = make_synthetic("resume-checks", "--train 4 --val 1 --seed 6 --width 96 --height 96")
    root = module_tmp("resume-checks")
    first, trace = root / "first", root / "trace"
    assert train.main(_argv(data, first, "--keep-resume", "--trace-steps", str(trace))) == 0
    before = root / "before.jsonl"
    before.write_bytes((trace / "rank0.jsonl").read_bytes())
    saved = first / "resume_epoch1.pt"
    argv = _argv(data, root / "second", "--resume", str(saved), "--trace-steps", str(trace))
    assert train.main(argv) == 0
    return {"data": data, "before": before, "trace": trace / "rank0.jsonl", "saved": saved}


def test_trace_keeps_the_stopped_run_and_appends_after_a_resume_record(
    runs: dict[str, Path],
) -> None:
    before = runs["before"].read_text()
    after = runs["trace"].read_text()
    assert after.startswith(before)  # the stopped run's lines, unchanged
    old, new = _lines(runs["before"]), _lines(runs["trace"])[len(before.splitlines()) :]
    done = int(load_resume(runs["saved"])["step"])  # steps in the epoch-1 file
    assert [r["step"] for r in old] == list(range(1, len(old) + 1)) and 0 < done < len(old)
    marker, redone = new[0], new[1:]
    assert marker == {"type": "resume", "from": str(runs["saved"]), "epoch": 2, "step": done}
    assert all(r["type"] == "train" for r in old + redone)
    # After the record: epoch 2 again, the same steps as before the stop, bit for bit (CPU).
    assert [r["step"] for r in redone] == [r["step"] for r in old[done:]]
    for a, b in zip(old[done:], redone, strict=True):
        assert (a["epoch"], a["lr"], a["loss"], a["digest"]) == (
            b["epoch"],
            b["lr"],
            b["loss"],
            b["digest"],
        ), a["step"]


def test_a_fresh_run_starts_the_trace_anew(runs: dict[str, Path], tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    trace.mkdir()
    (trace / "rank0.jsonl").write_text('{"type": "train", "step": 99}\n')
    argv = _argv(runs["data"], tmp_path / "o", "--epochs", "1", "--trace-steps", str(trace))
    assert train.main(argv) == 0
    steps = [r["step"] for r in _lines(trace / "rank0.jsonl")]
    assert steps == list(range(1, len(steps) + 1))


def _garbage(path: Path, saved: Path) -> None:
    path.write_bytes(b"this is not a checkpoint\n" * 20)


def _empty(path: Path, saved: Path) -> None:
    path.write_bytes(b"")


def _truncated(path: Path, saved: Path) -> None:
    path.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])


def _unsafe(path: Path, saved: Path) -> None:
    torch.save({"model": {}, "extra": Payload()}, path)


def _model_file(path: Path, saved: Path) -> None:
    save(path, PoseResNet(18, 17), ModelConfig(depth=18))


def _state_dict(path: Path, saved: Path) -> None:
    torch.save({"conv1.weight": torch.zeros(2, 3)}, path)


def _tensor(path: Path, saved: Path) -> None:
    torch.save(torch.zeros(3), path)


@pytest.mark.parametrize(
    ("write", "why"),
    [
        (_garbage, "is not a resume file (not a file that torch.save wrote"),
        (_empty, "is empty"),
        (_truncated, "is damaged (truncated or changed after it was written)"),
        (_unsafe, f"holds Python objects such as {__name__}.Payload that a safe load"),
        (_model_file, "is a model file (safetensors), not a resume file: --weights"),
        (_state_dict, "is not a heatpose resume file: it lacks model, optimizer, lr_scheduler"),
        (_tensor, "holds a Tensor, not a heatpose resume file"),
    ],
)
def test_a_refused_resume_file_says_why_in_one_line(
    write, why: str, runs: dict[str, Path], tmp_path: Path
) -> None:
    path = tmp_path / "resume.pt"
    write(path, runs["saved"])
    with pytest.raises(ResumeError) as e:
        load_resume(path)
    message = str(e.value)
    assert message.startswith(f"--resume file {path} {why}"), message
    assert "\n" not in message and "weights_only` argument" not in message


def test_a_resume_file_of_another_model_names_the_first_misfit(runs: dict[str, Path]) -> None:
    state = load_resume(runs["saved"])
    model = PoseResNet(18, 5)  # five keypoints: the head differs
    own = model.state_dict()
    first = next(k for k in own if own[k].shape != state["model"][k].shape)
    with pytest.raises(ResumeError) as e:
        restore_model(model, state, runs["saved"])
    assert str(e.value) == (
        f"--resume file {runs['saved']} is of another model (written by a --depth 18 run): "
        f"{first} is {tuple(state['model'][first].shape)} there, {tuple(own[first].shape)} here"
    )
    with pytest.raises(ResumeError, match="has no model state dict under 'model'"):
        restore_model(model, {**state, "model": torch.zeros(3)}, runs["saved"])


def test_train_with_a_garbage_resume_file_exits_2_with_one_line(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "resume.pt"
    _garbage(path, runs["saved"])
    capsys.readouterr()
    assert train.main(_argv(runs["data"], tmp_path / "o", "--resume", str(path))) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"heatpose train: error: --resume file {path} is not a resume file " + (
        "(not a file that torch.save wrote, as heatpose train does)"
    ), err
    assert not (tmp_path / "o" / "metrics.jsonl").exists()
