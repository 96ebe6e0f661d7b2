"""Errors the domain raises for input it will not accept.

Each names what was wrong, so every edge (CLI, email, web) can tell the
person exactly which field or line to fix.  Raising one always means that
nothing was written.
"""

from __future__ import annotations


class InvalidInput(Exception):
    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


class NotFound(Exception):
    pass


class NotAllowed(Exception):
    """The person may not make this change (any more): for example they no
    longer hold the access it needs.  Raised inside a commit, it undoes it."""


class InvalidRows(InvalidInput):
    """A file with bad rows: each one named by its line, so that the person
    can fix them all at once.  ``problems`` holds the first few, as
    (where, problem) pairs; ``total`` counts them all."""

    def __init__(self, source: str, problems: list[tuple[str, str]], total: int) -> None:
        super().__init__(source, f"{total} bad {'row' if total == 1 else 'rows'}")
        self.problems = problems
        self.total = total
