"""The layering of the package: imports only run downward, and no top-level ``tasks`` package.

``python -m harness.X`` shims -> entry points (cli) -> pipeline | analysis -> engines ->
tasks | methods | models -> storage | sandbox | stats | hub -> errors. A module may import its
own folder and any lower layer; peers (pipeline and analysis, tasks and methods...) never import
each other. Lazy imports inside functions count too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

LAYERS = {  # a folder (or module) of the package -> its layer; higher layers import lower ones
    "harness.run": 6, "harness.grade": 6, "harness.table": 6, "harness.paper": 6, "harness.serve": 6,  # python -m shims
    "harness.cli": 5,
    "harness.pipeline": 4, "harness.analysis": 4,
    "harness.engines": 3,
    "harness.tasks": 2, "harness.methods": 2, "harness.models": 2,
    "harness.storage": 1, "harness.sandbox": 1, "harness.stats": 1, "harness.hub": 1,
    "harness.errors": 0,
}


def group_of(module: str) -> str | None:
    """The LAYERS entry a module belongs to (the longest matching prefix)."""
    matches = [g for g in LAYERS if module == g or module.startswith(g + ".")]
    return max(matches, key=len) if matches else None


def module_name(path: Path) -> str:
    """A source file's module name; ``tasks/`` installs as ``harness.tasks``."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[0] == "tasks":
        parts = ["harness", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, imported module) for every import in a source, relative ones resolved."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from harness import tiny` imports the submodule harness.tiny
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names if group_of(f"{target}.{alias.name}")]
    return found


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """Every import in ``source`` (of ``module``) that runs upward or sideways, one line each."""
    importer = group_of(module)
    problems = []
    for line, target in imports_of(source, module, is_package):
        if target == "tasks" or target.startswith("tasks."):
            problems.append(f"{module}:{line} imports the top-level 'tasks' (use harness.tasks)")
            continue
        if not target.startswith("harness"):
            continue
        imported = group_of(target)
        if imported is None or importer is None or imported == importer:
            continue
        if LAYERS[imported] >= LAYERS[importer]:
            kind = "upward" if LAYERS[imported] > LAYERS[importer] else "sideways"
            problems.append(f"{module}:{line} imports {target} ({kind}: layer {LAYERS[imported]} from layer {LAYERS[importer]})")
    return problems


def sources() -> list[Path]:
    return sorted([*(REPO / "harness").rglob("*.py"), *(REPO / "tasks").glob("*.py")])


def test_every_module_has_a_layer():
    unplaced = [module_name(p) for p in sources() if group_of(module_name(p)) is None and module_name(p) != "harness"]
    assert not unplaced, f"modules outside every layer (add their folder to LAYERS): {unplaced}"


def test_imports_only_run_downward():
    problems = []
    for path in sources():
        problems += violations(path.read_text(), module_name(path), path.name == "__init__.py")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("harness.storage.rundir", "from harness.pipeline.config import validate", "upward"),
        ("harness.analysis.table", "def f():\n    from harness.pipeline import runner", "sideways"),
        ("harness.methods.mixing", "def f():\n    from harness.engines.vllm import engine", "upward"),
        ("harness.pipeline.grid", "from harness.analysis.selection import best_configuration", "sideways"),
        ("harness.tasks.aime", "import tasks.base", "top-level 'tasks'"),
        ("harness.engines.vllm.engine", "from .. import base\nfrom ...errors import ConfigError", None),
        ("harness.cli.run", "from harness.pipeline import runner\nfrom harness.analysis import selection", None),
    ],
)
def test_the_check_finds_upward_and_sideways_imports(module, source, expected):
    found = violations(source, module)
    assert (expected is None and not found) or (expected is not None and found and expected in found[0]), found


def test_the_installed_package_has_no_top_level_tasks(tmp_path):
    """The editable install maps tasks/ to harness.tasks; outside the checkout ``tasks`` does not import."""
    code = "import harness.tasks, importlib.util; print(harness.tasks.__file__); print(importlib.util.find_spec('tasks'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    location, spec = out.split()
    assert Path(location) == REPO / "tasks" / "__init__.py"
    assert spec == "None"
