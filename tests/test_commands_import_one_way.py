"""The command line's modules import one way: the entry point imports the
group, the group imports the command modules, and they import the shared
plumbing.  Nothing imports back up, so the circle in which every command
module imported ``mailflow.cli.main`` from inside its functions cannot
come back unnoticed."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mailflow.cli

CLI_FOLDER = Path(mailflow.cli.__file__).parent
PACKAGE = "mailflow.cli"
ENTRY_POINT = f"{PACKAGE}.main"
GROUP = f"{PACKAGE}.app"
MODULES = {f"{PACKAGE}.{path.stem}": path for path in sorted(CLI_FOLDER.glob("*.py"))}


def imported_modules(node: ast.AST, package: str) -> Iterator[str]:
    """The modules an import statement names; ``from mailflow.cli import
    app`` names ``mailflow.cli.app``."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            base = f"{parent}.{base}" if base else parent
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            yield submodule if submodule in MODULES else base


def cli_imports(path: Path) -> list[tuple[str, bool]]:
    """Each cli module ``path`` imports, and whether the import is hidden
    inside a function (read by ``ast``, so imports under TYPE_CHECKING and
    inside functions count as well)."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for name in imported_modules(node, PACKAGE):
            if name in MODULES:
                found.append((name, in_function))
        inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), in_function=False)
    return found


def import_graph() -> dict[str, set[str]]:
    return {name: {imported for imported, _ in cli_imports(path)} for name, path in MODULES.items()}


def test_the_command_line_is_split_into_the_modules_the_checks_read() -> None:
    # The checks below read these files: were the folder to move, they
    # would pass on nothing.
    assert {ENTRY_POINT, GROUP, f"{PACKAGE}.context", f"{PACKAGE}.users_command"} <= set(MODULES)


def test_only_the_entry_point_imports_the_group_and_nothing_imports_the_entry_point() -> None:
    graph = import_graph()

    importing_the_entry_point = sorted(
        name for name, names in graph.items() if ENTRY_POINT in names
    )
    importing_the_group = sorted(n for n, names in graph.items() if GROUP in names)

    assert importing_the_entry_point == []
    assert importing_the_group == [ENTRY_POINT]


def test_no_cli_module_hides_an_import_of_another_inside_a_function() -> None:
    # Such an import is how the circle was dodged before: each command
    # module fetched the plumbing from main.py at run time.
    hidden = sorted(
        f"{name} imports {imported}"
        for name, path in MODULES.items()
        for imported, in_function in cli_imports(path)
        if in_function
    )

    assert hidden == []


def test_the_cli_modules_import_one_another_without_a_circle() -> None:
    graph = import_graph()
    finished: set[str] = set()

    def circle_from(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in finished:
            return None
        for imported in sorted(graph[name]):
            if circle := circle_from(imported, [*path, name]):
                return circle
        finished.add(name)
        return None

    circles = [circle for name in sorted(graph) if (circle := circle_from(name, []))]

    assert circles == []


def test_each_cli_module_can_be_the_first_one_imported() -> None:
    # In a fresh interpreter, each module in turn is imported with no other
    # cli module loaded before it: a circle of top-level imports would fail
    # for some order even if the usual one (through main) happens to work.
    probe = (
        "import importlib, sys\n"
        f"for name in {sorted(MODULES)!r}:\n"
        f"    for loaded in [m for m in sys.modules if m.startswith('{PACKAGE}.')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
    )

    finished = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )

    assert finished.returncode == 0, finished.stderr
    assert finished.stderr == ""
