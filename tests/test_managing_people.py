"""Users: an administrator gives people roles at the organisations they act
for, takes them away again, and lists who holds what."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from mailflow.cli.main import cli
from mailflow.core.errors import InvalidInput, NotFound
from mailflow.core.models import (
    AuditEvent,
    Membership,
    NationalRole,
    Role,
    User,
)
from mailflow.people.organisation_files import parse_organisations
from mailflow.people.organisations import import_organisations
from mailflow.people.users import add_user, list_users, remove_user

PROJECT = Path(__file__).resolve().parent.parent
DEMO_ORGS = PROJECT / "demo" / "orgs.csv"
NOW = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
CLOSED_TRUST = (
    '"RXD","DALESIDE NHS TRUST","Y60","QHM","DALESIDE HOSPITAL","DALE ROAD","","DALESIDE","",'
    '"DA1 1AA","19920401","20190331","","","","","","01234 567000","","","","0","","","","",""'
)


@pytest.fixture(autouse=True)
def away_from_project_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def mailflow(database_url: str, *args: str) -> Result:
    env = {"MAILFLOW_DATABASE_URL": database_url, "MAILFLOW_SECRET_KEY": "x" * 40}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def cli_db(database_url: str, tmp_path: Path) -> str:
    """The demo organisations, and a trust that closed in 2019."""
    assert mailflow(database_url, "orgs", "import", str(DEMO_ORGS)).exit_code == 0
    etr = tmp_path / "etr.csv"
    etr.write_text(CLOSED_TRUST + "\r\n", encoding="utf-8")
    assert mailflow(database_url, "orgs", "import", str(etr)).exit_code == 0
    return database_url


@pytest.fixture
def orgs_in_session(session: Session) -> Session:
    records = parse_organisations(
        DEMO_ORGS.read_text(encoding="utf-8"), source="orgs.csv"
    ) + parse_organisations(CLOSED_TRUST, source="etr.csv")
    import_organisations(session, records, now=NOW, actor="test:admin", source="orgs.csv")
    session.commit()
    return session


def counts(engine: sa.Engine) -> tuple[int, ...]:
    """How many users, memberships and audit events there are."""
    with engine.connect() as conn:
        return tuple(
            int(conn.scalar(select(func.count()).select_from(model)) or 0)
            for model in (User, Membership, AuditEvent)
        )


def roles_of(engine: sa.Engine, email: str) -> tuple[bool, set[tuple[str, str]], str | None]:
    """(active, {(role, organisation code)}, national role) of one user."""
    with Session(engine) as session:
        user = session.scalar(
            select(User)
            .where(User.email == email)
            .options(selectinload(User.memberships).selectinload(Membership.organisation))
        )
        assert user is not None, f"no user {email}"
        return (
            user.active,
            {(str(m.role), m.organisation.code) for m in user.memberships},
            None if user.national_role is None else str(user.national_role),
        )


def listed_emails(result: Result) -> list[str]:
    return [line.split()[0] for line in result.stdout.splitlines()]


# -------------------------------------------------------------- adding


def test_adding_a_responder_creates_the_user_with_one_membership(
    cli_db: str, engine: sa.Engine
) -> None:
    result = mailflow(
        cli_db,
        "users",
        "add",
        "ann.lee@riverside.nhs.example",
        "--name",
        "Ann Lee",
        "--org",
        "RXA",
        "--role",
        "responder",
    )

    assert result.exit_code == 0, result.output
    assert result.stdout == "added ann.lee@riverside.nhs.example (Ann Lee): responder at RXA\n"
    assert roles_of(engine, "ann.lee@riverside.nhs.example") == (True, {("responder", "RXA")}, None)
    listing = mailflow(cli_db, "users", "list").stdout
    assert "ann.lee@riverside.nhs.example" in listing
    assert "responder@RXA" in listing


def test_the_same_person_at_a_second_organisation_is_one_user_with_two_memberships(
    cli_db: str, engine: sa.Engine
) -> None:
    mailflow(
        cli_db,
        "users",
        "add",
        "li.chen@itservices.example",
        "--name",
        "Li Chen",
        "--org",
        "RXB",
        "--role",
        "responder",
    )

    result = mailflow(
        cli_db, "users", "add", "li.chen@itservices.example", "--org", "rxc", "--role", "responder"
    )

    assert result.exit_code == 0, result.output
    assert result.stdout == "updated li.chen@itservices.example (Li Chen): responder at RXC\n"
    assert counts(engine)[:2] == (1, 2)
    assert roles_of(engine, "li.chen@itservices.example") == (
        True,
        {("responder", "RXB"), ("responder", "RXC")},
        None,
    )
    assert "responder@RXB, responder@RXC" in mailflow(cli_db, "users", "list").stdout


def test_adding_an_existing_membership_again_changes_its_role(
    cli_db: str, engine: sa.Engine
) -> None:
    mailflow(
        cli_db,
        "users",
        "add",
        "raj.patel@riverside.nhs.example",
        "--name",
        "Raj Patel",
        "--org",
        "RXA",
        "--role",
        "responder",
    )

    result = mailflow(
        cli_db,
        "users",
        "add",
        "raj.patel@riverside.nhs.example",
        "--org",
        "RXA",
        "--role",
        "administrator",
    )

    assert result.exit_code == 0, result.output
    assert roles_of(engine, "raj.patel@riverside.nhs.example")[1] == {("administrator", "RXA")}
    assert counts(engine)[:2] == (1, 1)


def test_an_auditor_is_national_and_holds_no_organisation(cli_db: str, engine: sa.Engine) -> None:
    result = mailflow(
        cli_db,
        "users",
        "add",
        "ada.price@audit.example",
        "--name",
        "Ada Price",
        "--role",
        "auditor",
    )

    assert result.exit_code == 0, result.output
    assert result.stdout == "added ada.price@audit.example (Ada Price): auditor\n"
    assert roles_of(engine, "ada.price@audit.example") == (True, set(), "auditor")
    assert "auditor" in mailflow(cli_db, "users", "list").stdout


def test_an_auditor_with_an_organisation_is_refused(cli_db: str, engine: sa.Engine) -> None:
    before = counts(engine)

    result = mailflow(
        cli_db,
        "users",
        "add",
        "ada.price@audit.example",
        "--name",
        "Ada Price",
        "--org",
        "RXA",
        "--role",
        "auditor",
    )

    assert result.exit_code == 1
    assert "auditors are national" in result.stderr
    assert "nothing was written" in result.stderr
    assert counts(engine) == before


def test_an_alert_only_contact_can_be_added(cli_db: str, engine: sa.Engine) -> None:
    result = mailflow(
        cli_db,
        "users",
        "add",
        "tom.wren@castleton.nhs.example",
        "--name",
        "Tom Wren",
        "--org",
        "RXC",
        "--role",
        "alert-only",
    )

    assert result.exit_code == 0, result.output
    assert roles_of(engine, "tom.wren@castleton.nhs.example")[1] == {("alert-only", "RXC")}


def test_an_address_is_stored_in_lower_case_and_matched_whatever_its_case(
    cli_db: str, engine: sa.Engine
) -> None:
    mailflow(
        cli_db,
        "users",
        "add",
        "Ann.Lee@Riverside.NHS.Example",
        "--name",
        "Ann Lee",
        "--org",
        "RXA",
        "--role",
        "responder",
    )

    again = mailflow(
        cli_db,
        "users",
        "add",
        "ANN.LEE@riverside.nhs.example",
        "--org",
        "RXB",
        "--role",
        "responder",
    )

    assert again.exit_code == 0, again.output
    assert listed_emails(mailflow(cli_db, "users", "list")) == ["ann.lee@riverside.nhs.example"]
    assert roles_of(engine, "ann.lee@riverside.nhs.example")[1] == {
        ("responder", "RXA"),
        ("responder", "RXB"),
    }


REFUSED = {
    "malformed address": (
        ["ann.lee.riverside.nhs.example", "--name", "Ann", "--org", "RXA", "--role", "responder"],
        1,
        ["email:", "not a valid address"],
    ),
    "unknown organisation": (
        ["ann@riverside.nhs.example", "--name", "Ann", "--org", "RZZ", "--role", "responder"],
        1,
        ["org:", "'RZZ' is not a known organisation"],
    ),
    "closed organisation": (
        ["ann@riverside.nhs.example", "--name", "Ann", "--org", "RXD", "--role", "responder"],
        1,
        ["org:", "RXD", "closed"],
    ),
    "no organisation for an organisation role": (
        ["ann@riverside.nhs.example", "--name", "Ann", "--role", "responder"],
        1,
        ["org:", "--org"],
    ),
    "unknown role": (
        ["ann@riverside.nhs.example", "--name", "Ann", "--org", "RXA", "--role", "owner"],
        2,
        ["--role", "'owner'"],
    ),
    "new user without a name": (
        ["ann@riverside.nhs.example", "--org", "RXA", "--role", "responder"],
        1,
        ["name:", "--name"],
    ),
    "blank name": (
        ["ann@riverside.nhs.example", "--name", "  ", "--org", "RXA", "--role", "responder"],
        1,
        ["name:"],
    ),
}


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_a_bad_request_is_refused_clearly_and_nothing_is_written(
    case: str, cli_db: str, engine: sa.Engine
) -> None:
    mailflow(
        cli_db,
        "users",
        "add",
        "bea.clarke@brookfield.nhs.example",
        "--name",
        "Bea Clarke",
        "--org",
        "RXB",
        "--role",
        "responder",
    )
    before = counts(engine)
    args, exit_code, expected = REFUSED[case]

    result = mailflow(cli_db, "users", "add", *args)

    assert result.exit_code == exit_code
    assert result.stdout == ""
    for text in expected:
        assert text in result.stderr
    assert counts(engine) == before


# ------------------------------------------------------------ removing


def test_removing_one_membership_keeps_the_others(cli_db: str, engine: sa.Engine) -> None:
    for org in ("RXB", "RXC"):
        mailflow(
            cli_db,
            "users",
            "add",
            "li.chen@itservices.example",
            "--name",
            "Li Chen",
            "--org",
            org,
            "--role",
            "responder",
        )

    result = mailflow(cli_db, "users", "remove", "Li.Chen@itservices.example", "--org", "rxb")

    assert result.exit_code == 0, result.output
    assert result.stdout == "removed li.chen@itservices.example from RXB\n"
    assert roles_of(engine, "li.chen@itservices.example") == (True, {("responder", "RXC")}, None)
    assert listed_emails(mailflow(cli_db, "users", "list", "--org", "RXB")) == []
    assert listed_emails(mailflow(cli_db, "users", "list", "--org", "RXC")) == [
        "li.chen@itservices.example"
    ]


def test_removing_every_role_makes_the_user_inactive_but_keeps_them(
    cli_db: str, engine: sa.Engine
) -> None:
    for org in ("RXB", "RXC"):
        mailflow(
            cli_db,
            "users",
            "add",
            "li.chen@itservices.example",
            "--name",
            "Li Chen",
            "--org",
            org,
            "--role",
            "responder",
        )

    result = mailflow(cli_db, "users", "remove", "li.chen@itservices.example")

    assert result.exit_code == 0, result.output
    assert result.stdout == "removed li.chen@itservices.example\n"
    assert roles_of(engine, "li.chen@itservices.example") == (False, set(), None)
    assert counts(engine)[:2] == (1, 0)
    assert listed_emails(mailflow(cli_db, "users", "list")) == []


def test_removing_a_role_the_user_does_not_hold_is_refused(cli_db: str, engine: sa.Engine) -> None:
    mailflow(
        cli_db,
        "users",
        "add",
        "bea.clarke@brookfield.nhs.example",
        "--name",
        "Bea Clarke",
        "--org",
        "RXB",
        "--role",
        "responder",
    )
    before = counts(engine)

    not_held = mailflow(
        cli_db, "users", "remove", "bea.clarke@brookfield.nhs.example", "--org", "RXA"
    )
    nobody = mailflow(cli_db, "users", "remove", "nobody@brookfield.nhs.example")

    assert not_held.exit_code == 1
    assert "holds no role at RXA" in not_held.stderr
    assert nobody.exit_code == 1
    assert "no user nobody@brookfield.nhs.example" in nobody.stderr
    assert counts(engine) == before


# ------------------------------------------------------------- listing


def test_the_list_can_be_narrowed_to_one_organisation(cli_db: str) -> None:
    people = [
        ("ann.lee@riverside.nhs.example", "Ann Lee", "RXA", "administrator"),
        ("raj.patel@riverside.nhs.example", "Raj Patel", "RXA", "responder"),
        ("bea.clarke@brookfield.nhs.example", "Bea Clarke", "RXB", "responder"),
        ("tom.wren@castleton.nhs.example", "Tom Wren", "RXC", "alert-only"),
    ]
    for email, name, org, role in people:
        mailflow(cli_db, "users", "add", email, "--name", name, "--org", org, "--role", role)

    everyone = mailflow(cli_db, "users", "list")
    riverside = mailflow(cli_db, "users", "list", "--org", "rxa")
    unknown = mailflow(cli_db, "users", "list", "--org", "RZZ")

    assert listed_emails(everyone) == sorted(email for email, *_ in people)
    assert listed_emails(riverside) == [
        "ann.lee@riverside.nhs.example",
        "raj.patel@riverside.nhs.example",
    ]
    assert unknown.exit_code == 1
    assert "'RZZ' is not a known organisation" in unknown.stderr


# ---------------------------------------------------- the domain directly


def test_the_domain_adds_a_person_at_two_organisations(orgs_in_session: Session) -> None:
    session = orgs_in_session

    first = add_user(
        session,
        email="Li.Chen@ITServices.example",
        name="Li Chen",
        role="responder",
        org_code="RXB",
        now=NOW,
        actor="test:admin",
    )
    second = add_user(
        session,
        email="li.chen@itservices.example",
        name=None,
        role="alert-only",
        org_code="RXC",
        now=NOW,
        actor="test:admin",
    )
    session.commit()

    assert first.created and not second.created
    assert first.user.id == second.user.id
    assert first.user.email == "li.chen@itservices.example"
    assert sorted((m.organisation.code, m.role) for m in first.user.memberships) == [
        ("RXB", Role.RESPONDER),
        ("RXC", Role.ALERT_ONLY),
    ]
    events = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "user.role_granted")
    ).all()
    assert [e.details["organisation"] for e in events] == ["RXB", "RXC"]


def test_the_domain_refuses_a_closed_organisation(orgs_in_session: Session) -> None:
    session = orgs_in_session

    with pytest.raises(InvalidInput) as caught:
        add_user(
            session,
            email="sam@daleside.nhs.example",
            name="Sam",
            role="responder",
            org_code="RXD",
            now=NOW,
            actor="test:admin",
        )
    session.rollback()

    assert caught.value.where == "org"
    assert "closed" in caught.value.problem
    assert session.scalar(select(func.count()).select_from(User)) == 0


def test_the_domain_refuses_an_unknown_role(orgs_in_session: Session) -> None:
    with pytest.raises(InvalidInput) as caught:
        add_user(
            orgs_in_session,
            email="sam@castleton.nhs.example",
            name="Sam",
            role="superuser",
            org_code="RXC",
            now=NOW,
            actor="test:admin",
        )

    assert caught.value.where == "role"
    assert "'superuser'" in caught.value.problem


def test_the_domain_grants_and_removes_the_auditor_role(orgs_in_session: Session) -> None:
    session = orgs_in_session
    added = add_user(
        session,
        email="ada.price@audit.example",
        name="Ada Price",
        role="auditor",
        org_code=None,
        now=NOW,
        actor="test:admin",
    )
    session.commit()
    assert added.user.national_role is NationalRole.AUDITOR

    removed = remove_user(
        session, email="ada.price@audit.example", org_code=None, now=NOW, actor="test:admin"
    )
    session.commit()

    assert removed.national_role is None
    assert removed.active is False
    assert list_users(session) == []
    assert session.scalar(select(func.count()).select_from(User)) == 1


def test_adding_a_removed_user_again_makes_them_active(orgs_in_session: Session) -> None:
    session = orgs_in_session
    add_user(
        session,
        email="raj@riverside.nhs.example",
        name="Raj Patel",
        role="responder",
        org_code="RXA",
        now=NOW,
        actor="test:admin",
    )
    remove_user(
        session, email="raj@riverside.nhs.example", org_code=None, now=NOW, actor="test:admin"
    )
    session.commit()

    again = add_user(
        session,
        email="raj@riverside.nhs.example",
        name=None,
        role="responder",
        org_code="RXB",
        now=NOW,
        actor="test:admin",
    )
    session.commit()

    assert again.created is False
    assert again.user.active is True
    assert [u.email for u in list_users(session, org_code="RXB")] == ["raj@riverside.nhs.example"]
    assert list_users(session, org_code="RXA") == []


def test_the_domain_refuses_to_remove_someone_unknown(orgs_in_session: Session) -> None:
    with pytest.raises(NotFound) as caught:
        remove_user(
            orgs_in_session, email="Nobody@Example.org", org_code=None, now=NOW, actor="test:admin"
        )

    assert str(caught.value) == "no user nobody@example.org"
