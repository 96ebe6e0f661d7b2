"""The pages of asking for access: the confirm page of a request read
from an email (and every link it refuses), and the page behind the
"Request access for another organisation" footer link."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from mailflow.core.models import PendingAction
from mailflow.core.runtime import utc_now
from mailflow.people.users import remove_user
from tests.support.access_requests import (
    audit_of,
    new_request_link,
    pending_request_link,
    requests,
)
from tests.support.pages import Web, csrf_of, post_form, row_counts, user_id, verified_client

RAJ = "raj@riverside.example"
BEA = "bea@brookfield.example"


def test_a_confirm_link_of_someone_else_is_refused_and_changes_nothing(web: Web) -> None:
    path = pending_request_link(web.db(), web.settings, RAJ, ["RXB"])
    bea, _ = verified_client(web, user_id(web.db(), BEA))

    page = bea.get(path)

    assert page.status_code == 403 and "sent to someone else" in page.text
    assert requests(web.db()) == []


def test_a_confirm_link_naming_another_person_is_not_valid(web: Web) -> None:
    path = pending_request_link(web.db(), web.settings, RAJ, ["RXB"])
    token = path.rsplit("/", 1)[1]
    forged = path.replace(token, token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB"))

    assert web.client.get(forged).status_code == 400


def test_an_expired_confirm_link_is_refused(web: Web) -> None:
    path = pending_request_link(web.db(), web.settings, RAJ, ["RXB"])
    page = web.client.get(path)
    session = web.db()
    session.execute(update(PendingAction).values(expires_at=utc_now() - timedelta(minutes=1)))
    session.commit()

    assert web.client.get(path).status_code == 410
    done = web.client.post(path, data={"csrf_token": csrf_of(page.text), "code": web.code(RAJ)})
    assert done.status_code == 410 and requests(web.db()) == []


def test_a_confirm_link_of_a_person_removed_meanwhile_is_refused(web: Web) -> None:
    path = pending_request_link(web.db(), web.settings, RAJ, ["RXB"])
    page = web.client.get(path)
    session = web.db()
    remove_user(session, email=RAJ, org_code=None, now=utc_now(), actor="test")
    session.commit()

    done = web.client.post(path, data={"csrf_token": csrf_of(page.text), "code": web.code(RAJ)})

    assert done.status_code == 403 and "removed" in done.text
    assert requests(web.db()) == []


def test_an_organisation_held_since_the_email_is_skipped_and_the_rest_asked_for(
    web: Web,
) -> None:
    # Raj asked for RXB and RXA; he answers for RXA already by the time he confirms.
    path = pending_request_link(web.db(), web.settings, RAJ, ["RXB", "RXA"], "cover")

    done = post_form(web.client, path, {"code": web.code(RAJ)})

    assert done.status_code == 200, done.text
    assert "already answers for RXA" in done.text
    [request] = requests(web.db())
    assert request.reason == "cover"


def test_the_new_request_page_searches_without_changing_anything(web: Web) -> None:
    path = new_request_link(web.db(), web.settings, RAJ)
    before = row_counts(web.engine)

    by_name = web.client.get(path, params={"q": "brook"})
    by_code = web.client.get(path, params={"q": "rxc"})
    web.client.head(path)

    assert by_name.status_code == 200
    assert "RXB" in by_name.text and "Brookfield Community NHS Trust" in by_name.text
    assert "Castleton" not in by_name.text
    assert 'value="RXC"' in by_code.text  # one match: chosen for them
    assert row_counts(web.engine) == before


def test_a_request_from_the_new_request_page_is_committed_once(web: Web) -> None:
    path = new_request_link(web.db(), web.settings, RAJ)
    page = web.client.get(path)

    unknown = post_form(web.client, path, {"org": "ZZZ", "code": web.code(RAJ)})
    assert unknown.status_code == 400 and "ZZZ is not an organisation we know" in unknown.text
    held = post_form(web.client, path, {"org": "rxa"})
    assert held.status_code == 400 and "already answers for RXA" in held.text
    assert requests(web.db()) == []

    done = post_form(web.client, path, {"org": "rxb", "reason": "We run their network"})

    assert done.status_code == 200, done.text
    [request] = requests(web.db())
    assert (request.via, request.reason) == ("web", "We run their network")
    [event] = audit_of(web.db(), "access.requested")
    assert event.actor == f"user:{user_id(web.db(), RAJ)}"
    assert "already used" in web.client.get(path).text.lower()
    again = web.client.post(
        path, data={"csrf_token": csrf_of(page.text), "org": "RXC", "code": web.code(RAJ)}
    )
    assert again.status_code == 409 and len(requests(web.db())) == 1
