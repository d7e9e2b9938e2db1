"""House rules as tests: ruff lint, ruff format and mypy over the code base, the layering, the
marker on every CUDA test."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_ruff_lint() -> None:
    r = _run("ruff", "check", ".")
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
def test_ruff_format() -> None:
    r = _run("ruff", "format", "--check", ".")
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_mypy_models_and_app() -> None:
    r = _run("mypy", "models", "app", "heatpose_cli")
    assert r.returncode == 0, r.stdout + r.stderr


NEVER = {
    "models": ("app", "training", "heatpose_cli"),
    "app": ("training", "heatpose_cli"),
    "training": ("app", "heatpose_cli"),
}
"""Package -> the top-level packages it never imports: the core imports neither the service nor
the trainer; the service and the trainer never meet; the command line (``heatpose_cli``)
imports them all and none of them imports it."""


def _is_main_block(node: ast.AST) -> bool:
    """``if __name__ == "__main__":``: a ``python -m`` entry point, run only as a program."""
    return isinstance(node, ast.If) and ast.unparse(node.test).replace("'", '"') in (
        '__name__ == "__main__"',
        '"__main__" == __name__',
    )


def imported_packages(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in ``tree`` (module level or in a function),
    except in ``if __name__ == "__main__":`` blocks."""
    found: list[tuple[int, str]] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if _is_main_block(node):
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
        stack.extend(ast.iter_child_nodes(node))
    return found


def test_layering_core_service_trainer_and_command_line() -> None:
    """House rule (:data:`NEVER`). Exempt: the ``python -m`` entry points kept for deploy files
    and docs (``app/__main__.py``, the ``if __name__ == "__main__":`` blocks of
    ``training.train`` and friends), which hand over to the command's ``main`` in heatpose_cli."""
    offenders = []
    for pkg, banned in NEVER.items():
        for f in sorted((ROOT / pkg).rglob("*.py")):
            if f.name == "__main__.py":
                continue
            for line, name in imported_packages(ast.parse(f.read_text())):
                if name in banned:
                    offenders.append(f"{f.relative_to(ROOT)}:{line}: imports {name}")
    assert not offenders, offenders


def test_the_core_tests_do_not_import_training() -> None:
    """tests/models tests the core on its own: no ``training`` import (tests that need
    training's synthetic data live in tests/training)."""
    offenders = []
    for f in sorted((ROOT / "tests" / "models").rglob("*.py")):
        for line in f.read_text().splitlines():
            s = line.strip()
            imports = s.startswith(("import training", "from training", "from tests.training"))
            if imports:
                offenders.append(f"{f.relative_to(ROOT)}: {s}")
    assert not offenders, offenders


def test_every_real_server_test_is_in_the_slow_tier() -> None:
    """A test that starts the service as a process (the ``server_process`` fixture or
    ``wait_ready``) is marked ``slow`` (or its module is): the default ``pytest`` run, the quick
    tier, never starts one."""
    import ast

    unmarked = []
    for f in sorted((ROOT / "tests").rglob("test_*.py")):
        text = f.read_text()
        slow_module = re.search(r"^pytestmark = .*pytest\.mark\.slow", text, flags=re.M)
        if slow_module or f == Path(__file__):
            continue
        for node in ast.parse(text).body:
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            source = ast.get_source_segment(text, node) or ""
            starts = "server_process" in source or "wait_ready(" in source
            marked = any("mark.slow" in ast.unparse(d) for d in node.decorator_list)
            if node.name.startswith("test_") and starts and not marked:
                unmarked.append(f"{f.relative_to(ROOT)}::{node.name}")
    assert not unmarked, unmarked


def test_layering_check_sees_function_local_imports_and_skips_main_blocks() -> None:
    code = (
        "import models.pose.codec\n"
        "def f():\n    from app import settings\n"
        "if __name__ == '__main__':\n    from heatpose_cli.train import main\n"
    )
    assert sorted(imported_packages(ast.parse(code))) == [(1, "models"), (3, "app")]


