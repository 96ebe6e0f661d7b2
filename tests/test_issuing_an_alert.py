"""Issuing an alert: a publisher writes the alert in a TOML or JSON file and
runs `mailflow alert issue FILE`; one email per person is queued, or, if
the file is wrong in any way, they are told which field and nothing is
written."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailflow.alerts.alert_files import parse_alert_spec
from mailflow.alerts.issuing import issue_alert
from mailflow.cli.main import cli
from mailflow.core.models import (
    Alert,
    AuditEvent,
    Delivery,
    DeliveryState,
    Job,
    JobState,
    User,
)
from mailflow.people.organisation_files import parse_organisations
from mailflow.people.organisations import import_organisations
from mailflow.people.users import add_user, remove_user

PROJECT = Path(__file__).resolve().parent.parent
DEMO_ORGS = PROJECT / "demo" / "orgs.csv"
NOW = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
CLOSED_TRUST = (
    '"RXD","DALESIDE NHS TRUST","Y60","QHM","DALESIDE HOSPITAL","DALE ROAD","","DALESIDE","",'
    '"DA1 1AA","19920401","20190331","","","","","","01234 567000","","","","0","","","","",""'
)
PEOPLE = [
    ("ann.lee@riverside.nhs.example", "Ann Lee", "administrator", "RXA"),
    ("raj.patel@riverside.nhs.example", "Raj Patel", "responder", "RXA"),
    ("bea.clarke@brookfield.nhs.example", "Bea Clarke", "responder", "RXB"),
    ("sam.okafor@castleton.nhs.example", "Sam Okafor", "responder", "RXC"),
    ("tom.wren@castleton.nhs.example", "Tom Wren", "alert-only", "RXC"),
    ("li.chen@itservices.example", "Li Chen", "responder", "RXB"),
    ("li.chen@itservices.example", "Li Chen", "responder", "RXC"),
    ("ola.ade@northmoor.nhs.example", "Ola Ade", "responder", "QAB"),
    ("ada.price@audit.example", "Ada Price", "auditor", None),
    ("gone.away@riverside.nhs.example", "Gone Away", "responder", "RXA"),
]
ACTIVE_AT = {
    "RXA": {"ann.lee@riverside.nhs.example", "raj.patel@riverside.nhs.example"},
    "RXB": {"bea.clarke@brookfield.nhs.example", "li.chen@itservices.example"},
    "RXC": {
        "sam.okafor@castleton.nhs.example",
        "tom.wren@castleton.nhs.example",
        "li.chen@itservices.example",
    },
    "QAB": {"ola.ade@northmoor.nhs.example"},
}
ALERT: dict[str, Any] = {
    "title": "Remote code execution in Example VPN Gateway",
    "severity": "high",
    "summary": "An unauthenticated attacker can run code on the appliance.",
    "affected": ["Example VPN Gateway 9.0 to 9.4"],
    "cves": ["CVE-2026-41234"],
    "remediation": "Upgrade to 9.4.2.",
    "references": ["https://example.org/advisories/vpn-2026-41234"],
    "deadline_hours": 48,
}
KEY = re.compile(r"^[a-z2-7]{32}$")


@pytest.fixture(autouse=True)
def away_from_project_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def seeded(database_url: str, engine: sa.Engine) -> str:
    """The demo organisations, a closed trust, and the people above; the
    last of them has since been removed."""
    with Session(engine) as session:
        records = parse_organisations(
            DEMO_ORGS.read_text(encoding="utf-8"), source="orgs.csv"
        ) + parse_organisations(CLOSED_TRUST, source="etr.csv")
        import_organisations(session, records, now=NOW, actor="test:admin", source="orgs")
        for email, name, role, org in PEOPLE:
            add_user(
                session,
                email=email,
                name=name,
                role=role,
                org_code=org,
                now=NOW,
                actor="test:admin",
            )
        remove_user(
            session,
            email="gone.away@riverside.nhs.example",
            org_code=None,
            now=NOW,
            actor="test:admin",
        )
        session.commit()
    return database_url


def mailflow(database_url: str, *args: str) -> Result:
    env = {"MAILFLOW_DATABASE_URL": database_url, "MAILFLOW_SECRET_KEY": "x" * 40}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def toml_text(data: dict[str, Any]) -> str:
    """Top-level fields first, then tables; JSON's strings, numbers and
    arrays of strings are also TOML's."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for name, table in data.items():
        if isinstance(table, dict):
            lines.append(f"[{name}]")
            lines.extend(f"{k} = {json.dumps(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


def alert_file(folder: Path, name: str = "alert.toml", **changes: Any) -> Path:
    data = {**ALERT, **changes}
    data = {k: v for k, v in data.items() if v is not None}
    path = folder / name
    text = json.dumps(data) if name.endswith(".json") else toml_text(data)
    path.write_text(text, encoding="utf-8")
    return path


def counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            model.__tablename__: int(conn.scalar(select(func.count()).select_from(model)) or 0)
            for model in (Alert, Delivery, Job, AuditEvent)
        }


