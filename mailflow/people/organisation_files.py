"""Organisation lists: our own CSV with a header, or an NHS ODS extract.

Our CSV: a header row ``code,name,type[,parent]``.

ODS extracts as NHS Digital publishes them (``etr.csv`` for NHS trusts,
``eccg.csv`` for commissioning bodies) have no header; the columns that
matter are 1 (code), 2 (name), 11 (open date) and 12 (close date), dates
as YYYYMMDD.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime
from pathlib import Path

from mailflow.core.errors import InvalidInput
from mailflow.core.files import read_text_file
from mailflow.people.organisations import OrganisationRecord

CODE_PATTERN = re.compile(r"^[A-Z0-9]{3,10}$")
TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
OUR_COLUMNS = ("code", "name", "type")
OPTIONAL_COLUMNS = ("parent",)
ODS_TYPES = {"etr": "trust", "eccg": "icb"}
ODS_MIN_COLUMNS = 12
MAX_NAME_LENGTH = 200


def read_organisation_file(path: Path, org_type: str | None = None) -> list[OrganisationRecord]:
    """Read and check every row; raise InvalidInput naming the first bad line."""
    text = read_text_file(path)
    return parse_organisations(text, source=path.name, org_type=org_type)


def parse_organisations(
    text: str, *, source: str, org_type: str | None = None
) -> list[OrganisationRecord]:
    numbered = _records_with_line_numbers(text)
    if not numbered:
        raise InvalidInput(source, "the file has no organisations in it")
    if org_type is not None and not TYPE_PATTERN.match(org_type):
        raise InvalidInput("--type", f"{org_type!r} is not a valid type (lower-case word)")

    first_cell = numbered[0][1][0].strip().lower()
    if first_cell == "code":
        records = _parse_with_header(numbered, source, org_type)
    else:
        records = _parse_ods(numbered, source, org_type)
    if not records:
        raise InvalidInput(source, "the file has a header but no organisations")

    seen: dict[str, int] = {}
    for record in records:
        if record.code in seen:
            raise InvalidInput(
                f"{source} line {record.line}",
                f"organisation {record.code} already appears on line {seen[record.code]}",
            )
        seen[record.code] = record.line
    return records


def _records_with_line_numbers(text: str) -> list[tuple[int, list[str]]]:
    """Each non-blank CSV record with the line of the file it starts on (a
    quoted field may run over several lines, so records and lines differ)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    numbered = []
    last_line = 0
    for row in reader:
        start, last_line = last_line + 1, reader.line_num
        if any(cell.strip() for cell in row):
            numbered.append((start, row))
    return numbered


def _parse_with_header(
    numbered: list[tuple[int, list[str]]], source: str, org_type: str | None
) -> list[OrganisationRecord]:
    header_line, header = numbered[0]
    columns = [c.strip().lower() for c in header]
    missing = [c for c in OUR_COLUMNS if c not in columns]
    unknown = [c for c in columns if c not in OUR_COLUMNS + OPTIONAL_COLUMNS]
    if missing:
        raise InvalidInput(f"{source} line {header_line}", f"missing column {missing[0]!r}")
    if unknown:
        raise InvalidInput(f"{source} line {header_line}", f"unknown column {unknown[0]!r}")
    if len(set(columns)) != len(columns):
        raise InvalidInput(f"{source} line {header_line}", "a column is named twice")

    records = []
    for line, row in numbered[1:]:
        where = f"{source} line {line}"
        if len(row) != len(columns):
            raise InvalidInput(where, f"expected {len(columns)} fields, found {len(row)}")
        cells = {name: value.strip() for name, value in zip(columns, row, strict=True)}
        records.append(
            OrganisationRecord(
                line=line,
                code=_code(cells["code"], where),
                name=_name(cells["name"], where),
                type=_type(org_type or cells["type"], where),
                parent_code=_code(cells["parent"], where) if cells.get("parent") else None,
            )
        )
    return records


def _parse_ods(
    numbered: list[tuple[int, list[str]]], source: str, org_type: str | None
) -> list[OrganisationRecord]:
    stem = Path(source).stem.lower()
    org_type = org_type or ODS_TYPES.get(stem)
    if org_type is None:
        raise InvalidInput(
            source,
            "this looks like an ODS extract (no header row) but its name does not say what "
            f"kind of organisation it lists ({', '.join(f'{k}.csv' for k in ODS_TYPES)}): "
            "pass --type",
        )
    records = []
    for line, row in numbered:
        where = f"{source} line {line}"
        if len(row) < ODS_MIN_COLUMNS:
            raise InvalidInput(
                where,
                f"an ODS row has at least {ODS_MIN_COLUMNS} fields, found {len(row)} "
                "(a CSV of our own needs the header row code,name,type)",
            )
        records.append(
            OrganisationRecord(
                line=line,
                code=_code(row[0].strip(), where),
                name=_name(row[1].strip(), where),
                type=org_type,
                opened_on=_ods_date(row[10].strip(), where, "open date (column 11)"),
                closed_on=_ods_date(row[11].strip(), where, "close date (column 12)"),
            )
        )
    return records


def _code(value: str, where: str) -> str:
    code = value.upper()
    if not CODE_PATTERN.match(code):
        raise InvalidInput(
            where, f"{value!r} is not an organisation code (3 to 10 letters or digits)"
        )
    return code


def _name(value: str, where: str) -> str:
    # A name wrapped over lines in a spreadsheet cell is one name.
    value = " ".join(value.split())
    if not value:
        raise InvalidInput(where, "the name is empty")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidInput(where, f"the name is longer than {MAX_NAME_LENGTH} characters")
    if any(not c.isprintable() for c in value):
        raise InvalidInput(where, "the name contains control characters")
    return value


def _type(value: str, where: str) -> str:
    value = value.strip().lower()
    if not TYPE_PATTERN.match(value):
        raise InvalidInput(
            where, f"{value!r} is not a valid type (a lower-case word such as trust)"
        )
    return value


def _ods_date(value: str, where: str, what: str) -> date | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y%m%d").date()
    except ValueError as exc:
        raise InvalidInput(where, f"{what} {value!r} is not a date as YYYYMMDD") from exc
