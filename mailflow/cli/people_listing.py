"""`mailflow users list` as text, JSON or CSV, written a page of people at
a time (a national list has tens of thousands), each with their roles and
whether their welcome email bounced."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

import click

from mailflow.core.models import NationalRole, User
from mailflow.core.outgoing import Bounce
from mailflow.reports.csv_export import write_table

# One row a role, the columns `users import` reads first; it reads and
# ignores the rest, so a listing imports as it is.
CSV_HEADER = ("email", "name", "org", "role", "digest", "welcome_bounced_at", "welcome_bounce")

Page = list[tuple[User, Bounce | None]]


def user_line(user: User, bounce: Bounce | None) -> str:
    roles = [f"{m.role}@{m.organisation.code}" for m in user.memberships]
    if user.national_role:
        roles.append(str(user.national_role))
    if user.national_role == NationalRole.AUDITOR:
        roles.append(f"digest {user.digest}")
    line = f"{user.email:40} {user.name:30} {', '.join(sorted(roles))}"
    if bounce:
        line += f"  welcome: bounced {bounce.at:%Y-%m-%d} ({bounce.report})"
    return line


def write_text(pages: Iterable[Page]) -> None:
    for page in pages:
        for user, bounce in page:
            click.echo(user_line(user, bounce))


def user_data(user: User, bounce: Bounce | None) -> dict[str, Any]:
    return {
        "email": user.email,
        "name": user.name,
        "roles": [
            {"org": m.organisation.code, "role": str(m.role)}
            for m in sorted(user.memberships, key=lambda m: m.organisation.code)
        ],
        "national_role": str(user.national_role) if user.national_role else None,
        "digest": str(user.digest) if user.national_role == NationalRole.AUDITOR else None,
        "welcome_bounced": (
            {"at": bounce.at.isoformat(), "report": bounce.report} if bounce else None
        ),
    }


def write_json(pages: Iterable[Page], out: TextIO) -> None:
    """One JSON array, written as the pages come (never whole in memory)."""
    out.write("[")
    first = True
    for page in pages:
        for user, bounce in page:
            out.write("\n  " if first else ",\n  ")
            out.write(json.dumps(user_data(user, bounce)))
            first = False
    out.write("\n]\n" if not first else "]\n")


def csv_rows(user: User, bounce: Bounce | None) -> Iterator[tuple[object, ...]]:
    digest = user.digest if user.national_role == NationalRole.AUDITOR else None
    after = (digest, bounce.at if bounce else None, bounce.report if bounce else None)
    for m in sorted(user.memberships, key=lambda m: m.organisation.code):
        yield (user.email, user.name, m.organisation.code, m.role, *after)
    if user.national_role:
        yield (user.email, user.name, None, user.national_role, *after)


def write_csv(pages: Iterable[Page], out: TextIO) -> None:
    """A row a role, with a header; text that would start a formula in a
    spreadsheet is neutralised, as in every CSV mailflow writes."""
    rows = (row for page in pages for user, bounce in page for row in csv_rows(user, bounce))
    write_table(out, CSV_HEADER, rows)