def shown(database_url: str, reference: str) -> dict[str, Any]:
    result = mailflow(database_url, "alert", "show", reference, "--json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


# --------------------------------------------------------------- issuing


def test_issuing_a_toml_alert_prints_its_reference_and_queues_the_emails(
    seeded: str, engine: sa.Engine, tmp_path: Path
) -> None:
    path = alert_file(tmp_path, audience={"organisations": ["RXA", "RXB"]})

    result = mailflow(seeded, "alert", "issue", str(path))

    assert result.exit_code == 0, result.output
    assert result.stdout == "CC-0001\n"
    assert "4 emails queued for 2 organisations" in result.stderr
    with Session(engine) as session:
        alert = session.scalar(select(Alert))
        assert alert is not None
        assert alert.reference == "CC-0001"
        assert alert.cves == ["CVE-2026-41234"]
        assert alert.response_required is True
        assert alert.deadline_at - alert.issued_at == timedelta(hours=48)
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "alert.issued")
        ).all()
        assert [(e.subject, e.details["recipients"]) for e in events] == [("alert:CC-0001", 4)]


def test_issuing_a_json_alert_works_the_same(seeded: str, tmp_path: Path) -> None:
    path = alert_file(
        tmp_path, "alert.json", reference="CC-0100", audience={"organisations": ["RXC"]}
    )

    result = mailflow(seeded, "alert", "issue", str(path))

    assert result.exit_code == 0, result.output
    assert result.stdout == "CC-0100\n"
    data = shown(seeded, "cc-0100")
    assert data["title"] == ALERT["title"]
    assert data["audience"] == ["RXC"]


def test_references_are_numbered_on_from_the_highest_issued(seeded: str, tmp_path: Path) -> None:
    first = mailflow(seeded, "alert", "issue", str(alert_file(tmp_path)))
    second = mailflow(seeded, "alert", "issue", str(alert_file(tmp_path)))
    named = mailflow(seeded, "alert", "issue", str(alert_file(tmp_path, reference="CC-4720")))
    after_named = mailflow(seeded, "alert", "issue", str(alert_file(tmp_path)))

    assert [r.stdout for r in (first, second, named, after_named)] == [
        "CC-0001\n",
        "CC-0002\n",
        "CC-4720\n",
        "CC-4721\n",
    ]


def test_the_demo_alert_can_be_issued(seeded: str) -> None:
    result = mailflow(seeded, "alert", "issue", str(PROJECT / "demo" / "alert.toml"))

    assert result.exit_code == 0, result.output
    reference = result.stdout.strip()
    assert re.fullmatch(r"CC-\d{4}", reference)
    assert shown(seeded, reference)["audience"] == ["RXA", "RXB", "RXC"]


# ----------------------------------------------------------------- audience


def test_an_audience_by_organisation_reaches_each_person_once(
    seeded: str, engine: sa.Engine, tmp_path: Path
) -> None:
    path = alert_file(tmp_path, audience={"organisations": ["rxb", "RXC"]})

    reference = mailflow(seeded, "alert", "issue", str(path)).stdout.strip()

    data = shown(seeded, reference)
    assert data["audience"] == ["RXB", "RXC"]
    recipients = [d["recipient"] for d in data["deliveries"]]
    assert sorted(recipients) == sorted(ACTIVE_AT["RXB"] | ACTIVE_AT["RXC"])
    assert len(recipients) == len(set(recipients)) == 4
    by_recipient = {d["recipient"]: d for d in data["deliveries"]}
    assert by_recipient["li.chen@itservices.example"]["organisations"] == ["RXB", "RXC"]
    assert "tom.wren@castleton.nhs.example" in by_recipient  # alert-only contacts get it too
    assert {d["state"] for d in data["deliveries"]} == {"queued"}
    assert data["delivery_counts"] == {"queued": 4}


