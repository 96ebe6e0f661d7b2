"""The service desk opens a request for someone, and lists requests:
`mailflow access request EMAIL ORG [--reason]` and `mailflow access list`."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.config import Settings
from mailflow.core.models import Organisation
from tests.support.access_requests import audit_of, requests
from tests.support.cli import mailflow_with, one_error_line
from tests.support.seed import seed_people


@pytest.fixture(autouse=True)
def away_from_project_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def people(session: Session) -> Session:
    seed_people(session)
    rxd = session.scalars(select(Organisation).where(Organisation.code == "RXD")).one()
    rxd.closed_on = date(2026, 1, 1)
    session.commit()
    return session


def test_the_service_desk_opens_a_request_audited_as_the_operator(
    people: Session, settings: Settings
) -> None:
    result = mailflow_with(
        settings, "access", "request", "Raj@Riverside.example", "rxb", "--reason", "outsourced"
    )

    assert result.exit_code == 0, result.output
    [request] = requests(people)
    assert result.stdout.startswith(f"request {request.id} opened: raj@riverside.example for RXB")
    assert (request.via, request.reason, request.state) == ("cli", "outsourced", "open")
    [event] = audit_of(people, "access.requested")
    assert event.actor.startswith("cli") and event.details["via"] == "cli"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("nobody@nowhere.example", "RXB"), "no user nobody@nowhere.example"),
        (("raj@riverside.example", "ZZZ"), "'ZZZ' is not a known organisation"),
        (("raj@riverside.example", "RXD"), "RXD (Dunmore NHS Trust) is closed"),
        (("raj@riverside.example", "RXA"), "raj@riverside.example already answers for RXA"),
        (("sam@castleton.example", "RXB"), "has already asked to answer for RXB"),
    ],
)
def test_a_request_that_cannot_be_opened_is_one_clear_line(
    people: Session, settings: Settings, args: tuple[str, str], says: str
) -> None:
    assert (
        mailflow_with(settings, "access", "request", "sam@castleton.example", "RXB").exit_code == 0
    )

    result = mailflow_with(settings, "access", "request", *args)

    assert result.exit_code == 1
    line = one_error_line(result)
    assert says in line and "nothing was written" in line
    assert len(requests(people)) == 1


def test_requests_are_listed_filtered_and_as_json(people: Session, settings: Settings) -> None:
    mailflow_with(settings, "access", "request", "raj@riverside.example", "RXB")
    mailflow_with(settings, "access", "request", "raj@riverside.example", "RXC")
    rxc = requests(people)[1]
    rxc.state = "denied"  # type: ignore[assignment]
    people.commit()

    listed = mailflow_with(settings, "access", "list")
    pending = mailflow_with(settings, "access", "list", "--pending")
    for_rxc = mailflow_with(settings, "access", "list", "--org", "rxc", "--json")

    assert listed.exit_code == 0 and len(listed.stdout.splitlines()) == 2
    assert "raj@riverside.example  RXB  open" in listed.stdout
    assert pending.stdout.splitlines() == [listed.stdout.splitlines()[0]]
    [row] = json.loads(for_rxc.stdout)
    assert (row["organisation"], row["state"], row["requester"]) == (
        "RXC",
        "denied",
        "raj@riverside.example",
    )
    assert set(row) >= {"id", "created", "expires", "decided_by", "decided_at"}
    unknown = mailflow_with(settings, "access", "list", "--org", "ZZZ")
    assert unknown.exit_code == 1 and "ZZZ" in one_error_line(unknown)
