"""Imports run one way: the shells (the command line, the web app, the
queue workers) use the capabilities (people, alerts, answers, the mail
gateway), and the capabilities use the core (the shared mechanisms, the
settings and the database).  Capabilities may use each other where they
must, one way only (no circles but the listed ones), but the core imports
no capability, and nothing outside the shells imports a shell.  An import
that turns an arrow around, such as a core module reaching into
``alerts`` for a helper, or Runtime importing the gateway's reader, is
easy to write and hard to see in review; these tests see it.  They read
every module with ``ast`` (no third-party tool needed), so imports inside
functions and under ``TYPE_CHECKING`` count too."""

from __future__ import annotations

from pathlib import Path

import mailflow
from tests.support.imports import imported_names, is_within, module_name

PACKAGE_FOLDER = Path(mailflow.__file__).parent
SHELLS = ("mailflow.cli", "mailflow.web", "mailflow.workers", "mailflow.__main__")
CAPABILITIES = (
    "mailflow.people",
    "mailflow.alerts",
    "mailflow.answers",
    "mailflow.access",
    "mailflow.deadlines",
    "mailflow.reports",
    "mailflow.gateway",
)
CORE = (
    "mailflow.core",
    "mailflow.config",
    "mailflow.settings_values",
    "mailflow.settings_keys",
    "mailflow.schedule_values",
    "mailflow.db",
)
ROOT = "mailflow"


def layer_of(name: str) -> str | None:
    """Which layer a module of mailflow (or a name inside one) belongs to."""
    for layer, packages in (("shell", SHELLS), ("capability", CAPABILITIES), ("core", CORE)):
        if any(is_within(name, package) for package in packages):
            return layer
    return "core" if name == ROOT else None


def all_modules() -> dict[str, Path]:
    return {
        module_name(path, PACKAGE_FOLDER, ROOT): path
        for path in sorted(PACKAGE_FOLDER.rglob("*.py"))
        if "migrations" not in path.relative_to(PACKAGE_FOLDER).parts
    }


def arrows(modules: dict[str, Path]) -> list[tuple[str, str]]:
    """Every (module, name of mailflow it imports) pair."""
    return [
        (module, name)
        for module, path in modules.items()
        for name in imported_names(
            path.read_text(encoding="utf-8"), module, is_package=path.name == "__init__.py"
        )
        if is_within(name, ROOT)
    ]


def backwards(pairs: list[tuple[str, str]]) -> list[str]:
    """The arrows that run the wrong way."""
    wrong = []
    for module, name in pairs:
        source, target = layer_of(module), layer_of(name)
        if source == target or source == "shell":
            continue
        if target == "shell" or (source == "core" and target == "capability"):
            wrong.append(f"{module} ({source}) imports {name} ({target})")
    return sorted(wrong)


# Arrows between capabilities that may close a circle, each with why.
# Every other arrow from one capability to another must be one way: the
# capability imported does not import the importer back, directly or
# through others.
ALLOWED_CIRCLES = {
    ("mailflow.gateway", "mailflow.alerts"): (
        "a bounce report marks the alert delivery its bounce key names (gateway/bounces.py), "
        "and the SMTP edge asks at RCPT whether a delivery holds that key; until bounce keys "
        "are routed through a list the shells hand in, as reply keys are, this closes "
        "alerts -> answers (the reply form, the status lines) -> gateway (reading replies) "
        "-> alerts"
    ),
}


def capability_of(name: str) -> str | None:
    return next((c for c in CAPABILITIES if is_within(name, c)), None)


def capability_arrows(pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which capability imports which other one, from module arrows."""
    found = set()
    for module, name in pairs:
        source, target = capability_of(module), capability_of(name)
        if source is not None and target is not None and source != target:
            found.add((source, target))
    return found


def circles(pairs: list[tuple[str, str]]) -> list[str]:
    """Each arrow between capabilities (but the allowed ones) whose target
    leads back to its source, directly or through other capabilities."""
    one_way = capability_arrows(pairs) - set(ALLOWED_CIRCLES)

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            here = todo.pop()
            for source, target in one_way:
                if source == here and target not in seen:
                    seen.add(target)
                    todo.append(target)
        return seen

    return sorted(f"{a} -> {b} -> ... -> {a}" for a, b in one_way if a in reachable(b))


def test_every_module_of_mailflow_belongs_to_a_layer() -> None:
    # A new folder must be placed in a layer, or the rule would skip it.
    assert [module for module in all_modules() if layer_of(module) is None] == []


def test_the_checks_read_the_folders_each_layer_lives_in() -> None:
    # Were a folder to move, the check below would pass on nothing.
    layers = {layer_of(module) for module in all_modules()}
    assert layers == {"shell", "capability", "core"}
    assert {"mailflow.core.runtime", "mailflow.alerts.issuing", "mailflow.web.app"} <= set(
        all_modules()
    )


def test_imports_run_from_the_shells_to_the_capabilities_to_the_core() -> None:
    assert backwards(arrows(all_modules())) == []


def test_an_import_that_runs_backwards_is_seen_however_it_is_written() -> None:
    # The rule is only as good as its reading of import statements: each
    # way of writing a backwards import must be caught, including one hidden
    # inside a function and a relative one.
    sources = {
        "from mailflow.alerts.issuing import new_key": "mailflow.core.mail.one_off",
        "import mailflow.gateway.bounded_reading": "mailflow.core.runtime",
        "from mailflow import answers": "mailflow.core.pending",
        "def f():\n    from mailflow.web import app": "mailflow.people.enrolment",
        "from ...gateway import reading": "mailflow.core.mail.one_off",
        "from ..cli.context import Context": "mailflow.answers.receipts",
        "from mailflow.workers.queue import JobQueue": "mailflow.gateway.smtpd",
    }

    for source, module in sources.items():
        pairs = [(module, name) for name in imported_names(source, module)]

        assert len(backwards(pairs)) == 1, (source, pairs)


def test_arrows_that_run_the_right_way_or_across_capabilities_are_allowed() -> None:
    allowed = {
        "from mailflow.core.runtime import Runtime": "mailflow.gateway.smtpd",
        "from mailflow.answers.reply_form import build_reply_form": "mailflow.alerts.alert_email",
        "from mailflow.people import users": "mailflow.cli.users_command",
        "from mailflow.config import Settings": "mailflow.core.links",
    }

    for source, module in allowed.items():
        assert backwards([(module, name) for name in imported_names(source, module)]) == []


def test_no_capability_imports_one_that_imports_it_back() -> None:
    assert circles(arrows(all_modules())) == []


def test_each_allowed_circle_is_still_there() -> None:
    # An allowed arrow that has gone must leave the list, so the list
    # stays a true account of the circles left.
    assert set(ALLOWED_CIRCLES) <= capability_arrows(arrows(all_modules()))


def test_a_capability_importing_one_that_imports_it_back_is_seen() -> None:
    # The gateway once built its list of reply keys from the answers,
    # which read replies with the gateway.
    pairs = [
        ("mailflow.answers.alert_reply_key", "mailflow.gateway.reading.InboundReading"),
        ("mailflow.gateway.kinds", "mailflow.answers.alert_reply_key.DeliveryReplies"),
        ("mailflow.alerts.alert_email", "mailflow.answers.reply_form.build_reply_form"),
    ]

    assert circles(pairs) == [
        "mailflow.answers -> mailflow.gateway -> ... -> mailflow.answers",
        "mailflow.gateway -> mailflow.answers -> ... -> mailflow.gateway",
    ]