def test_an_audience_by_type_reaches_open_organisations_of_that_type(
    seeded: str, tmp_path: Path
) -> None:
    path = alert_file(tmp_path, audience={"types": ["ICB"]})

    reference = mailflow(seeded, "alert", "issue", str(path)).stdout.strip()

    data = shown(seeded, reference)
    assert data["audience"] == ["QAB"]
    assert [d["recipient"] for d in data["deliveries"]] == ["ola.ade@northmoor.nhs.example"]


def test_without_an_audience_every_open_organisation_is_reached(
    seeded: str, engine: sa.Engine, tmp_path: Path
) -> None:
    reference = mailflow(seeded, "alert", "issue", str(alert_file(tmp_path))).stdout.strip()

    data = shown(seeded, reference)
    assert data["audience"] == ["QAB", "RXA", "RXB", "RXC"]  # not RXD, which has closed
    recipients = {d["recipient"] for d in data["deliveries"]}
    assert recipients == set().union(*ACTIVE_AT.values())
    assert "ada.price@audit.example" not in recipients
    assert "gone.away@riverside.nhs.example" not in recipients
    assert len(data["deliveries"]) == 7


def test_each_delivery_gets_its_own_reply_and_bounce_keys_and_one_job_sends_them(
    seeded: str, engine: sa.Engine, tmp_path: Path
) -> None:
    mailflow(seeded, "alert", "issue", str(alert_file(tmp_path)))

    with Session(engine) as session:
        alert = session.scalar(select(Alert))
        assert alert is not None
        deliveries = session.scalars(select(Delivery)).all()
        jobs = session.scalars(select(Job)).all()
        inactive = session.scalar(select(User).where(User.active.is_(False)))

    keys = [d.reply_key for d in deliveries] + [d.bounce_key for d in deliveries]
    assert len(deliveries) == 7
    assert all(KEY.match(key) for key in keys), keys
    assert len(set(keys)) == len(keys)
    assert len({d.message_id for d in deliveries}) == 7
    assert all(d.state is DeliveryState.QUEUED and d.attempts == 0 for d in deliveries)
    assert inactive is not None
    assert inactive.id not in {d.user_id for d in deliveries}
    assert [(j.kind, j.state, j.payload) for j in jobs] == [
        ("deliver_alert", JobState.PENDING, {"alert_id": alert.id})
    ]


def test_the_domain_reports_organisations_with_no_one_to_email(
    seeded: str, engine: sa.Engine
) -> None:
    with Session(engine) as session:
        import_organisations(
            session,
            parse_organisations("code,name,type\nRXF,Fenside NHS Trust,trust\n", source="x"),
            now=NOW,
            actor="test:admin",
            source="x",
        )
        spec = parse_alert_spec(
            {**ALERT, "audience": {"organisations": ["RXA", "RXF"]}}, source="test"
        )

        issued = issue_alert(
            session, spec, now=NOW, actor="test:publisher", mail_domain="alerts.example.org"
        )
        session.commit()

        assert issued.alert.reference == "CC-0001"
        assert issued.alert.issued_by == "test:publisher"
        assert (issued.organisations, issued.recipients) == (2, 2)
        assert issued.organisations_without_recipients == ["RXF"]
        message_ids = session.scalars(select(Delivery.message_id)).all()
        assert all(m.endswith("@alerts.example.org") for m in message_ids)


def test_showing_an_unknown_alert_is_refused(seeded: str) -> None:
    result = mailflow(seeded, "alert", "show", "CC-9999", "--json")

    assert result.exit_code == 1
    assert result.stdout == ""
    assert "no alert CC-9999" in result.stderr


