"""Entry points: --help works; bad flags and paths are one line naming the flag or file, exit 2."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from heatpose_cli import eval as evaluate
from heatpose_cli import eval as evaluate_args
from heatpose_cli import learning_curve, train
from heatpose_cli import synth as synthetic
from heatpose_cli import synth as synthetic_args
from heatpose_cli import train as train_args
from models.pose.network import PoseResNet
from models.weights.checkpoint import read_config, save
from models.weights.model_config import ModelConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("main", "prog"),
    [
        (train.main, "heatpose train"),
        (evaluate.main, "heatpose eval"),
        (synthetic.main, "heatpose synth"),
        (learning_curve.main, "python -m training.loop.learning_curve"),
    ],
)
def test_help(main, prog: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and out.startswith(f"usage: {prog} ") and "--" in out


def test_help_as_module() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "training.synthetic", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode == 0 and "--out" in r.stdout


def _help_entries(text: str) -> dict[str, str]:
    """Each option string of an argparse help text -> its whole entry, whitespace collapsed."""
    entries: dict[str, str] = {}
    flags: list[str] = []
    lines: list[str] = []
    for line in [*text.split("options:", 1)[1].splitlines(), "  -end"]:
        if not line.startswith("  -"):
            lines.append(line)
            continue
        entries.update(dict.fromkeys(flags, " ".join(" ".join(lines).split())))
        invocation = line.strip().split("  ")[0]  # "-b BATCH_SIZE, --batch-size BATCH_SIZE"
        flags = [part.split()[0] for part in invocation.split(", ")]
        lines = [line]
    return entries


def _shown(value: object) -> str:
    """How a default reads on the command line."""
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return "none" if value is None else str(value)


@pytest.mark.parametrize(
    "build_parser",
    [train_args.build_parser, evaluate_args.build_parser, synthetic_args.build_parser],
)
def test_help_shows_every_default_and_no_markup(build_parser) -> None:
    parser = build_parser()
    text = parser.format_help()
    assert not re.search(r"``|:(class|mod|func|meth|data|attr):`", text), text
    entries = _help_entries(text)
    checked = 0
    for action in parser._actions:
        if not action.option_strings or action.required or action.nargs == 0:
            continue  # positionals, required flags and on/off switches have no default to show
        entry = entries[action.option_strings[-1]]
        assert "(default: " in entry, entry
        if "default" not in (action.help or ""):  # not explained in words: the value itself
            assert f"(default: {_shown(action.default)})" in entry, entry
            checked += 1
    assert checked >= 3  # the loop saw flags with their values shown


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
    flags = "--pretrained-backbone none --depth 18 --device cpu"
    argv = ["--data-path", str(tmp_path), *flags.split(), "--output-dir", str(tmp_path / "out")]
    assert train.main(argv) == 2
    _one_line_error(capsys, "person_keypoints_train2017.json")


@pytest.fixture(scope="module")
def data(make_synthetic) -> Path:
    """Synthetic splits ``train`` (3 images) and ``val`` (1 image), 160x128."""
    return make_synthetic("cli", "--train 3 --val 1 --seed 1 --width 160 --height 128")


@pytest.fixture(scope="module")
def checkpoint(module_tmp: Callable[[str], Path]) -> Path:
    path = module_tmp("ckpt") / "m.safetensors"
    save(path, PoseResNet(18, 17), ModelConfig(depth=18))
    return path


def test_train_unknown_split_names_the_splits_there(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = "--pretrained-backbone none --depth 18 --device cpu"  # --train-split train2017
    argv = ["--data-path", str(data), *flags.split(), "--output-dir", str(tmp_path / "out")]
    capsys.readouterr()
    assert train.main(argv) == 2
    _one_line_error(capsys, "person_keypoints_train2017.json (splits there: train, val;")


def test_evaluate_bad_checkpoint_and_missing_images(
    data: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--checkpoint", str(tmp_path / "x.safetensors"), "--data-path", "."])
    assert e.value.code == 2
    _one_line_error(capsys, "x.safetensors")
    # A real model on a set whose image is gone: the error names the image file.
    gone = tmp_path / "data"
    shutil.copytree(data, gone)
    (gone / "val" / "000000000001.jpg").unlink()
    flags = "--split val -j 0 --device cpu"
    argv = ["--checkpoint", str(checkpoint), "--data-path", str(gone), *flags.split()]
    assert evaluate.main(argv) == 2
    _one_line_error(capsys, "000000000001.jpg")


def test_evaluate_takes_the_only_split(
    data: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = tmp_path / "one"
    shutil.copytree(data, one)
    (one / "annotations" / "person_keypoints_train.json").unlink()
    output = tmp_path / "results.json"
    argv = ["--checkpoint", str(checkpoint), "--data-path", str(one), "-j", "0", "--device", "cpu"]
    assert evaluate.main([*argv, "--output", str(output)]) == 0
    assert "split: val" in capsys.readouterr().out.splitlines()
    ids = {r["image_id"] for r in json.loads(output.read_text())}
    assert ids == {1}  # the one val image (the train split has images 1-3: it was not used)


@pytest.mark.parametrize(
    ("split", "needle"),
    [
        (None, "--split is needed: {data} has splits train, val"),
        ("val2017", "--split val2017 is not in {data}, which has splits train, val"),
    ],
)
def test_evaluate_names_the_splits_when_the_choice_is_open_or_wrong(
    split: str | None,
    needle: str,
    data: Path,
    checkpoint: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--checkpoint", str(checkpoint), "--data-path", str(data), "--device", "cpu"]
    capsys.readouterr()
    assert evaluate.main(argv + (["--split", split] if split else [])) == 2
    _one_line_error(capsys, "heatpose eval: error: " + needle.format(data=data))


def test_learning_curve_png(tmp_path: Path) -> None:
    lines = [
        {"type": "start", "step": 0},
        {"type": "train", "epoch": 1, "step": 5, "loss": 0.02, "lr": 1e-3},
        {"type": "epoch", "epoch": 1, "step": 10, "train_loss": 0.015, "lr": 1e-3},
        {"type": "eval", "epoch": 1, "step": 10, "AP": 0.2, "AP50": 0.5, "AP75": 0.1},
    ]
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    out = tmp_path / "curve.png"
    assert learning_curve.main([str(metrics), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _records(out: Path, kind: str) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


@pytest.mark.slow
def test_train_prints_its_checkpoints_and_numbers_epochs_from_1_everywhere(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    flags = (
        "--train-split train --val-split val --depth 18 --input-size 96x64 -b 2 -j 0"
        " --epochs 2 --eval-every 1 --print-freq 1 --pretrained-backbone none --device cpu"
    )
    capsys.readouterr()
    assert train.main(["--data-path", str(data), *flags.split(), "--output-dir", str(out)]) == 0
    stdout, stderr = capsys.readouterr()
    # Epochs: the bar's "epoch E/2" and every record's "epoch" count from 1, and the steps
    # logged under epoch E are the E-th epoch's.
    bar = sorted(set(re.findall(r"epoch (\d+)/2", stderr)))
    assert bar == ["1", "2"], stderr[-2000:]
    iters = _records(out, "start")[0]["iters_per_epoch"]
    steps = [(r["epoch"], r["step"]) for r in _records(out, "train")]
    assert steps == [(1 + (s - 1) // iters, s) for s in range(1, 2 * iters + 1)]
    assert [r["epoch"] for r in _records(out, "epoch")] == [1, 2]
    evals = _records(out, "eval")
    assert [r["epoch"] for r in evals] == [1, 2]
    assert (out / "results_epoch1.json").is_file() and (out / "results_epoch2.json").is_file()
    assert read_config(out / "last.safetensors").metrics["epoch"] == 2
    # The summary: each file with its path, then the command that serves the best one.
    best_epoch = max(evals, key=lambda r: r["AP"])["epoch"]  # the first of equal APs
    best_ap = max(r["AP"] for r in evals)
    assert read_config(out / "best.safetensors").metrics["epoch"] == best_epoch
    best, last, resume = out / "best.safetensors", out / "last.safetensors", out / "resume.pt"
    last_ap = evals[-1]["AP"]
    assert stdout.splitlines()[-5:] == [
        f"checkpoints in {out}:",
        f"  best.safetensors  {best}  (epoch {best_epoch}, val AP {best_ap:.4f})",
        f"  last.safetensors  {last}  (epoch 2, val AP {last_ap:.4f})",
        f"  resume.pt         {resume}  (continue: add --resume {resume})",
        f"serve the best model: HEATPOSE_CHECKPOINT={best} heatpose serve",
    ], stdout


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_loader_workers_survive_evaluation_between_epochs(data: Path, tmp_path: Path) -> None:
    """Regression: a worker forked after the evaluation ran OpenCV in the trainer process
    used to deadlock on OpenCV's thread-pool lock (the trainer now keeps OpenCV single-threaded).
    """
    flags = (
        "--train-split train --val-split val --depth 18 --input-size 96x64 -b 2 -j 1"
        " --epochs 2 --eval-every 1 --pretrained-backbone none --no-progress --device cpu"
    )
    argv = ["--data-path", str(data), *flags.split(), "--output-dir", str(tmp_path / "out")]
    r = subprocess.run(
        [sys.executable, "-m", "training.train", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=200,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert [e["epoch"] for e in _records(tmp_path / "out", "eval")] == [1, 2]
