"""The README's first section gives the two commands, and CI runs the second one verbatim."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The shell commands of the README's first section (before the second heading)."""
    text = (ROOT / "README.md").read_text()
    first = text.split("\n## ", 2)[1]
    return re.findall(r"```bash\n(.+?)\n```", first, flags=re.S)


def test_readme_starts_with_serve_and_test_commands() -> None:
    serve, test = readme_commands()[:2]
    assert "pip install -e ." in serve and serve.endswith("heatpose serve")
    assert "pip install -e '.[dev]'" in test and test.endswith("python -m pytest")


def test_ci_runs_the_readme_test_command() -> None:
    test = readme_commands()[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in ci
    ci_cmd = [ln for ln in ci.splitlines() if ln.startswith("python3 -m venv")]
    assert ci_cmd, "no install+test line in .ci/run"
    # CI may add quiet flags to pip; otherwise the same command.
    assert ci_cmd[0].replace("pip install -q ", "pip install ") == test
