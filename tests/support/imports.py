"""Reading which modules a source file imports, with ``ast``: imports
inside functions and under ``TYPE_CHECKING`` count as well, since each is
an arrow from one module to another all the same."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path


def module_name(path: Path, package_folder: Path, package: str) -> str:
    """``mailflow/alerts/issuing.py`` is ``mailflow.alerts.issuing``; an
    ``__init__.py`` is its package."""
    parts = path.relative_to(package_folder).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((package, *parts))


def imported_names(source: str, module: str, *, is_package: bool = False) -> Iterator[str]:
    """Each dotted name the source imports: ``import a.b`` names ``a.b``,
    ``from a.b import c`` names ``a.b.c`` (``c`` may be a module or a thing
    in ``a.b``: either way the arrow points into ``a.b``), and a relative
    import is resolved against ``module``."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            yield from (f"{base}.{alias.name}" for alias in node.names)


def is_within(name: str, package: str) -> bool:
    return name == package or name.startswith(f"{package}.")
