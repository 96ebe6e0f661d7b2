"""`mailflow access request|list`: the service desk opens a request for
someone (as if they had confirmed it; audited as the operator), and lists
requests and what became of them."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime

import click
from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from mailflow.access.asking import ask_for_access
from mailflow.access.request_lines import MAX_REASON_CHARS
from mailflow.cli.context import Context, actor_name, fail, pass_context, reported_errors
from mailflow.core.errors import InvalidInput, NotAllowed
from mailflow.core.models import AccessRequest, AccessState, Organisation, User
from mailflow.people.organisations import find_organisation
from mailflow.people.users import get_user


@click.command("request")
@click.argument("email")
@click.argument("org_code", metavar="ORG")
@click.option("--reason", default="", help="Why they need to answer for it.")
@pass_context
def access_request(ctx: Context, email: str, org_code: str, reason: str) -> None:
    """Open a request for EMAIL to answer for ORG, and send it to ORG's
    administrators (or the service desk)."""
    if len(reason) > MAX_REASON_CHARS:
        fail(f"reason: keep it under {MAX_REASON_CHARS} characters (nothing was written)")
    with reported_errors(), ctx.transaction() as session:
        person = get_user(session, email)
        org = find_organisation(session, org_code)
        if org is None:
            raise InvalidInput("org", f"{org_code.strip().upper()!r} is not a known organisation")
        try:
            request = ask_for_access(
                session,
                ctx.settings,
                requester=person,
                organisation=org,
                reason=reason,
                via="cli",
                now=ctx.runtime.clock(),
                actor=actor_name(),
            )
        except NotAllowed as exc:
            fail(f"{exc} (nothing was written)")
        line = f"request {request.id} opened: {person.email} for {org.code}"
        expires = request.expires_at
    click.echo(f"{line}, open until {expires:%Y-%m-%d %H:%M}")


@dataclass(frozen=True)
class RequestRow:
    id: int
    requester: str
    organisation: str
    state: str
    via: str
    created: str
    expires: str
    decided_by: str | None
    decided_at: str | None


def _when(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def request_rows(session: Session, *, org_code: str | None, only_open: bool) -> list[RequestRow]:
    requester, decider = aliased(User), aliased(User)
    query = (
        select(AccessRequest, requester.email, Organisation.code, decider.email)
        .join(requester, requester.id == AccessRequest.requester_id)
        .join(Organisation, Organisation.id == AccessRequest.organisation_id)
        .outerjoin(decider, decider.id == AccessRequest.decided_by_id)
        .order_by(AccessRequest.id)
    )
    if only_open:
        query = query.where(AccessRequest.state == AccessState.OPEN)
    if org_code is not None:
        org = find_organisation(session, org_code)
        if org is None:
            raise InvalidInput("org", f"{org_code.strip().upper()!r} is not a known organisation")
        query = query.where(AccessRequest.organisation_id == org.id)
    return [
        RequestRow(
            id=r.id,
            requester=email,
            organisation=code,
            state=r.state.value,
            via=r.via,
            created=_when(r.created_at) or "",
            expires=_when(r.expires_at) or "",
            decided_by=decided_by or r.decided_by_operator,
            decided_at=_when(r.decided_at),
        )
        for r, email, code, decided_by in session.execute(query)
    ]


@click.command("list")
@click.option("--pending", "only_open", is_flag=True, help="Only requests not yet decided.")
@click.option("--org", "org_code", help="Only requests for this organisation.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
@pass_context
def access_list(ctx: Context, only_open: bool, org_code: str | None, as_json: bool) -> None:
    """List access requests: who asked for which organisation, and what
    became of it."""
    with reported_errors(), ctx.transaction() as session:
        rows = request_rows(session, org_code=org_code, only_open=only_open)
    if as_json:
        click.echo(json.dumps([asdict(r) for r in rows], indent=2))
        return
    if not rows:
        click.echo("no requests")
        return
    for r in rows:
        decided = f"  decided by {r.decided_by} at {r.decided_at}" if r.decided_at else ""
        click.echo(
            f"{r.id}  {r.requester}  {r.organisation}  {r.state}  created {r.created}"
            f"  expires {r.expires}{decided}"
        )
