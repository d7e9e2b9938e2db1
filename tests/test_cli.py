"""The `heatpose` console script dispatches lazily."""

import subprocess
import sys

import heatpose_cli


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
        "assert 'app.cli' in sys.modules\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