def _module_name(f: Path) -> str:
    parts = list(f.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(*packages: str) -> dict[str, set[str]]:
    """Module -> the modules of ``packages`` it imports, wherever in it (at module level or in
    a function: a function-local import does not make a cycle go away); imports under
    ``if TYPE_CHECKING:`` are for annotations only and left out. ``from pkg import mod`` is an
    edge to ``pkg.mod`` (``pkg/__init__.py`` imports its names lazily)."""
    files = {_module_name(f): f for p in packages for f in sorted((ROOT / p).rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, f in files.items():
        tree = ast.parse(f.read_text())
        typing_only = {
            id(n)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
            for n in ast.walk(block)
        }
        edges: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = {f"{node.module}.{a.name}" for a in node.names}
                edges |= subs if subs <= files.keys() else {node.module}
        graph[name] = {e for e in edges if e in files and e != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` (``[a, b, ..., a]``), or ``[]``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return []

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return []


def test_no_import_cycle_in_models_and_app() -> None:
    """Each concept has one owner, so no two modules need each other; function-local imports
    count (they are kept only to defer torch or an optional package, never to hide a cycle)."""
    graph = import_graph("models", "app")
    assert len(graph) > 50 and graph["models.inference.predictor"] >= {"models.runtime.backends"}
    assert find_cycle(graph) == []


def test_find_cycle_finds_one() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_every_cuda_test_is_marked_gpu() -> None:
    """A test that needs CUDA carries ``@pytest.mark.gpu``: ``pytest -m gpu`` (what
    benchmarks/gpu_session.sh runs on a lent GPU) then finds every one of them."""
    unmarked = []
    for f in sorted((ROOT / "tests").rglob("test_*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            decorators = [ast.unparse(d) for d in node.decorator_list]
            if any("needs CUDA" in d for d in decorators) and "pytest.mark.gpu" not in decorators:
                unmarked.append(f"{f.relative_to(ROOT)}::{node.name}")
    assert not unmarked, unmarked


ALLOWED = {
    # models: the pose model, its weights, where a forward pass runs, the one inference path;
    # detection and video on top
    "models.pose": set(),
    "models.weights": {"models.pose"},
    "models.runtime": {"models.weights"},
    "models.inference": {"models.pose", "models.weights", "models.runtime"},
    "models.detection": {"models.pose", "models.weights", "models.runtime"},
    "models.video": {"models.pose", "models.inference"},
    # app: the error type, the devices grammar and the settings under everything; the engine
    # over intake, rendering and metrics; HTTP (routes included) over the engine; main on top
    "app.errors": set(),
    "app.devices": set(),
    "app.settings": {"app.devices"},
    "app.observability": set(),
    "app.render": set(),
    "app.streams": set(),
    "app.intake": {"app.errors", "app.settings"},
    "app.engine": {
        "app.errors",
        "app.devices",
        "app.settings",
        "app.observability",
        "app.render",
        "app.intake",
    },
    "app.http": {
        "app.errors",
        "app.settings",
        "app.observability",
        "app.render",
        "app.intake",
        "app.streams",
        "app.engine",
    },
    "app.main": {
        "app.errors",
        "app.settings",
        "app.observability",
        "app.intake",
        "app.streams",
        "app.engine",
        "app.http",
    },
    "app.__main__": set(),
    # training: data, evaluation, then the commands' modules; synthetic data on its own
    "training.data": set(),
    "training.synthetic": set(),
    "training.eval": {"training.data"},
    "training.evaluate": {"training.data", "training.eval"},
    "training.loop": {"training.evaluate"},
    "training.train": {"training.data", "training.loop"},
}
"""Sub-package (or top-level module) -> what it may import of its own top-level package
(``models``, ``app``, ``training``); across those packages :data:`NEVER` rules. Derived from
the import graph, kept without cycles: a new edge either fits the layers or moves a module."""


def _unit(module: str) -> str:
    """The sub-package a module belongs to (``app.http.routes.predict`` -> ``app.http``), or
    the module itself where it sits at the top of its package (``app.settings``)."""
    parts = module.split(".")
    if len(parts) >= 3 or (ROOT.joinpath(*parts).is_dir() and len(parts) == 2):
        return ".".join(parts[:2])
    return module


def test_sub_packages_import_only_what_the_table_allows() -> None:
    offenders = []
    for module, imported in sorted(import_graph("models", "app", "training").items()):
        unit = _unit(module)
        if "." not in unit:  # a package's __init__: lazy names only
            continue
        if unit not in ALLOWED:
            offenders.append(f"{module}: {unit} is not in ALLOWED")
            continue
        for other in sorted(imported):
            target = _unit(other)
            same_package = target.split(".")[0] == unit.split(".")[0]
            if same_package and target != unit and target not in ALLOWED[unit]:
                offenders.append(f"{module} imports {other} ({unit} may import {ALLOWED[unit]})")
    assert not offenders, offenders


def test_the_allowed_table_has_no_cycle() -> None:
    graph = {unit: set(allowed) for unit, allowed in ALLOWED.items()}
    assert all(b in graph for deps in graph.values() for b in deps)
    assert find_cycle(graph) == []
