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
    assert "pip install -e '.[dev]'" in test and test.endswith("python -m pytest -m ''")


def test_the_default_run_is_the_quick_tier_and_the_readme_gives_both(pytestconfig) -> None:
    """``pytest`` alone deselects the ``slow`` tier (pyproject's addopts); the README's test
    command runs every tier (``-m ''`` replaces that ``-m``) and names the quick one, each with
    its time."""
    addopts = pytestconfig.getini("addopts")
    assert addopts[addopts.index("-m") + 1] == "not slow"
    first = (ROOT / "README.md").read_text().split("\n## ", 2)[1]
    # text, serve block, text, test block, text: the test block's text before it and after it
    _, _, before, block, after = first.split("```")[:5]
    assert block.strip().endswith("python -m pytest -m ''")
    assert re.search(r"about [\d.-]+ minutes", before)  # the full run's time
    assert "`.venv/bin/python -m pytest`" in after and re.search(r"about [\d.-]+ minutes", after)


def test_ci_runs_the_readme_test_command() -> None:
    test = readme_commands()[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in ci
    ci_cmd = [ln for ln in ci.splitlines() if ln.startswith("python3 -m venv")]
    assert ci_cmd, "no install+test line in .ci/run"
    # CI may add quiet flags to pip; otherwise the same command.
    assert ci_cmd[0].replace("pip install -q ", "pip install ") == test


def readme_no_download_route() -> list[list[str]]:
    """The README's "train and serve your own model with no download" commands (synth, train,
    serve), each as its words: continuation lines joined, ``.venv/bin/`` dropped."""
    import shlex

    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.+?)\n```", text, flags=re.S)
    (block,) = [b for b in blocks if "heatpose synth --out" in b]
    lines = block.replace("\\\n", " ").splitlines()
    return [[w.removeprefix(".venv/bin/") for w in shlex.split(line)] for line in lines]


def test_the_no_download_route_is_synth_train_serve() -> None:
    synth, train, serve = readme_no_download_route()
    assert synth[:2] == ["heatpose", "synth"] and train[:2] == ["heatpose", "train"]
    assert (
        "--pretrained-backbone" in train
        and train[train.index("--pretrained-backbone") + 1] == "none"
    )
    assert serve[-2:] == ["heatpose", "serve"] and serve[0].startswith("HEATPOSE_CHECKPOINT=")


def test_readme_shows_the_cpu_only_pytorch_install_next_to_the_two_commands() -> None:
    cpu = readme_commands()[2]
    assert "--index-url https://download.pytorch.org/whl/cpu" in cpu
    assert cpu.index("torch torchvision") < cpu.index("pip install -e .")
    assert cpu.endswith("heatpose serve")
    first = (ROOT / "README.md").read_text().split("\n## ", 2)[1]
    assert re.search(r"about\s+[\d.]+ GB instead of\s+[\d.]+ GB", first)  # its size
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "https://download.pytorch.org/whl/cpu" in dockerfile  # the same index


def test_readme_command_list_names_every_subcommand() -> None:
    from heatpose_cli import COMMANDS

    text = (ROOT / "README.md").read_text()
    (listed,) = re.findall(r"front door: `heatpose ([^`]+)`", text)
    assert [c.strip() for c in listed.split("|")] == list(COMMANDS)
