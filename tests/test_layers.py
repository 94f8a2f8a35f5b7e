"""The package's import direction: each stage imports only itself and the stages before it.

Stages, in pipeline order (``layout.md`` in the project's shared reference)::

    core <- data <- capture <- training <- steering <- evaluate <- recipes <- cli
    core <- priors <- training

``priors`` needs only ``core``; ``capture`` and ``priors`` are independent of each other; nothing
imports ``cli``. Every import counts, including those inside functions (a lazy import is how a cycle
hides). The scan reads the source with :mod:`ast`, so it needs nothing imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tl_diffusion_prior

PACKAGE = "tl_diffusion_prior"
ROOT = Path(tl_diffusion_prior.__file__).parent

# What each stage may import besides itself. ``constants`` is a leaf every stage may use; the
# package's ``__init__`` gathers the public API from every stage but ``cli``.
_BEFORE_STEERING = {"constants", "core", "data", "capture", "priors"}
_LIBRARY = _BEFORE_STEERING | {"training", "steering", "evaluate"}
ALLOWED: dict[str, set[str]] = {
    "constants": set(),
    "core": {"constants"},
    "data": {"constants", "core"},
    "capture": {"constants", "core", "data"},
    "priors": {"constants", "core"},
    "training": _BEFORE_STEERING,
    "steering": _BEFORE_STEERING,
    "evaluate": _BEFORE_STEERING | {"training", "steering"},
    "recipes": _LIBRARY,
    "cli": _LIBRARY | {"recipes"},
    "__init__": _LIBRARY | {"recipes"},
}


def module_name(path: Path, root: Path = ROOT, package: str = PACKAGE) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package modules it imports (``from pkg import submodule`` points at the
    submodule, not at ``pkg/__init__``)."""
    modules = {module_name(p, root, package): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.split(".")[0] == package)
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against this module's package
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if source.split(".")[0] != package:
                    continue
                for alias in node.names:
                    candidate = f"{source}.{alias.name}"
                    targets.add(candidate if candidate in modules else source)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def stage_of(module: str, package: str = PACKAGE) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    errors = []
    for module, targets in sorted(graph.items()):
        stage = stage_of(module)
        for target in sorted(targets):
            target_stage = stage_of(target)
            if target_stage == "__init__" or target_stage not in ALLOWED:
                errors.append(f"{module} imports {target}, which is in no known stage")
            elif stage not in ALLOWED:
                errors.append(f"{module} is in no known stage; add it to ALLOWED")
            elif target_stage != stage and target_stage not in ALLOWED[stage]:
                errors.append(f"{module} ({stage}) imports {target} ({target_stage})")
    return errors


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_belongs_to_a_stage():
    stages = {stage_of(m) for m in import_graph()}
    assert stages <= set(ALLOWED), sorted(stages - set(ALLOWED))


def test_imports_only_point_to_earlier_stages():
    assert upward_imports(import_graph()) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_nothing_imports_the_cli():
    graph = import_graph()
    offenders = [
        f"{module} imports {target}"
        for module, targets in graph.items()
        if stage_of(module) != "cli"
        for target in targets
        if stage_of(target) == "cli"
    ]
    assert offenders == []


@pytest.fixture
def fake_package(tmp_path):
    """A copy of the package's stage layout with a few modules, to show that the checks fail."""

    def make(files: dict[str, str]) -> dict[str, set[str]]:
        root = tmp_path / PACKAGE
        for relative, source in files.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(source)
        return import_graph(root, PACKAGE)

    return make


def test_an_upward_import_is_caught(fake_package):
    graph = fake_package(
        {
            "__init__.py": "",
            "priors/__init__.py": "",
            "priors/base.py": "def f():\n    from tl_diffusion_prior.training import trainer\n",
            "training/__init__.py": "",
            "training/trainer.py": "from tl_diffusion_prior.priors.base import f\n",
        }
    )
    assert upward_imports(graph) == [
        "tl_diffusion_prior.priors.base (priors) imports "
        "tl_diffusion_prior.training.trainer (training)"
    ]
    assert cycles(graph) == [
        ["tl_diffusion_prior.priors.base", "tl_diffusion_prior.training.trainer"]
    ]


def test_a_cycle_through_a_relative_import_is_caught(fake_package):
    graph = fake_package(
        {
            "__init__.py": "",
            "evaluate/__init__.py": "",
            "evaluate/report.py": "from .markdown import render\n",
            "evaluate/markdown.py": "from . import report\n",
        }
    )
    assert upward_imports(graph) == []
    assert cycles(graph) == [
        ["tl_diffusion_prior.evaluate.markdown", "tl_diffusion_prior.evaluate.report"]
    ]


# A module over ~400 lines or a function over ~80 no longer reads as one piece (the layout's size
# limits); the command line and the recipes collect what the stages share, so only their functions
# are bounded.
MAX_MODULE_LINES = 410
MAX_FUNCTION_LINES = 80


def oversized(root: Path = ROOT, package: str = PACKAGE) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        source = path.read_text()
        module = module_name(path, root, package)
        lines = len(source.splitlines())
        if stage_of(module) not in ("cli", "recipes") and lines > MAX_MODULE_LINES:
            found.append(f"{module}: {lines} lines")
        for node in ast.walk(ast.parse(source, str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{module}.{node.name}: {length} lines")
    return found


def test_modules_and_functions_stay_small():
    assert oversized() == []


def test_an_oversized_function_or_module_is_caught(tmp_path):
    root = tmp_path / PACKAGE
    (root / "core").mkdir(parents=True)
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (root / "core" / "big.py").write_text(f"def big():\n{body}\n")
    (root / "core" / "long.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    (root / "cli").mkdir()
    (root / "cli" / "long.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))  # allowed
    assert oversized(root) == [
        f"{PACKAGE}.core.big.big: {MAX_FUNCTION_LINES + 1} lines",
        f"{PACKAGE}.core.long: {MAX_MODULE_LINES + 1} lines",
    ]
