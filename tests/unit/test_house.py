"""The shape of the house (ARCHITECTURE.md), checked on every import of every module.

- `domain/` imports only the standard library's pure modules, pydantic and
  `eventsourcing.domain`;
- layers import only downwards: domain <- projections <- service <- adapters
  <- cli (adapters implement the service's ports; `adapters.store` is the
  composition root);
- no module imports, at import time, one that imports it back;
- no module is longer than 500 lines.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from tests.support import REPO

LAYERS = ("domain", "projections", "service", "adapters", "cli")
"""Lowest first: a module may import its own layer and those before it."""

IMPURE = {
    "os", "io", "subprocess", "multiprocessing", "threading", "socket", "signal",
    "shutil", "tempfile", "asyncio", "concurrent", "ctypes", "sqlite3", "select",
    "selectors", "time", "random", "logging", "pickle", "glob", "fcntl", "getpass", "platform",
}  # fmt: skip
"""Standard library modules that touch the process, the machine or the clock."""

DOMAIN_LIBRARIES = ("pydantic", "eventsourcing.domain")

MODULES = {
    ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): path
    for layer in LAYERS
    for path in sorted((REPO / layer).rglob("*.py"))
}


def imports(path: Path, *, import_time_only: bool) -> list[str]:
    """Absolute names a module imports (without `trainledger.`); TYPE_CHECKING blocks left out."""
    names: list[str] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                names.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path}: relative import"
                module = node.module or ""
                names.append(module)
                names.extend(f"{module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and import_time_only:
                continue
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    inner = getattr(node, field, None)
                    if isinstance(inner, list):
                        visit([n for n in inner if isinstance(n, ast.stmt)])
                        for handler in inner:
                            if isinstance(handler, ast.ExceptHandler):
                                visit(handler.body)

    visit(ast.parse(path.read_text()).body)
    return [name.removeprefix("trainledger.") for name in names]


def project_module(name: str) -> str | None:
    """The project module an imported name lives in (None: not ours)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def layer_of(module: str) -> int:
    return LAYERS.index(module.split(".", maxsplit=1)[0])


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("domain")))
def test_the_domain_imports_no_infrastructure(module: str) -> None:
    for name in imports(MODULES[module], import_time_only=False):
        top = name.split(".")[0]
        if top in {"domain", "__future__"}:
            continue
        if top in sys.stdlib_module_names:
            assert top not in IMPURE, f"{module} imports {name}"
        else:
            assert name.startswith(DOMAIN_LIBRARIES), f"{module} imports {name}"
    text = MODULES[module].read_text()
    for touch in (r"os\.environ", r"getenv\(", r"\bopen\(", r"sys\.(argv|exit|std\w+|path)\b"):
        assert not re.search(touch, text), f"{module} touches the process: {touch}"


def test_layers_import_only_downwards() -> None:
    upward = [
        f"{module} imports {target}"
        for module, path in MODULES.items()
        for name in imports(path, import_time_only=False)
        if (target := project_module(name)) is not None and layer_of(target) > layer_of(module)
        # The composition root and the CLI see everything; adapters implement service ports.
    ]
    assert upward == []


def test_no_import_cycles() -> None:
    graph = {
        module: {
            target
            for name in imports(path, import_time_only=True)
            if (target := project_module(name)) is not None
            and target != module
            # `from pkg import name` of a package's own __init__ is no edge to the package body
            and not (MODULES[target].name == "__init__.py" and module.startswith(target + "."))
        }
        for module, path in MODULES.items()
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def walk(module: str, stack: list[str]) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                walk(target, stack)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [])
    assert cycles == []


def test_no_module_is_longer_than_500_lines() -> None:
    long = {
        module: lines
        for module, path in MODULES.items()
        if (lines := len(path.read_text().splitlines())) > 500
    }
    assert long == {}


def test_no_hand_written_c() -> None:
    tracked = [p for p in REPO.rglob("*.c") if ".venv" not in p.parts and "build" not in p.parts]
    assert tracked == []