def test_showing_an_alert_as_text_lists_each_email(seeded: str, tmp_path: Path) -> None:
    path = alert_file(tmp_path, audience={"organisations": ["QAB"]})
    reference = mailflow(seeded, "alert", "issue", str(path)).stdout.strip()

    result = mailflow(seeded, "alert", "show", reference)

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{reference}  [HIGH]  {ALERT['title']}\n")
    assert "emails    1 queued" in result.stdout
    assert re.search(r"^ola\.ade@northmoor\.nhs\.example\s+QAB\s+queued\s+0", result.stdout, re.M)


# ------------------------------------------------------------ bad files


def without(field: str) -> dict[str, Any]:
    return {field: None}


BAD_ALERTS: dict[str, tuple[str, dict[str, Any] | bytes, list[str]]] = {
    "missing title": ("alert.toml", without("title"), ["field title", "required"]),
    "missing severity": ("alert.toml", without("severity"), ["field severity", "required"]),
    "missing summary": ("alert.json", without("summary"), ["field summary", "required"]),
    "missing remediation": (
        "alert.toml",
        without("remediation"),
        ["field remediation", "required"],
    ),
    "blank title": ("alert.toml", {"title": "   "}, ["field title"]),
    "bad severity": ("alert.toml", {"severity": "urgent"}, ["field severity", "'high'"]),
    "unknown field": ("alert.toml", {"colour": "red"}, ["field colour", "unknown field"]),
    "bad CVE": ("alert.toml", {"cves": ["CVE-26-1"]}, ["field cves", "'CVE-26-1'"]),
    "non-http reference": (
        "alert.json",
        {"references": ["ftp://example.org/advisory"]},
        ["field references", "ftp://example.org/advisory"],
    ),
    "deadline of 0 hours": ("alert.toml", {"deadline_hours": 0}, ["field deadline_hours"]),
    "deadline of 10000 hours": ("alert.toml", {"deadline_hours": 10000}, ["field deadline_hours"]),
    "malformed reference": (
        "alert.toml",
        {"reference": "4720"},
        ["field reference", "like CC-4720"],
    ),
    "reference already issued": (
        "alert.toml",
        {"reference": "CC-0001"},
        ["field reference", "CC-0001", "already"],
    ),
    "unknown organisation": (
        "alert.toml",
        {"audience": {"organisations": ["RXA", "RZZ"]}},
        ["field audience.organisations", "RZZ"],
    ),
    "closed organisation": (
        "alert.toml",
        {"audience": {"organisations": ["RXD"]}},
        ["field audience.organisations", "RXD", "closed"],
    ),
    "unknown type": (
        "alert.toml",
        {"audience": {"types": ["pharmacy"]}},
        ["field audience.types", "pharmacy"],
    ),
    "unknown audience key": (
        "alert.toml",
        {"audience": {"regions": ["north"]}},
        ["field audience.regions", "unknown field"],
    ),
    "invalid TOML": ("alert.toml", b'title = "Unclosed\nseverity = "high"\n', ["not valid TOML"]),
    "invalid JSON": ("alert.json", b'{"title": "x",}', ["not valid JSON"]),
    "JSON that is not an object": ("alert.json", b'["title"]', ["a table of fields"]),
    "not UTF-8": ("alert.toml", b'title = "Caf\xe9 gateway"\n', ["not UTF-8"]),
    "a .txt file": ("alert.txt", b"title: something\n", ["alert.txt", ".toml or .json"]),
}


@pytest.mark.parametrize("case", BAD_ALERTS, ids=list(BAD_ALERTS))
def test_a_bad_alert_file_is_refused_naming_the_field_and_nothing_is_written(
    case: str, seeded: str, engine: sa.Engine, tmp_path: Path
) -> None:
    first = mailflow(seeded, "alert", "issue", str(alert_file(tmp_path, "first.toml")))
    assert first.stdout == "CC-0001\n"
    before = counts(engine)
    name, content, expected = BAD_ALERTS[case]
    if isinstance(content, bytes):
        path = tmp_path / name
        path.write_bytes(content)
    else:
        path = alert_file(tmp_path, name, **content)

    result = mailflow(seeded, "alert", "issue", str(path))

    assert result.exit_code == 1
    assert result.stdout == ""
    for text in expected:
        assert text in result.stderr
    assert "nothing was written" in result.stderr
    assert counts(engine) == before
