"""Administrators reviewing who can answer for their organisation: every
period (MAILFLOW_ACCESS_REVIEW_DAYS) each administrator is asked "still
right?" once a round, by `mailflow scheduler --once --at TIME` or the
worker's pass; "all still right" and per-person removal are committed on
/people/review/TOKEN with the second factor."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from mailflow.access import people_review
from mailflow.access.people_review import EPOCH, round_of
from mailflow.core import links
from mailflow.core.models import AccessReview, AuditEvent, Membership, Organisation, Role, User
from mailflow.core.runtime import utc_now
from tests.support.cli import mailflow_with
from tests.support.mail import parsed
from tests.support.pages import Web, post_form, row_counts, user_id
from tests.support.people_admin import ANN, admin_fixture, emails, reply_key_of, text_of
from tests.support.people_review import REVIEW, make_due, run_pass, the_review
from tests.support.seed import NOW, seed_crowd

admin_web = admin_fixture()
RAJ = "raj@riverside.example"


def _at(when: datetime) -> str:
    return when.astimezone(UTC).isoformat()


def _scheduler(web: Web, when: datetime) -> str:
    """What the pass did about reviews (the seed's alert is chased, and
    digested for the seed's auditor, too)."""
    result = mailflow_with(web.settings, "scheduler", "--once", "--at", _at(when))
    assert result.exit_code == 0, result.output
    others = ("chasing:", "digests:")
    lines = [line for line in result.stdout.splitlines(True) if not line.startswith(others)]
    return "".join(lines) or "nothing was due\n"


# ------------------------------------------------------------ sending rounds


def test_a_review_is_sent_once_a_round_after_the_first_period(admin_web: Web) -> None:
    web = admin_web
    # Ann became RXA's administrator at NOW; the period is 90 days.
    assert _scheduler(web, NOW + timedelta(days=89)) == "nothing was due\n"
    assert emails(web.db(), REVIEW) == []

    due = NOW + timedelta(days=90, hours=1)
    out = _scheduler(web, due)
    assert out.count("access review: ") == 1, out
    assert _scheduler(web, due) == "nothing was due\n"
    assert _scheduler(web, due + timedelta(minutes=5)) == "nothing was due\n"

    [review] = emails(web.db(), REVIEW)
    assert review.recipient == ANN
    text = text_of(review)
    assert parsed(review.raw)["Subject"] == "These people can answer for RXA: still right?"
    assert f"<{RAJ}>: responder" in text and f"<{ANN}>: administrator" in text
    assert reply_key_of(review).startswith("reply+")
    # Sent by us unasked: not marked as an answer to anything of theirs.
    headers = parsed(review.raw)
    assert headers["Auto-Submitted"] == "auto-generated" and headers["In-Reply-To"] is None
    links_in_it = the_review(web)
    assert set(links_in_it.remove) == {ANN, RAJ}

    # The rest of the round: nothing; the next round: one more.
    current = round_of(due, 90)
    next_round = datetime.combine(
        EPOCH + timedelta(days=(current + 1) * 90), datetime.min.time(), UTC
    ) + timedelta(hours=9)
    assert _scheduler(web, next_round - timedelta(days=1)) == "nothing was due\n"
    assert _scheduler(web, next_round).count("access review: ") == 1
    assert _scheduler(web, next_round) == "nothing was due\n"
    rounds = web.db().scalars(select(AccessReview.round).order_by(AccessReview.round)).all()
    assert rounds == [current, current + 1]
    assert len(emails(web.db(), REVIEW)) == 2


def test_only_active_administrators_of_open_organisations_are_asked(admin_web: Web) -> None:
    web = admin_web
    make_due(web)
    session = web.db()
    # Raj is made an administrator of RXA too; Bea administers RXB, now closed.
    session.execute(
        update(Membership)
        .where(
            Membership.user_id.in_(
                [user_id(session, RAJ), user_id(session, "bea@brookfield.example")]
            )
        )
        .values(role=Role.ADMINISTRATOR)
    )
    session.execute(
        update(Organisation).where(Organisation.code == "RXB").values(closed_on=utc_now().date())
    )
    session.commit()
    assert len(run_pass(web)) == 2
    assert sorted(e.recipient for e in emails(web.db(), REVIEW)) == [ANN, RAJ]


def test_two_passes_at_once_send_each_review_once(
    admin_web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    web = admin_web
    make_due(web)
    # Both passes find Ann due before either writes: they race to send.
    both_found = threading.Barrier(2, timeout=10)
    found = people_review.due_reviews

    def due_then_wait(*args: object, **kwargs: object) -> list[people_review.Due]:
        result = found(*args, **kwargs)  # type: ignore[arg-type]
        both_found.wait()
        return result

    monkeypatch.setattr(people_review, "due_reviews", due_then_wait)
    done: list[list[str]] = []
    threads = [threading.Thread(target=lambda: done.append(run_pass(web))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(len(lines) for lines in done) == [0, 1]
    assert len(emails(web.db(), REVIEW)) == 1
    assert len(web.db().scalars(select(AccessReview)).all()) == 1


def test_a_pass_sends_at_most_a_batch_and_the_next_takes_the_rest(
    admin_web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    web = admin_web
    session = web.db()
    crowd = seed_crowd(session, organisations=12, per_organisation=1)
    session.execute(update(Membership).values(role=Role.ADMINISTRATOR))
    session.commit()
    make_due(web)
    monkeypatch.setattr(people_review, "BATCH", 5)
    # 12 crowd administrators, Ann and Raj (now administrator of RXA), and the
    # other seeded people made administrators too.
    total = len(web.db().scalars(select(Membership)).all())
    sent = [len(run_pass(web)) for _ in range(5)]
    assert sent[:2] == [5, 5] and sum(sent) == total and sent[-1] == 0
    assert len(emails(web.db(), REVIEW)) == total >= len(crowd.emails)


# ------------------------------------------------------------- the page


def test_all_still_right_is_recorded_and_audited(admin_web: Web) -> None:
    web = admin_web
    make_due(web)
    run_pass(web)
    path = the_review(web).all_right
    before = row_counts(web.engine)
    page = web.client.get(path)
    assert page.status_code == 200 and "all still right" in page.text
    assert RAJ in page.text
    assert row_counts(web.engine) == before  # GET changes nothing
    assert web.client.head(path).status_code in (200, 405)
    assert row_counts(web.engine) == before

    done = post_form(web.client, path, {"code": web.code(ANN)})

    assert done.status_code == 200, done.text
    session = web.db()
    review = session.scalars(select(AccessReview)).one()
    assert review.reviewed_at is not None
    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "access.reviewed")).one()
    assert event.actor == f"user:{user_id(session, ANN)}"
    assert event.subject == f"access_review:{review.id}"
    # Single use: the link says so and records nothing more.
    assert "already" in web.client.get(path).text
    again = web.client.post(path, data={"csrf_token": "x", "code": web.code(ANN)})
    assert again.status_code in (403, 409)
    assert (
        len(
            web.db().scalars(select(AuditEvent).where(AuditEvent.action == "access.reviewed")).all()
        )
        == 1
    )


def test_a_person_is_removed_from_the_review(admin_web: Web) -> None:
    web = admin_web
    make_due(web)
    run_pass(web)
    links_in_it = the_review(web)
    path = links_in_it.remove[RAJ]
    before = row_counts(web.engine)
    page = web.client.get(path)
    assert page.status_code == 200 and "Remove Raj Patel from RXA" in page.text
    assert row_counts(web.engine) == before

    done = post_form(web.client, path, {"code": web.code(ANN)})

    assert done.status_code == 200, done.text
    session = web.db()
    raj = session.scalars(select(User).where(User.email == RAJ)).one()
    assert raj.active is False and raj.memberships == []
    actors = session.scalars(
        select(AuditEvent.actor).where(AuditEvent.subject == f"user:{raj.id}")
    ).all()
    assert f"user:{user_id(session, ANN)}" in actors
    # Removing is not recording the review: "all still right" still works.
    assert session.scalars(select(AccessReview.reviewed_at)).one() is None
    assert post_form(web.client, links_in_it.all_right, {"code": web.code(ANN)}).status_code == 200
    # The remove link is spent, and would find no one to remove anyway.
    assert web.client.get(path).status_code in (200, 409, 410)
    assert "Remove Raj" not in web.client.get(path).text


def test_the_last_administrator_cannot_remove_themselves(admin_web: Web) -> None:
    web = admin_web
    make_due(web)
    run_pass(web)
    refused = post_form(web.client, the_review(web).remove[ANN], {"code": web.code(ANN)})
    assert refused.status_code == 403
    assert "no active administrator" in refused.text
    session = web.db()
    role = session.scalar(
        select(Membership.role).where(Membership.user_id == user_id(session, ANN))
    )
    assert role == Role.ADMINISTRATOR


def test_a_foreign_or_forged_review_link_is_refused(admin_web: Web) -> None:
    web = admin_web
    make_due(web)
    run_pass(web)
    session = web.db()
    review = session.scalars(select(AccessReview)).one()
    settings, now = web.settings, utc_now()
    raj = user_id(session, RAJ)
    # Ann's review, in a link naming Raj: not valid.
    as_raj = links.make(
        settings,
        links.REVIEW_LINK,
        {"u": raj, "o": review.organisation_id, "r": review.id, "do": "ok"},
        now,
    )
    # A people-page link (another purpose) brought to the review page.
    other_purpose = links.make(
        settings,
        links.PEOPLE_LINK,
        {"u": review.administrator_id, "o": review.organisation_id, "r": review.id, "do": "ok"},
        now,
    ).replace("/people/", "/people/review/")
    # A link with no action.
    no_action = links.make(
        settings,
        links.REVIEW_LINK,
        {"u": review.administrator_id, "o": review.organisation_id, "r": review.id},
        now,
    )
    before = row_counts(web.engine)
    for url in (as_raj, other_purpose, no_action):
        path = url.removeprefix(settings.base_url)
        assert web.client.get(path).status_code in (400, 403), path
        refused = web.client.post(path, data={"csrf_token": "x", "code": web.code(ANN)})
        assert refused.status_code in (400, 403)
    assert row_counts(web.engine) == before
    assert web.db().scalars(select(AccessReview.reviewed_at)).one() is None
