"""People lists for `mailflow users import`: a CSV with the header
``email,name,org,role`` (in any order), one role a row, UTF-8 with or
without a byte-order mark.  A person with roles at several organisations
has a row for each; an auditor's ``org`` is empty (the role is national).

Every row is checked here, before the database is touched; the import
(people_import) then checks the good ones against the database, and every
bad row is reported with its line (up to MAX_PROBLEMS of them): a file is
imported whole or not at all.  The file is bounded in bytes and rows.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mailflow.core.errors import InvalidInput, InvalidRows
from mailflow.core.files import read_text_file
from mailflow.core.models import NationalRole
from mailflow.core.text import FORMULA_STARTS
from mailflow.people.organisation_files import CODE_PATTERN
from mailflow.people.users import ROLE_NAMES, checked_name, normalise_email

COLUMNS = ("email", "name", "org", "role")
# What `users list --csv` prints besides, so its output imports as it is:
# read and ignored (a file adds people; it changes no one's digest).
LISTING_COLUMNS = ("digest", "welcome_bounced_at", "welcome_bounce")
# 50,000 roles of about 100 bytes each, with room to spare.
MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_ROWS = 50_000
# More than a screenful of errors helps no one: the first ones show what
# is wrong, and the count says how much.
MAX_PROBLEMS = 20


@dataclass(frozen=True)
class PersonRow:
    """One role for one person, as the file gives it; ``line`` is where."""

    line: int
    email: str
    name: str
    org_code: str | None
    role: str


class Problems:
    """The bad rows found, by line: those the file's form shows, then
    those only the database can (an unknown organisation)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.found: list[tuple[int, str]] = []

    def add(self, line: int, problem: str) -> None:
        self.found.append((line, problem))

    def raise_any(self) -> None:
        """Raise InvalidRows with the first MAX_PROBLEMS by line, if any."""
        if self.found:
            first = sorted(self.found, key=lambda found: found[0])[:MAX_PROBLEMS]
            kept = [(f"{self.source} line {line}", problem) for line, problem in first]
            raise InvalidRows(self.source, kept, len(self.found))


@dataclass(frozen=True)
class PeopleFile:
    """The good rows of a file, and the problems of the others: the import
    goes on to check the good rows against the database, so that one run
    names every bad line."""

    rows: list[PersonRow]
    problems: Problems


def read_people_file(path: Path) -> PeopleFile:
    """Read and check every row.  A file that cannot be read as a people
    file at all is an InvalidInput; bad rows are kept in its problems."""
    text = read_text_file(path, max_bytes=MAX_FILE_BYTES)
    return parse_people(text, source=path.name)


def parse_people(text: str, *, source: str) -> PeopleFile:
    records = _records(text, source)
    header_line, header = next(records, (0, []))
    if not header:
        raise InvalidInput(source, "the file is empty (it needs the header email,name,org,role)")
    columns = _columns(header, f"{source} line {header_line}")
    problems = Problems(source)
    rows: list[PersonRow] = []
    for line, record in records:
        if len(rows) + len(problems.found) >= MAX_ROWS:
            raise InvalidInput(source, f"more than {MAX_ROWS:,} rows: split the file")
        if len(record) != len(columns):
            problems.add(line, f"expected {len(columns)} fields, found {len(record)}")
            continue
        try:
            rows.append(_row(line, dict(zip(columns, record, strict=True))))
        except InvalidInput as exc:
            problems.add(line, exc.problem)
    if not rows and not problems.found:
        raise InvalidInput(source, "the file has a header but no people")
    return PeopleFile(rows, problems)


def _records(text: str, source: str) -> Iterator[tuple[int, list[str]]]:
    """Each non-blank CSV record with the line it starts on (a quoted field
    may run over lines).  Strict: a stray quote is an error, not a guess."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    last_line = 0
    while True:
        start = last_line + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InvalidInput(
                f"{source} line {reader.line_num}", f"not valid CSV: {exc}"
            ) from None
        last_line = reader.line_num
        if any(cell.strip() for cell in record):
            yield start, record


def _columns(header: list[str], where: str) -> list[str]:
    columns = [c.strip().lower() for c in header]
    missing = [c for c in COLUMNS if c not in columns]
    unknown = [c for c in columns if c not in COLUMNS + LISTING_COLUMNS]
    if missing or unknown:
        wrong = ", ".join(
            [f"missing column {c!r}" for c in missing] + [f"unknown column {c!r}" for c in unknown]
        )
        raise InvalidInput(where, f"{wrong} (the header is email,name,org,role)")
    if len(set(columns)) != len(columns):
        raise InvalidInput(where, "a column is named twice")
    return columns


def unneutralised(value: str) -> str:
    """A name as `users list --csv` wrote it, back as it is stored: the
    quote it puts before a cell that would start a formula comes off."""
    if value.startswith("'") and value[1:].startswith(FORMULA_STARTS):
        return value[1:]
    return value


def _row(line: int, cells: dict[str, str]) -> PersonRow:
    """One row checked the way `users add` checks its arguments."""
    email = normalise_email(cells["email"]).strip()
    name = checked_name(" ".join(unneutralised(cells["name"]).split()))
    assert name is not None  # a string in, a string out
    role = cells["role"].strip().lower()
    if role not in ROLE_NAMES:
        raise InvalidInput("role", f"{role!r} is not a role (one of {', '.join(ROLE_NAMES)})")
    org = cells["org"].strip().upper()
    if role == NationalRole.AUDITOR:
        if org:
            raise InvalidInput("org", "auditors are national: leave org empty")
        return PersonRow(line, email, name, None, role)
    if not org:
        raise InvalidInput("org", f"the {role} role is held for an organisation: give its code")
    if not CODE_PATTERN.match(org):
        raise InvalidInput(
            "org", f"{org!r} is not an organisation code (3 to 10 letters or digits)"
        )
    return PersonRow(line, email, name, org, role)
