"""The layout is the architecture (docs/architecture.md): these tests fail on an import that points the
wrong way, an import cycle, a plug-point dependency outside its package, or an overlong module or
function without a written reason."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "expkit"

#: Lowest first. A module may import modules of its own package or of packages listed before it.
LAYERS = (
    "core",
    "spec",
    "runs",
    "stores",
    "executors",
    "runner",
    "analysis",
    "adaptive",
    "cluster",
    "reproduce",
    "cli",
)
#: Third-party packages that exactly one plug point may import.
CONFINED = {"kubernetes": "executors/argo", "minio": "stores/s3"}
MAX_MODULE_LINES = 800
MAX_FUNCTION_LINES = 60
#: A longer function carries this marker on its ``def`` line or the line above, followed by the reason.
LONG_MARKER = "# long:"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(path: Path, module: str) -> list[tuple[str, int]]:
    """Every module ``module`` imports (at any depth in the file), resolved to expkit module names."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.append((candidate if candidate in MODULES else base, node.lineno))
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in MODULES.items():
        for target, _ in _imports(path, module):
            if target in MODULES and target != module:
                graph[module].add(target)
    return graph


def test_every_module_belongs_to_a_layer() -> None:
    loose = [m for m in MODULES if m not in ("expkit", "expkit.__main__") and _layer(m) is None]
    assert not loose, f"modules outside the layers {LAYERS}: {loose} (see docs/architecture.md)"


def test_imports_point_down() -> None:
    rank = {name: i for i, name in enumerate(LAYERS)}
    wrong = []
    for module, path in MODULES.items():
        own = _layer(module)
        for target, line in _imports(path, module):
            other = _layer(target) if target.startswith("expkit.") else None
            if own is None or other is None or other == own:
                continue
            if rank[other] > rank[own]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {own} imports {target} ({other} is above it)")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles() -> None:
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue  # a package and its own submodules (re-exports in __init__)
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(MODULES):
        if module not in state:
            visit(module)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("package", sorted(CONFINED))
def test_plug_point_dependencies_are_confined(package: str) -> None:
    home = CONFINED[package]
    offenders = []
    for module, path in MODULES.items():
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(home + "/"):
            continue
        for target, line in _imports(path, module):
            if target == package or target.startswith(package + "."):
                offenders.append(f"expkit/{rel}:{line} imports {target}")
    assert not offenders, f"only expkit/{home} may import {package}:\n" + "\n".join(offenders)


def test_the_test_sees_a_wrong_import(tmp_path: Path) -> None:
    """The checker itself: an upward import in a stores module is reported."""
    path = tmp_path / "bad.py"
    path.write_text("from expkit.analysis.stats import analyze\n")
    targets = [t for t, _ in _imports(path, "expkit.stores.bad")]
    assert "expkit.analysis.stats" in targets
    assert LAYERS.index(_layer("expkit.analysis.stats") or "") > LAYERS.index(_layer("expkit.stores.bad") or "")


def test_no_module_is_too_long() -> None:
    long = [
        f"{p.relative_to(PACKAGE.parent)}: {n} lines"
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    ]
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them along their sections):\n" + "\n".join(long)


def test_long_functions_say_why() -> None:
    unexplained = []
    for path in PACKAGE.rglob("*.py"):
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            nearby = lines[max(0, first - 2) : node.lineno]
            if length > MAX_FUNCTION_LINES and not any(LONG_MARKER in line for line in nearby):
                unexplained.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}: {length} lines")
    assert not unexplained, (
        f"functions over {MAX_FUNCTION_LINES} lines without a '{LONG_MARKER} <reason>' comment "
        "on or above the def line:\n" + "\n".join(unexplained)
    )
