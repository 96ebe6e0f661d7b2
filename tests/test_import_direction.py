"""Imports run one way: the edges (command line, web pages, workers, mail
servers) and the file readers use the domain, the domain uses the core,
and the core uses only itself and the settings.  A domain module that
reached back into ``intake/`` for the values it takes, as ``domain/alerts.py``
once did for ``AlertSpec``, would turn an arrow around without anyone
noticing; these tests notice."""

from __future__ import annotations

from pathlib import Path

import mailflow
from tests.support.imports import imported_names, is_within, module_name

PACKAGE_FOLDER = Path(mailflow.__file__).parent
DOMAIN = "mailflow.domain"
CORE = "mailflow.core"
WHAT_THE_DOMAIN_MUST_NOT_IMPORT = (
    "mailflow.intake",
    "mailflow.web",
    "mailflow.cli",
    "mailflow.edges",
    "mailflow.workers",
)
WHAT_THE_CORE_MAY_IMPORT = (CORE, "mailflow.config")


def modules_of(package: str) -> dict[str, Path]:
    folder = PACKAGE_FOLDER.joinpath(*package.split(".")[1:])
    return {
        module_name(path, PACKAGE_FOLDER, "mailflow"): path for path in sorted(folder.rglob("*.py"))
    }


def arrows_from(package: str) -> list[tuple[str, str]]:
    """Every (module, name it imports) pair for the modules of ``package``."""
    return [
        (module, name)
        for module, path in modules_of(package).items()
        for name in imported_names(
            path.read_text(encoding="utf-8"), module, is_package=path.name == "__init__.py"
        )
    ]


def test_the_checks_read_the_folders_the_domain_and_core_live_in() -> None:
    # Were a folder to move, the checks below would pass on nothing.
    assert {f"{DOMAIN}.alerts", f"{DOMAIN}.organisations", f"{DOMAIN}.models"} <= set(
        modules_of(DOMAIN)
    )
    assert f"{CORE}.links" in modules_of(CORE)


def test_no_domain_module_imports_a_file_reader_a_page_a_command_a_server_or_a_worker() -> None:
    backwards = sorted(
        f"{module} imports {name}"
        for module, name in arrows_from(DOMAIN)
        if any(is_within(name, edge) for edge in WHAT_THE_DOMAIN_MUST_NOT_IMPORT)
    )

    assert backwards == []


def test_the_core_imports_nothing_of_mailflow_but_itself_and_the_settings() -> None:
    outside = sorted(
        f"{module} imports {name}"
        for module, name in arrows_from(CORE)
        if is_within(name, "mailflow")
        and not any(is_within(name, allowed) for allowed in WHAT_THE_CORE_MAY_IMPORT)
    )

    assert outside == []


def test_an_import_that_runs_backwards_is_seen_however_it_is_written() -> None:
    # The rule above is only as good as its reading of import statements:
    # each way of writing the old backwards import must be caught, including
    # one hidden inside a function and a relative one.
    sources = {
        "from mailflow.alerts.alert_files import AlertSpec": "mailflow.alerts.alert_files",
        "import mailflow.alerts.alert_files": "mailflow.alerts.alert_files",
        "from mailflow import intake": "mailflow.intake",
        "def f():\n    from mailflow.web import app": "mailflow.web.app",
        "from ..intake import organisation_files": "mailflow.people.organisation_files",
        "from ..cli.context import Context": "mailflow.cli.context",
    }

    for source, expected in sources.items():
        names = list(imported_names(source, "mailflow.alerts.issuing"))

        assert any(is_within(name, expected) for name in names), (source, names)
        assert any(
            is_within(name, edge) for name in names for edge in WHAT_THE_DOMAIN_MUST_NOT_IMPORT
        )
