"""The auditors' report page as a test drives it: the hand-built alert of
tests/support/reporting.py, two auditors with authenticator apps (one
more without), the web app on a clock stopped on Saturday 5 December
(after the deadline, RXB's update overdue), their report links, and a
browser that confirms a code as a person does."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pyotp
import pytest
import sqlalchemy as sa
from sqlalchemy import select, text
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from mailflow.config import Settings
from mailflow.core.models import Base
from mailflow.core.runtime import Runtime
from mailflow.people.users import add_user
from mailflow.reports.report_link import report_url
from mailflow.web import create_app
from tests.support.chasing import Clock
from tests.support.pages import BASE, csrf_of, enrol, user_id
from tests.support.reporting import SATURDAY, build
from tests.support.seed import NOW

OLA = "ola@oversight.example"  # an auditor from the seed
BO = "bo@oversight.example"
UNA = "una@oversight.example"  # an auditor without an authenticator app
RAJ = "raj@riverside.example"  # a responder
ENROLLED = (OLA, BO, RAJ)


@dataclass
class ReportWeb:
    settings: Settings
    runtime: Runtime
    app: Any
    client: TestClient
    session: Session
    engine: sa.Engine
    alert_id: int
    clock: Clock
    secrets: dict[str, str]

    def db(self) -> Session:
        self.session.rollback()
        return self.session

    def link(self, email: str, *, at: datetime | None = None) -> str:
        """The path of the report link a digest to this person carries."""
        url = report_url(self.settings, user_id=user_id(self.db(), email), now=at or self.clock.now)
        return url.removeprefix(self.settings.base_url)

    def code(self, email: str) -> str:
        return pyotp.TOTP(self.secrets[email]).at(self.clock.now)

    def browser(self) -> TestClient:
        return TestClient(self.app, base_url=BASE)

    def confirm(self, client: TestClient, path: str, code: str) -> Any:
        """Open the link's code form and submit ``code``, as a person does."""
        form = client.get(path)
        assert form.status_code == 200, form.text
        return client.post(path, data={"csrf_token": csrf_of(form.text), "code": code})

    def verified_browser(self, email: str) -> tuple[TestClient, str]:
        """A browser that gave ``email``'s code on their report link, and the link."""
        client, path = self.browser(), self.link(email)
        done = self.confirm(client, path, self.code(email))
        assert done.status_code == 200, done.text
        # Each code works once: the next one is a step later.
        self.clock.now += timedelta(seconds=30)
        return client, path


def figures_shown(html: str, reference: str) -> dict[str, str]:
    """The figures the page shows for one alert, by name (their
    machine-readable values)."""
    section = re.search(rf'<section[^>]*id="alert-{reference}".*?</section>', html, re.S)
    body = section.group(0) if section else html
    return dict(re.findall(r'<data data-name="(\w+)" value="([^"]*)"', body))


def codes_listed(html: str) -> list[str]:
    """The organisations in the table, in order."""
    return re.findall(r'<th scope="row">([A-Z0-9]+)</th>', html)


def database_contents(engine: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, to show that looking changed nothing."""
    with engine.connect() as conn:
        return {
            table.name: sorted((tuple(row) for row in conn.execute(select(table))), key=repr)
            for table in Base.metadata.sorted_tables
        }


@pytest.fixture
def report_web(
    settings: Settings, session: Session, engine: sa.Engine, quick_scrypt: None
) -> Iterator[ReportWeb]:
    alert_id = build(session, settings)
    for email, name in ((BO, "Bo Grant"), (UNA, "Una Byrne")):
        add_user(
            session, email=email, name=name, role="auditor", org_code=None, now=NOW, actor="test"
        )
    session.commit()
    secrets = {email: enrol(session, settings, email) for email in ENROLLED}
    assert session.scalar(text("select count(*) from users where national_role = 'auditor'")) == 3
    clock = Clock(SATURDAY)
    runtime = Runtime(settings, clock=clock)
    app = create_app(runtime)
    try:
        with TestClient(app, base_url=BASE) as client:
            yield ReportWeb(
                settings, runtime, app, client, session, engine, alert_id, clock, secrets
            )
    finally:
        runtime.close()
