"""The `heatpose` console script dispatches lazily."""

import subprocess
import sys
from typing import get_args

import pytest

import heatpose_cli
from models.runtime import choices


def test_help_lists_every_command(capsys) -> None:
    assert heatpose_cli.main([]) == 0
    out = capsys.readouterr().out
    for name in heatpose_cli.COMMANDS:
        assert name in out


def test_unknown_command_is_exit_2(capsys) -> None:
    assert heatpose_cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_serve_never_imports_training() -> None:
    code = (
        "import sys, heatpose_cli\n"
        "try:\n    heatpose_cli.main(['serve', '--help'])\n"
        "except SystemExit:\n    pass\n"
        "bad = [m for m in sys.modules if m.split('.')[0] == 'training']\n"
        "assert not bad, bad\n"
        "assert 'heatpose_cli.serve' in sys.modules\n"
        # --help answers before the settings (pydantic) load: 0.2 s instead of 0.5-0.9 s
        "assert 'app.settings' not in sys.modules\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


HEAVY = (
    "torch",
    "torchvision",
    "cv2",
    "training.train",
    "training.evaluate",
    "training.synthetic.dataset",
)


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--help"],
        ["eval", "--help"],
        ["synth", "--help"],
        ["weights", "--help"],
        ["weights", "import", "--help"],
        ["serve", "--help"],
        ["weights", "list"],
        ["train", "--data-path", "/no/such/dir"],  # a flag error answers as quickly
    ],
)
def test_help_and_flag_errors_never_import_torch(argv: list[str]) -> None:
    """`heatpose COMMAND --help` parses before importing torch, OpenCV or the trainer: this is
    what makes it answer in a fraction of a second (figures in docs/training.md)."""
    code = (
        "import sys, heatpose_cli\n"
        f"try:\n    code = heatpose_cli.main({argv!r})\n"
        "except SystemExit as e:\n    code = e.code\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print('EXIT', code, 'HEAVY', heavy)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    last = r.stdout.strip().splitlines()[-1]
    expected_exit = 2 if "--data-path" in argv else 0
    assert last == f"EXIT {expected_exit} HEAVY []", r.stdout[-2000:] + r.stderr[-2000:]
    if argv == ["weights", "list"]:
        assert "res50-dark-coco-256x192" in r.stdout  # the table, read without torch
    elif "--help" in argv:
        assert r.stdout.startswith(f"usage: heatpose {' '.join(argv[:-1])} "), r.stdout[:200]
    else:
        error = "heatpose train: error: --data-path is not a directory: /no/such/dir"
        assert r.stderr.strip() == error, r.stderr


def test_cli_choices_equal_their_owners() -> None:
    """models.runtime.choices copies names for torch-free parsers; the owners are the truth."""
    from models.pose import codec, network
    from models.weights import checkpoint

    assert choices.DEPTHS == network.DEPTHS
    assert sorted(choices.DECODE_MODES) == sorted(codec.DECODE_MODES)
    assert get_args(choices.DecodeMode) == get_args(codec.DecodeMode)
    assert choices.LAYOUTS == checkpoint.LAYOUTS
